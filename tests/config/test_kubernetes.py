"""The Dockerfile and the StatefulSet agree with the command line they run."""

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from journey.cli import _parser
from journey.environment import pod_cluster, variables
from journey.runner import STOP_DELIVERY_S, RunOptions, metrics_port_of
from tests.broker_fixtures import ROOT

MANIFEST = ROOT / "config" / "kubernetes" / "journey.yaml"


def manifests() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def run_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _parser({})._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def test_the_statefulset_runs_the_cli_as_its_flags_and_volumes_say(tmp_path: Path) -> None:
    docs = manifests()
    sts, service, hosts = docs["StatefulSet"], docs["Service"], docs["ConfigMap"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    journey_vars = {k for k in env if k.startswith("JOURNEY_")}
    assert journey_vars <= set(variables(run_parser())), journey_vars - set(variables(run_parser()))

    plain = {k: v for k, v in env.items() if v is not None}
    args = _parser(plain).parse_args(container["args"])  # the command the pod runs, as the CLI reads it
    assert args.command == "run" and args.brokers == plain["JOURNEY_BROKERS"]
    assert args.metrics_port == 9464 and args.metrics_addr == "0.0.0.0"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert ports["metrics"] == args.metrics_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["recovery"]
    assert args.recovery_dir.is_relative_to(mounts["recovery"])
    assert args.config.parent == Path(mounts["map"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hosts"]["configMap"]["name"] == hosts["metadata"]["name"]
    assert Path(env["KAFKA_PASSWORD_FILE"]).parent == Path(mounts["kafka"])

    # process id from the pod's ordinal, addresses from the hostfile: one per replica, each pod's own
    assert env["BYTEWAX_STATEFULSET_NAME"] == sts["metadata"]["name"]
    hostfile_path = Path(env["BYTEWAX_HOSTFILE_PATH"])
    assert hostfile_path.parent == Path(mounts["hosts"])
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(hosts["data"][hostfile_path.name])
    replicas = sts["spec"]["replicas"]
    name, svc = sts["metadata"]["name"], service["metadata"]["name"]
    want = ";".join(f"{name}-{i}.{svc}:{ports['cluster']}" for i in range(replicas))
    for i in range(replicas):
        pod_env = {"BYTEWAX_POD_NAME": f"{name}-{i}", "BYTEWAX_STATEFULSET_NAME": name,
                   "BYTEWAX_HOSTFILE_PATH": str(hostfile)}
        process_id, addresses = pod_cluster(None, None, pod_env)
        assert (process_id, addresses) == (i, want)
        options = RunOptions(process_id=process_id, addresses=want.split(";"), metrics_port=args.metrics_port)
        assert metrics_port_of(options) == ports["metrics"]  # every pod on the port its probe asks

    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= STOP_DELIVERY_S + float(env["JOURNEY_SNAPSHOT_INTERVAL"])  # a stop delivers in time
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}  # no rolling update of one pod


def test_the_image_holds_the_packages_compiles_at_build_and_runs_as_the_pod_expects() -> None:
    text = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = re.findall(r"^COPY (\S+) \1$", text, re.M)
    assert sorted(copied) == sorted(packages)
    assert re.search(r"&& journey compile", text)
    env_names = set(re.findall(r"\b(JOURNEY_[A-Z_]+)=", text))
    assert env_names and env_names <= set(variables(run_parser()))
    pod = manifests()["StatefulSet"]["spec"]["template"]["spec"]
    assert f"USER {pod['securityContext']['runAsUser']}" in text
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}  # type: ignore[union-attr]
    assert exposed == {p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert 'ENTRYPOINT ["tini", "--", "journey"]' in text  # PID 1 passes SIGTERM on

"""``journey backtest`` against the reference: the same map finds no difference, a lowered threshold
moves exactly the customers the reference moves, and nothing is written to any topic."""

import itertools
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from config.model import BEFORE_ENTRY, DORMANT, OTHER_CHANNEL, Settings, load_settings
from journey.kafka_io import cluster_metadata
from journey.report_html import render
from journey.simulate import SimOptions, messages, produce
from tests.broker_fixtures import journey_cli, write_config
from tests.flows.test_end_to_end import reference_from
from tests.reference import stage_of

pytestmark = pytest.mark.slow


def reference_stages(settings: Settings, produced: list) -> dict[str, str]:
    ref = reference_from(settings, produced)
    return {cid: stage_of(settings.journey, c) for cid, c in ref.customers.items()}


def reference_conversion(settings: Settings, produced: list) -> dict[str, float | None]:
    """Transitions from each stage to the next over arrivals into it, from the reference's transitions."""
    moves = Counter((t.from_stage or BEFORE_ENTRY, t.to_stage)
                    for t in reference_from(settings, produced).transitions)
    arrivals: Counter[str] = Counter()
    for (_f, to), n in moves.items():
        arrivals[to] += n
    names = settings.journey.stage_names
    return {f"{a}>{b}": moves[a, b] / arrivals[a] if arrivals[a] else None
            for a, b in itertools.pairwise(names)}


def test_a_candidate_map_moves_the_customers_the_reference_moves(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    produced = messages(settings, SimOptions(customers=1_500, events=20_000, seed=31, duplicates=0.02,
                                             out_of_order=0.02, malformed=0.01))
    produce(settings, produced, progress=None)
    baseline = write_config(settings, tmp_path / "baseline.toml")
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(baseline.read_text().replace("[stages.consideration]\nthreshold = 3.0",
                                                      "[stages.consideration]\nthreshold = 2.0"))
    assert candidate.read_text() != baseline.read_text()
    report_file = tmp_path / "report.json"

    same = journey_cli("backtest", "--baseline", str(baseline), "--candidate", str(baseline),
                       "--json", str(report_file))
    assert same.returncode == 0, same.stderr[-3000:]
    report = orjson.loads(report_file.read_bytes())
    assert report["differing_customers"] == 0 and report["differences"] == []
    assert report["baseline"] == report["candidate"]  # one read, the same batches: every figure
    assert "differing customers: 0" in same.stdout

    done = journey_cli("backtest", "--baseline", str(baseline), "--candidate", str(candidate),
                       "--json", str(report_file))
    assert done.returncode == 0, done.stderr[-3000:]
    report = orjson.loads(report_file.read_bytes())
    want_base = reference_stages(settings, produced)
    want_cand = reference_stages(load_settings(candidate), produced)
    stages = [*settings.journey.stage_names, DORMANT]
    for name, want, config in (("baseline", want_base, baseline), ("candidate", want_cand, candidate)):
        counts = Counter(want.values())
        assert report[name]["populations"] == {s: counts.get(s, 0) for s in stages}, name
        assert report[name]["customers"] == len(want)
        # transitions follow the order a customer's events on several partitions are read in,
        # which batches decide: conversion is as the reference's within a few percent (README)
        want_conversion = reference_conversion(load_settings(config), produced)
        assert report[name]["conversion"] == pytest.approx(want_conversion, rel=0.05), name
    moved = Counter((want_base[c], want_cand[c]) for c in want_base if want_base[c] != want_cand[c])
    assert moved and report["differing_customers"] == sum(moved.values())
    assert {(d["baseline"], d["candidate"]): d["customers"] for d in report["differences"]} == dict(moved)
    for d in report["differences"]:
        assert d["examples"] and all(want_base[c] == d["baseline"] and want_cand[c] == d["candidate"]
                                     for c in d["examples"])
    assert f"differing customers: {sum(moved.values()):,}" in done.stdout
    movers = {c for c in want_base if want_base[c] != want_cand[c]}
    assert report["attribution"] and all(a["share"] > a["share_all"] and a["lift"] > 1
                                         for a in report["attribution"])
    lift = {a["name"]: a["lift"] for a in report["attribution"]}
    events = [orjson.loads(m.value) for m in produced if m.kind != "malformed"]  # recount the top one
    top = report["attribution"][0]["name"]

    def named(e: dict) -> set[str]:
        return {f"touchpoint {e['type']}", f"channel {e.get('channel') or OTHER_CHANNEL}"}

    mine = [e for e in events if e["customer_id"] in movers]
    share = sum(top in named(e) for e in mine) / (2 * len(mine))
    share_all = sum(top in named(e) for e in events) / (2 * len(events))
    assert lift[top] == pytest.approx(share / share_all, rel=0.05)
    assert done.stderr.count(f"read: {len(produced):,} messages in") == 1  # one read for both maps

    # a map that parses otherwise (one more channel) replays on its own: the same figures
    other = tmp_path / "other.toml"
    other.write_text(baseline.read_text().replace("[channels]\n", "[channels]\nkiosk = 2.0\n"))
    assert load_settings(other).journey.reading != settings.journey.reading
    apart = journey_cli("backtest", "--baseline", str(baseline), "--candidate", str(other),
                        "--json", str(report_file))
    assert apart.returncode == 0, apart.stderr[-3000:]
    assert "parse events differently (channels)" in apart.stderr
    assert apart.stderr.count(f"read: {len(produced):,} messages in") == 2
    report = orjson.loads(report_file.read_bytes())
    assert report["differing_customers"] == 0
    assert report["candidate"]["populations"] == report["baseline"]["populations"]

    # nothing written: no output topic made, no offsets in the production consumer group
    assert not set(settings.topics.outputs) & set(cluster_metadata(settings.kafka).topics)
    group = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": "journey-stream"})
    committed = group.committed([TopicPartition(t, p) for t in settings.topics.inputs for p in range(4)],
                                timeout=10)
    group.close()
    assert all(tp.offset < 0 for tp in committed)


def chromium(page: Path, out: Path, size: str = "1100,1800") -> tuple[bytes, list[str], list[str]]:
    """Render ``page`` in headless Chromium: the screenshot, the page's console lines, its requests.

    Chromium's own background requests (updates, accounts) carry no page origin; those
    the page makes do.
    """
    shot, netlog = out / f"{page.stem}.png", out / f"{page.stem}.netlog.json"
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
                           f"--window-size={size}", f"--screenshot={shot}", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    log = orjson.loads(netlog.read_bytes())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    requests = [e["params"]["url"] for e in log["events"] if names.get(e["type"]) == "URL_REQUEST_START_JOB"
                and e.get("params", {}).get("initiator") not in (None, "not an origin")]
    return shot.read_bytes(), console, requests


def distinct_pixels(png: bytes) -> int:
    """How many different byte values the image's pixel rows hold (1 or 2 for a blank page)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, at = b"", 8
    while at < len(png):
        length = int.from_bytes(png[at:at + 4], "big")
        kind = png[at + 4:at + 8]
        if kind == b"IDAT":
            data += png[at + 8:at + 8 + length]
        at += 12 + length
    return len(set(zlib.decompress(data)))


def test_the_html_report_renders_offline_in_a_real_browser(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    produce(settings, messages(settings, SimOptions(customers=500, events=6_000, seed=32)), progress=None)
    baseline = write_config(settings, tmp_path / "baseline.toml")
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(baseline.read_text().replace("[stages.consideration]\nthreshold = 3.0",
                                                      "[stages.consideration]\nthreshold = 2.0"))
    page = tmp_path / "report.html"
    done = journey_cli("backtest", "--baseline", str(baseline), "--candidate", str(candidate),
                       "--html", str(page))
    assert done.returncode == 0, done.stderr[-3000:]
    html = page.read_text()
    assert "<svg" in html and "Customers by final stage" in html and "<script" not in html

    shot, console, requests = chromium(page, tmp_path)
    assert distinct_pixels(shot) > 20  # charts and text, not a blank page
    assert console == [] and requests == []

    control = tmp_path / "control.html"  # the checks see what a page that breaks the rules does
    control.write_text('<!doctype html><img src="http://127.0.0.1:9/x.png">'
                       '<script>console.error("control")</script>')
    _, console, requests = chromium(control, tmp_path, "400,300")
    assert any('"control"' in line for line in console) and requests == ["http://127.0.0.1:9/x.png"]


def test_a_time_range_takes_only_the_messages_appended_in_it(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    before = messages(settings, SimOptions(customers=200, events=2_000, seed=33))
    after = messages(settings, SimOptions(customers=300, events=3_000, seed=34))
    produce(settings, before, progress=None)
    time.sleep(1.5)
    boundary = datetime.now(UTC)
    time.sleep(1.5)
    produce(settings, after, progress=None)
    config = write_config(settings, tmp_path / "map.toml")
    report_file = tmp_path / "report.json"
    at = boundary.isoformat()
    ranges = ((["--from", at], after), (["--to", at], before), (["--since", "1h"], before + after))
    for flags, produced in ranges:
        done = journey_cli("backtest", "--candidate", str(config), "--baseline", str(config), *flags,
                           "--json", str(report_file))
        assert done.returncode == 0, done.stderr[-3000:]
        report = orjson.loads(report_file.read_bytes())
        want = reference_stages(settings, produced)
        counts = Counter(want.values())
        assert report["baseline"]["customers"] == len(want), flags
        assert report["baseline"]["populations"] == {s: counts.get(s, 0) for s in
                                                     [*settings.journey.stage_names, DORMANT]}, flags
    bad = journey_cli("backtest", "--candidate", str(config), "--from", "2026-11-01T00:00:00")
    assert bad.returncode == 2 and "with its offset" in bad.stderr


def test_the_page_escapes_what_it_shows_and_draws_negative_and_missing_values() -> None:
    side = {"customers": 1, "populations": {"a": 1, "b": 0, DORMANT: 0}, "conversion": {"a>b": None},
            "transitions": {"none>a": 1}, "sessions": 0, "converted_sessions": 0,
            "sentiment_by_stage": {"a": -0.5, "b": None, DORMANT: None}, "dead_letters": 0}
    report = {"customers": 1, "baseline": side, "candidate": side, "differing_customers": 1,
              "differences": [{"baseline": "a", "candidate": "b", "customers": 1, "examples": ["<b>x</b>"]}],
              "attribution": [{"name": "channel <i>", "share": 0.5, "share_all": 0.25, "lift": 2.0}]}
    html = render(report, "base<&>.toml", "cand.toml")
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "channel &lt;i&gt;" in html
    assert "base&lt;&amp;&gt;.toml" in html
    # populations: 3 stages x 2 maps (a zero is a bar of no height); sentiment: only a's, x 2
    # (-0.5, below the zero line); conversion: none, undefined on both sides
    assert html.count("<rect") == 8
    assert html.count('fill="#444">') == 8 and ">-0.500</text>" in html  # each bar's value shown

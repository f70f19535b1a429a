"""The one validated settings model: parsed once, frozen, shared by ``run`` and ``check-config``."""

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from config.arrays import ROLE_BITS, ROLE_CONVERSION, JourneyArrays
from config.durations import format_duration_ms
from config.errors import ConfigError
from config.tables import Table

DORMANT = "dormant"
BEFORE_ENTRY = "none"
"""Where a customer is before their first event, as funnel records and metric labels name it."""
OTHER_CHANNEL = "other"
DEFAULT_PATH = Path(__file__).with_name("journey.toml")
DEFAULT_INPUTS = ("clickstream", "touchpoints")
BROKER_DEFAULT_REPLICATION = -1
"""The replication factor that asks the broker for its ``default.replication.factor``."""
TIMINGS = ("half_life", "dedup_window", "dormant_after", "allowed_lateness", "idle_timeout", "session_gap",
            "metrics_window", "max_future")
"""The durations of ``[journey]`` (``JourneyMap`` holds each as ``<key>_ms``)."""
# Property names whose literal values would be secrets: these must come from the environment.
_SECRET_MARKERS = ("password", "secret", "oauthbearer.config", "sasl.jaas")


@dataclass(frozen=True)
class Touchpoint:
    """One touchpoint type of the catalogue."""

    name: str
    weight: float
    stages: Mapping[str, float]
    roles: frozenset[str]
    conversion: bool


@dataclass(frozen=True)
class Stage:
    """One journey stage and the rule that admits a customer to it."""

    name: str
    threshold: float | None
    requires: Mapping[str, int]
    min_sentiment: float | None


@dataclass(frozen=True)
class JourneyMap:
    """Stages, catalogue, channels and timings, in milliseconds where they are durations."""

    stages: tuple[Stage, ...]
    touchpoints: Mapping[str, Touchpoint]
    channels: Mapping[str, float]
    half_life_ms: int
    saturation: float
    dedup_window_ms: int
    dedup_slots: int
    dormant_after_ms: int
    allowed_lateness_ms: int
    idle_timeout_ms: int
    session_gap_ms: int
    metrics_window_ms: int
    max_event_bytes: int
    max_future_ms: int

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Stage names in journey order."""
        return tuple(s.name for s in self.stages)

    @cached_property
    def type_index(self) -> dict[str, int]:
        """Touchpoint type -> row of the type arrays."""
        return {name: i for i, name in enumerate(self.touchpoints)}

    @cached_property
    def channel_index(self) -> dict[str, int]:
        """Channel -> index of the multiplier array; unlisted channels are 0 (``other``)."""
        return {name: i + 1 for i, name in enumerate(self.channels)}

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Channel names by index, ``other`` first."""
        return (OTHER_CHANNEL, *self.channels)

    @cached_property
    def required_types(self) -> tuple[str, ...]:
        """The touchpoint types some stage ``requires`` (their lifetime counts are state), sorted."""
        return tuple(sorted({t for s in self.stages for t in s.requires}))

    @cached_property
    def arrays(self) -> JourneyArrays:
        """The map turned once into the arrays the kernels use."""
        names = self.stage_names
        stage_pos = {name: k for k, name in enumerate(names)}
        req_types = self.required_types
        req_slot = {t: i for i, t in enumerate(req_types)}
        n_types, n_stages = len(self.touchpoints), len(names)
        factor = np.zeros((n_types, n_stages), dtype=np.float64)
        roles = np.zeros(n_types, dtype=np.int32)
        for i, tp in enumerate(self.touchpoints.values()):
            for stage, f in tp.stages.items():
                factor[i, stage_pos[stage]] = f
            roles[i] = sum(ROLE_BITS[r] for r in tp.roles) | (ROLE_CONVERSION if tp.conversion else 0)
        requires = np.zeros((n_stages, len(req_types)), dtype=np.int64)
        for k, rule in enumerate(self.stages):
            for t, n in rule.requires.items():
                requires[k, req_slot[t]] = n
        return JourneyArrays(
            type_weight=np.array([t.weight for t in self.touchpoints.values()], dtype=np.float64),
            type_factor=factor,
            type_req_slot=np.array([req_slot.get(t, -1) for t in self.touchpoints], dtype=np.int32),
            type_roles=roles,
            channel_mult=np.array([1.0, *self.channels.values()], dtype=np.float64),
            stage_threshold=np.array(
                [-np.inf if s.threshold is None else s.threshold for s in self.stages]),
            stage_min_sentiment=np.array(
                [np.nan if s.min_sentiment is None else s.min_sentiment for s in self.stages]),
            stage_requires=requires,
            half_life_ms=float(self.half_life_ms),
            saturation=self.saturation,
            dedup_window_ms=self.dedup_window_ms,
            dedup_slots=self.dedup_slots,
        )

    @cached_property
    def layout(self) -> dict[str, object]:
        """What gives the state a run keeps its shape: saved state resumes only under the same.

        Stages, the touchpoint types some stage ``requires`` (counted per customer),
        channels (windows count per channel), the metrics window (open windows are keyed
        by it) and the de-duplication memory. Weights, factors, thresholds, multipliers,
        saturation and the other timings are not part of it: they apply from the next
        event on.
        """
        return {
            "stages": list(self.stage_names),
            "requires": list(self.required_types),
            "channels": list(self.channels),
            "metrics_window_ms": self.metrics_window_ms,
            "dedup_slots": self.dedup_slots,
        }

    @cached_property
    def reading(self) -> dict[str, object]:
        """What the parse and the source's alignment take from the map: maps alike here read alike.

        Touchpoint types and channels in order (events are parsed to their indices), the
        limits on an event, and the timings that decide lateness and alignment.
        """
        return {
            "touchpoints": list(self.touchpoints),
            "channels": list(self.channels),
            "max_event_bytes": self.max_event_bytes,
            "max_future_ms": self.max_future_ms,
            "allowed_lateness_ms": self.allowed_lateness_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "dedup_window_ms": self.dedup_window_ms,
        }

    @cached_property
    def frame(self) -> dict[str, object]:
        """What a running flow cannot change (``live_changes``), by the place in the file that sets it.

        Everything but what applies per event or per evaluation: touchpoint weights and
        stage factors, channel multipliers, stage thresholds, ``requires`` counts,
        ``min_sentiment`` and saturation.
        """
        return {
            "[journey].stages": list(self.stage_names),
            "the touchpoint types of [touchpoints]": list(self.touchpoints),
            "the channels of [channels]": list(self.channels),
            "the touchpoint types [stages.*].requires names": list(self.required_types),
            "[touchpoints.*].roles and .conversion": {
                t.name: [*sorted(t.roles), *(["conversion"] if t.conversion else [])]
                for t in self.touchpoints.values()},
            **{f"[journey].{key}": format_duration_ms(getattr(self, f"{key}_ms")) for key in TIMINGS},
            "[journey].dedup_slots": self.dedup_slots,
            "[journey].max_event_bytes": self.max_event_bytes,
        }

    @cached_property
    def version(self) -> str:
        """A short hash of the whole map (every rule, weight and timing): which map a run applies."""
        def plain(value: object) -> object:
            if isinstance(value, Mapping):
                return sorted((str(k), plain(v)) for k, v in value.items())
            if isinstance(value, frozenset | set):
                return sorted(map(str, value))
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            if hasattr(value, "__dataclass_fields__"):
                return plain({f: getattr(value, f) for f in value.__dataclass_fields__})
            return value
        return hashlib.sha256(repr(plain(self)).encode()).hexdigest()[:12]

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of ``layout``, for summaries."""
        return hashlib.sha256(repr(sorted(self.layout.items())).encode()).hexdigest()[:16]


def live_changes(running: JourneyMap, new: JourneyMap) -> list[str]:
    """What ``new`` changes that a running flow cannot take (``JourneyMap.frame``), in the file's terms."""
    was, now = running.frame, new.frame
    return [f"{key}: {was[key]} -> {now[key]}" for key in was if was[key] != now[key]]


MAP_SECTIONS = ("journey", "stages", "channels", "touchpoints")
"""The tables of a settings file that make the journey map (the rest say where it runs)."""


def map_document(journey: JourneyMap) -> dict[str, Any]:
    """The map as the tables of a settings file (``MAP_SECTIONS``): ``parse_map`` reads it back equal.

    Durations in whole milliseconds; what the file left to defaults is spelt out.
    """
    stages: dict[str, Any] = {}
    for stage in journey.stages[1:]:
        rule: dict[str, Any] = {"threshold": stage.threshold, "requires": dict(stage.requires)}
        if stage.min_sentiment is not None:
            rule["min_sentiment"] = stage.min_sentiment
        stages[stage.name] = rule
    return {
        "journey": {"stages": list(journey.stage_names), "saturation": journey.saturation,
                    "dedup_slots": journey.dedup_slots, "max_event_bytes": journey.max_event_bytes,
                    **{key: f"{getattr(journey, key + '_ms')}ms" for key in TIMINGS}},
        "stages": stages,
        "channels": dict(journey.channels),
        "touchpoints": {t.name: {"weight": t.weight, "stages": dict(t.stages), "roles": sorted(t.roles),
                                 "conversion": t.conversion} for t in journey.touchpoints.values()},
    }


def parse_map(where: str, document: object) -> JourneyMap:
    """Validate a journey map given as its tables (``map_document``); errors name ``where``."""
    top = Table(where, "", document)
    journey = _journey(top)
    top.done(f"known sections: {', '.join(MAP_SECTIONS)}")
    return journey


_LAYOUT_KEYS = {
    "schema": "the state's schema version (the store was written by another version of journey-stream)",
    "shards": "the number of shards",
    "stages": "[journey].stages",
    "requires": "the touchpoint types that [stages.*].requires names",
    "channels": "[channels]",
    "metrics_window_ms": "[journey].metrics_window",
    "dedup_slots": "[journey].dedup_slots",
}


def layout_changes(saved: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """What differs between a saved state layout and the current one, in the file's terms.

    State of another schema is another format altogether: that is all there is to say.
    """
    if saved.get("schema") != current.get("schema"):
        return [f"{_LAYOUT_KEYS['schema']}: {saved.get('schema')} -> {current.get('schema')}"]
    changes = []
    for key, label in _LAYOUT_KEYS.items():
        was, now = saved.get(key), current.get(key)
        if was == now:
            continue
        if isinstance(was, list) and isinstance(now, list):
            added = [x for x in now if x not in was]
            removed = [x for x in was if x not in now]
            parts = [f"added {', '.join(map(repr, added))}"] if added else []
            parts += [f"removed {', '.join(map(repr, removed))}"] if removed else []
            changes.append(f"{label}: {'; '.join(parts) or 'order changed'}")
        elif key == "metrics_window_ms" and isinstance(was, int) and isinstance(now, int):
            changes.append(f"{label}: {format_duration_ms(was)} -> {format_duration_ms(now)}")
        else:
            changes.append(f"{label}: {was} -> {now}")
    return changes


@dataclass(frozen=True)
class KafkaSettings:
    """Brokers and librdkafka properties; secret values never appear in ``repr``."""

    brokers: str = "127.0.0.1:9092"
    properties: Mapping[str, str] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka config dict: brokers, the file's properties, then ``extra``."""
        return {"bootstrap.servers": self.brokers, **self.properties, **extra}

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self.secret_keys else v) for k, v in self.properties.items()}
        return f"KafkaSettings(brokers={self.brokers!r}, properties={shown!r})"


OUTPUT_ROLES = ("scores", "transitions", "sessions", "metrics", "late", "dlq")
"""The output topics by the ``[topics]`` key that names each (PRODUCT §6)."""
TOPIC_DEFAULTS: Mapping[str, Mapping[str, str]] = {"scores": {"cleanup.policy": "compact"}}
"""Settings an output topic is created with unless ``[topics.config]`` says otherwise: the
scores topic keeps the latest state of every customer (it is keyed by customer id)."""
CONTROL_CONFIG: Mapping[str, str] = {"cleanup.policy": "compact"}
"""The control topic's settings: compacted, so that no retention ever deletes the maps' history."""


@dataclass(frozen=True)
class Topics:
    """Input and output topic names, and how missing output topics are created."""

    inputs: tuple[str, ...] = DEFAULT_INPUTS
    scores: str = "journey.scores"
    transitions: str = "journey.transitions"
    sessions: str = "journey.sessions"
    metrics: str = "journey.metrics"
    late: str = "journey.late"
    dlq: str = "journey.dlq"
    control: str = "journey.control"
    """Where ``journey apply-map`` publishes maps for running flows to switch to (``journey.control``)."""
    replication_factor: int = BROKER_DEFAULT_REPLICATION
    config: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: TOPIC_DEFAULTS)
    """Topic settings by output role; the values of ``TOPIC_DEFAULTS`` merged with the file's."""

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output topic, for creating them at start."""
        return tuple(getattr(self, role) for role in OUTPUT_ROLES)

    def creation(self) -> dict[str, dict[str, str]]:
        """Output topic name -> the settings it is created with."""
        return {getattr(self, role): dict(self.config.get(role, {})) for role in OUTPUT_ROLES}


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, from one file."""

    path: str
    journey: JourneyMap
    kafka: KafkaSettings
    topics: Topics

    def with_brokers(self, brokers: str | None) -> "Settings":
        """The same settings with ``--brokers`` applied (None keeps the file's)."""
        if not brokers:
            return self
        kafka = KafkaSettings(brokers, self.kafka.properties, self.kafka.secret_keys)
        return Settings(self.path, self.journey, kafka, self.topics)


def load_settings(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a settings file; every problem raises ConfigError naming file and key."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as err:
        msg = f"{name}: no such file (pass --config with the path of a journey map)"
        raise ConfigError(msg) from err
    except OSError as err:
        msg = f"{name}: cannot read: {err.strerror}"
        raise ConfigError(msg) from err
    except tomllib.TOMLDecodeError as err:
        msg = f"{name}: not valid TOML: {err}"
        raise ConfigError(msg) from err
    return parse_settings(name, data, os.environ if environ is None else environ)


def parse_settings(path: str, data: dict[str, object], environ: Mapping[str, str]) -> Settings:
    """Validate an already-parsed TOML document (the single code path behind every command)."""
    top = Table(path, "", data)
    journey = _journey(top)
    kafka = _kafka(top.sub("kafka"), environ)
    topics = _topics(top.sub("topics"))
    top.done("known sections: journey, stages, channels, touchpoints, kafka, topics")
    return Settings(path, journey, kafka, topics)


def _journey(top: Table) -> JourneyMap:
    j = top.sub("journey", required=True)
    names = j.raw("stages")
    if (not isinstance(names, list) or len(names) < 2
            or not all(isinstance(n, str) and n for n in names)):
        j.fail("stages", "an array of at least two stage names", names)
    if len(set(names)) != len(names):
        j.fail("stages", "stage names without repeats", names)
    if DORMANT in names:
        j.fail("stages", f"stage names other than {DORMANT!r} (reserved for inactive customers)",
               names)
    touchpoints = _touchpoints(top.sub("touchpoints", required=True), names)
    stages = _stages(top.sub("stages"), names, touchpoints)
    channels_table = top.sub("channels")
    channels: dict[str, float] = {}
    for ch in channels_table.names():
        if ch == OTHER_CHANNEL:
            channels_table.fail(ch, f"a channel name other than {OTHER_CHANNEL!r} (reserved)")
        channels[ch] = channels_table.number(ch, minimum=0.0)
    jmap = JourneyMap(
        stages=stages,
        touchpoints=touchpoints,
        channels=channels,
        half_life_ms=j.duration("half_life", "14d"),
        saturation=j.number("saturation", 25.0, minimum=1e-9),
        dedup_window_ms=j.duration("dedup_window", "24h", positive=False),
        dedup_slots=j.integer("dedup_slots", 32, minimum=1),
        dormant_after_ms=j.duration("dormant_after", "45d"),
        allowed_lateness_ms=j.duration("allowed_lateness", "5m", positive=False),
        idle_timeout_ms=j.duration("idle_timeout", "10s"),
        session_gap_ms=j.duration("session_gap", "30m"),
        metrics_window_ms=j.duration("metrics_window", "1m"),
        max_event_bytes=j.integer("max_event_bytes", 65_536, minimum=64),
        max_future_ms=j.duration("max_future", "5m", positive=False),
    )
    j.done()
    return jmap


def _touchpoints(table: Table, stage_names: list[str]) -> dict[str, Touchpoint]:
    result: dict[str, Touchpoint] = {}
    for name in table.names():
        t = table.sub(name)
        stages_raw = t.raw("stages", {})
        if isinstance(stages_raw, list):  # ["awareness"] means factor 1.0 each
            if not all(isinstance(s, str) for s in stages_raw):
                t.fail("stages", "a table of stage = factor or an array of stage names", stages_raw)
            stages_raw = dict.fromkeys(stages_raw, 1.0)
        st = Table(t.path, f"{t.where}.stages", stages_raw)
        stages: dict[str, float] = {}
        for stage in st.names():
            if stage not in stage_names:
                st.fail(stage, f"a stage of [journey].stages ({', '.join(stage_names)})", stage)
            stages[stage] = st.number(stage)  # may be negative: evidence against a stage
        roles = t.raw("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r in ROLE_BITS for r in roles):
            t.fail("roles", f"an array of roles from {', '.join(ROLE_BITS)}", roles)
        conversion = t.raw("conversion", False)
        if not isinstance(conversion, bool):
            t.fail("conversion", "true or false", conversion)
        result[name] = Touchpoint(name, t.number("weight"), stages, frozenset(roles), conversion)
        t.done()
    if not result:
        table.fail("", "at least one [touchpoints.<type>] table")
    return result


def _stages(table: Table, names: list[str], touchpoints: Mapping[str, Touchpoint]) -> tuple[Stage, ...]:
    for name in table.names():
        if name not in names:
            table.fail(name, f"a stage of [journey].stages ({', '.join(names)})", name)
    if names[0] in table.names():
        table.fail(names[0], "no entry rule for the first stage (every customer starts there)", {})
    stages = [Stage(names[0], None, {}, None)]
    for name in names[1:]:
        s = table.sub(name, required=True)
        req_table = s.sub("requires")
        requires: dict[str, int] = {}
        for tp in req_table.names():
            if tp not in touchpoints:
                req_table.fail(tp, "a touchpoint type of the [touchpoints] catalogue", tp)
            requires[tp] = req_table.integer(tp, minimum=1)
        stages.append(Stage(
            name,
            s.number("threshold"),
            requires,
            s.number("min_sentiment", None, minimum=-1.0, maximum=1.0),
        ))
        s.done()
    return tuple(stages)


def _kafka(table: Table, environ: Mapping[str, str]) -> KafkaSettings:
    brokers = table.string("brokers", KafkaSettings.brokers)
    props_table = table.sub("properties")
    properties: dict[str, str] = {}
    for key in props_table.names():
        if any(marker in key for marker in _SECRET_MARKERS):
            props_table.fail(key, "no secret in the file: name an environment variable in "
                                  f"[kafka.secrets] instead ('{key}' = 'ENV_VAR')")
        properties[key] = _setting(props_table, key)
    secrets_table = table.sub("secrets")
    secret_keys: set[str] = set()
    for key in secrets_table.names():
        properties[key] = _secret(secrets_table, key, environ)
        secret_keys.add(key)
    table.done()
    return KafkaSettings(brokers, properties, frozenset(secret_keys))


def _secret(table: Table, key: str, environ: Mapping[str, str]) -> str:
    """The value of the variable ``[kafka.secrets]`` names, or of the file ``<VARIABLE>_FILE`` names.

    A mounted file (a Kubernetes or Docker secret) is read whole, less one trailing
    newline. Neither the value nor the file's content is ever part of an error.
    """
    env_name = table.string(key)
    if env_name in environ:
        return _not_empty(table, key, env_name, environ[env_name])
    file_var = env_name + "_FILE"
    if file_var not in environ:
        table.fail(key, f"the environment variable {env_name} (or {file_var}, the path of a file "
                        "holding it) to be set")
    try:
        text = Path(environ[file_var]).read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        table.fail(key, f"{file_var}={environ[file_var]} to name a readable file ({reason})")
    return _not_empty(table, key, file_var, text.removesuffix("\n").removesuffix("\r"))


def _not_empty(table: Table, key: str, source: str, value: str) -> str:
    if not value:
        table.fail(key, f"a value in {source} (it is empty)")
    return value


def _topics(table: Table) -> Topics:
    defaults = Topics()
    inputs = table.raw("inputs", list(defaults.inputs))
    if (not isinstance(inputs, list) or not inputs
            or not all(isinstance(t, str) and t for t in inputs) or len(set(inputs)) != len(inputs)):
        table.fail("inputs", "a non-empty array of distinct topic names", inputs)
    outputs = {role: table.string(role, getattr(defaults, role)) for role in OUTPUT_ROLES}
    control = table.string("control", defaults.control)
    replication = table.integer("replication_factor", BROKER_DEFAULT_REPLICATION,
                                minimum=BROKER_DEFAULT_REPLICATION)
    if replication == 0:
        table.fail("replication_factor", f"{BROKER_DEFAULT_REPLICATION} (the broker's default) or a "
                                         "number of replicas >= 1", 0)
    config = _topic_config(table.sub("config"))
    table.done()
    topics = Topics(inputs=tuple(inputs), **outputs, control=control, replication_factor=replication,
                    config=config)
    named = [*topics.outputs, control]
    clash = set(topics.inputs) & set(named)
    if len(set(named)) != len(named) or clash:
        table.fail("", "distinct topic names for every input, output and the control topic",
                   sorted(clash) or {**outputs, "control": control})
    return topics


def _topic_config(table: Table) -> dict[str, dict[str, str]]:
    """``[topics.config]``: plain keys for every output topic, ``[topics.config.<role>]`` for one.

    Over ``TOPIC_DEFAULTS``; a role's own table wins over the keys for all.
    """
    every: dict[str, str] = {}
    own: dict[str, dict[str, str]] = {}
    for key in table.names():
        value = table.raw(key)
        if isinstance(value, dict):
            if key not in OUTPUT_ROLES:
                table.fail(key, "a topic setting, or a table for one output topic "
                                f"({', '.join(OUTPUT_ROLES)})")
            sub = table.sub(key)
            own[key] = {k: _setting(sub, k) for k in sub.names()}
        else:
            every[key] = _setting(table, key)
    return {role: {**TOPIC_DEFAULTS.get(role, {}), **every, **own.get(role, {})} for role in OUTPUT_ROLES}


def _setting(table: Table, key: str) -> str:
    """A Kafka topic or client setting as the string Kafka takes (booleans as true/false)."""
    value = table.raw(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        table.fail(key, "a string, number or boolean setting", value)
    return str(value)

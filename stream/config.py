"""Configuration: one frozen, typed settings object.

Defaults live in code; a TOML or YAML file goes over them; ``PLANTWATCH_*`` environment
variables go over that; command-line overrides go last. Nested keys use a double
underscore (``PLANTWATCH_METRICS__PORT=9200``). Kafka client properties (SASL, SSL, …)
pass through to librdkafka untouched: in the file under ``[kafka.properties]``, or as
``PLANTWATCH_KAFKA_PROP_SASL_MECHANISM=PLAIN`` (underscores become dots).

>>> env = {"PLANTWATCH_METRICS__PORT": "9200", "PLANTWATCH_METRICS__ENABLED": "false"}
>>> s = load_settings(env=env)
>>> (s.metrics.port, s.metrics.enabled, s.topics.alerts)
(9200, False, 'plantwatch.alerts')
>>> "hunter2" in repr(load_settings(env={"PLANTWATCH_KAFKA_PROP_SASL_PASSWORD": "hunter2"}))
False
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

ENV_PREFIX = "PLANTWATCH_"
PROP_PREFIX = "PLANTWATCH_KAFKA_PROP_"
_SECRET_WORDS = ("password", "secret", "token", "key", "credential", "jaas")


class ConfigError(ValueError):
    """A configuration a person must fix; the message says where and how."""


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith(
        ("location", ".endpoint.identification.algorithm")
    )


class KafkaSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "plantwatch"
    client_id: str = "plantwatch"
    #: librdkafka properties passed through untouched (security.protocol, sasl.*, ssl.*, …).
    properties: dict[str, str] = msgspec.field(default_factory=dict)

    def client_config(self) -> dict[str, str]:
        """The librdkafka dict for a producer or an admin client (no group id)."""
        conf = {"bootstrap.servers": self.bootstrap_servers, "client.id": self.client_id}
        conf.update(self.properties)
        return conf

    def consumer_config(self) -> dict[str, str]:
        conf = self.client_config()
        conf["group.id"] = self.group_id
        return conf

    def __repr__(self) -> str:
        # Never print a secret, even by accident in a log line or a traceback.
        shown = {k: ("***" if _is_secret(k) else v) for k, v in self.properties.items()}
        return (
            f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, "
            f"group_id={self.group_id!r}, client_id={self.client_id!r}, properties={shown!r})"
        )

    __str__ = __repr__


class TopicSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    sensors: str = "plantwatch.sensors"
    alerts: str = "plantwatch.alerts"
    dlq: str = "plantwatch.dlq"
    quality: str = "plantwatch.quality"
    lab: str = "plantwatch.lab"
    #: Compacted changelog of per-asset state (windows, thresholds, alert state).
    state: str = "plantwatch.state"
    labels: str = "plantwatch.labels"


class ConsumerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    batch_size: int = 2000
    batch_wait_ms: int = 200
    max_message_bytes: int = 64 * 1024
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"


class WindowSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-asset windowing; the window length itself comes from the model artifact."""

    stride: int = 1
    #: Readings a missing value may be carried forward before the window is not scored.
    stale_limit: int = 5
    #: Readings older than the newest one of their asset by at most this are re-ordered in;
    #: older still are dropped and counted as ``late``.
    reorder_tolerance_ms: int = 2_000
    #: A gap longer than this between readings of an asset restarts its window.
    max_gap_ms: int = 60_000
    #: Assets not heard from for this long are evicted from memory (state stays checkpointed).
    idle_evict_ms: int = 6 * 3_600_000


class ThresholdSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-asset thresholds (see ``models/thresholds.py``; defaults equal its ``ThresholdConfig``).

    ``q`` is the risk: the expected false-alarm rate per scored window.
    """

    kind: Literal["fixed", "quantile", "spot", "dspot"] = "spot"
    q: float = 1e-4
    level: float = 0.98
    depth: int = 200
    grace: int = 1000
    critical_q: float | None = None
    fixed_value: float | None = None
    quantile: float = 0.99
    margin: float = 1.5
    critical_ratio: float = 2.0
    max_peaks: int = 2_000
    refit_every_peaks: int = 128
    refit_growth: float = 0.1


class AlertSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The alert state machine (see ``alerts/policy.py``; defaults equal its ``AlertConfig``)."""

    k: int = 3
    n: int = 5
    m: int = 10
    cooldown_ms: int = 60_000
    update_every_ms: int = 30_000
    update_min_rise: float = 0.2
    critical_ratio: float = 2.0
    top_signals: int = 3


class DriftSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Page-Hinkley drift tests on each asset's scores and inputs (see ``models/drift.py``)."""

    delta: float = 0.5
    threshold: float = 50.0
    warmup: int = 500
    blocks: int = 10
    min_std: float = 1e-3
    recent: int = 200
    max_anomalous_fraction: float = 0.05


class OnlineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Guarded online learning (see ``models/online.py``); off by default."""

    enabled: bool = False
    min_interval_s: float = 3600.0
    min_windows: int = 2000
    buffer_windows: int = 20000
    holdout_fraction: float = 0.2
    epochs: int = 3
    lr_scale: float = 0.3
    #: 0.95, not the learner's 1.0: swap only on a real improvement, since every swap
    #: is followed by a rollback watch.
    max_score_ratio: float = 0.95
    rollback_windows: int = 2000
    rollback_anomaly_ratio: float = 3.0
    #: No window within this long after an anomalous window (or an open or cooling alert)
    #: of its asset is ever learned: a fault must not be taught as normal.
    guard_ms: int = 600_000


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    #: Loopback by default: exposing metrics beyond this host is a deliberate choice.
    host: str = "127.0.0.1"
    port: int = 9108
    max_asset_series: int = 50


class DeliverySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    mode: Literal["at_least_once", "exactly_once"] = "at_least_once"
    transactional_id: str | None = None
    flush_timeout_s: float = 30.0
    checkpoint_interval_s: float = 10.0


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str | None = None
    device: str | None = None
    torch_threads: int | None = None


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    topics: TopicSettings = msgspec.field(default_factory=TopicSettings)
    consumer: ConsumerSettings = msgspec.field(default_factory=ConsumerSettings)
    window: WindowSettings = msgspec.field(default_factory=WindowSettings)
    threshold: ThresholdSettings = msgspec.field(default_factory=ThresholdSettings)
    alert: AlertSettings = msgspec.field(default_factory=AlertSettings)
    drift: DriftSettings = msgspec.field(default_factory=DriftSettings)
    online: OnlineSettings = msgspec.field(default_factory=OnlineSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    model: ModelSettings = msgspec.field(default_factory=ModelSettings)


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of sections")
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith(PROP_PREFIX):
            prop = name[len(PROP_PREFIX) :].lower().replace("_", ".")
            tree.setdefault("kafka", {}).setdefault("properties", {})[prop] = value
        elif name.startswith(ENV_PREFIX) and "__" in name:
            parts = name[len(ENV_PREFIX) :].lower().split("__")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return tree


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the file, then ``PLANTWATCH_*`` variables, then ``overrides``."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _merge(data, _read_file(Path(path)))
    data = _merge(data, _from_env(os.environ if env is None else env))
    if overrides:
        data = _merge(data, overrides)
    # Property values reach librdkafka as strings, whatever type the file gave them.
    props = data.get("kafka", {}).get("properties")
    if isinstance(props, dict):
        data["kafka"]["properties"] = {
            str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in props.items()
        }
    try:
        # strict=False: environment values are text ("9200", "false") and must convert.
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc

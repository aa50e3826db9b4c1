"""Configuration: one frozen, typed settings object composed of each room's own config.

Each section is the config struct of the code that reads it (``threshold`` is
``models.thresholds.ThresholdConfig``, ``alert`` is ``alerts.policy.AlertConfig``, …), so
there is no mirror to keep in step and a key nobody reads cannot exist: unknown keys are
refused with their path.

Defaults live in code; a TOML or YAML file goes over them; ``PLANTWATCH_*`` environment
variables go over that; ``--set section.key=value`` and other flags go last. Nested keys
use a double underscore in the environment (``PLANTWATCH_METRICS__PORT=9200``). Kafka
client properties (SASL, SSL, …) pass through to librdkafka untouched: in the file under
``[kafka.properties]``, as ``PLANTWATCH_KAFKA_PROP_SASL_MECHANISM=PLAIN`` (underscores
become dots), or as ``--set kafka.properties.sasl.mechanism=PLAIN``.

>>> env = {"PLANTWATCH_METRICS__PORT": "9200", "PLANTWATCH_METRICS__ENABLED": "false"}
>>> s = load_settings(env=env, sets=["alert.k=2", "threshold.kind=dspot"])
>>> (s.metrics.port, s.metrics.enabled, s.alert.k, s.threshold.kind, s.topics.alerts)
(9200, False, 2, 'dspot', 'plantwatch.alerts')
>>> "hunter2" in repr(load_settings(env={"PLANTWATCH_KAFKA_PROP_SASL_PASSWORD": "hunter2"}))
False
>>> try:
...     load_settings(env={}, sets=["alert.kk=2"])
... except ConfigError as exc:
...     print(exc)
invalid configuration: Object contains unknown field `kk` - at `$.alert`
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from alerts.metrics import MetricsSettings
from alerts.policy import AlertConfig
from common.config import Config
from models.drift import DriftConfig
from models.health import SensorHealthConfig
from models.online import OnlineConfig
from models.quality.config import QualityConfig
from models.rebaseline import RebaselineConfig
from models.thresholds import ThresholdConfig
from plantwatch.lifecycle import MaintenanceConfig, OperatingModeConfig
from stream.config import (
    ConsumerSettings,
    DeliverySettings,
    KafkaSettings,
    TopicSettings,
    WindowSettings,
)

ENV_PREFIX = "PLANTWATCH_"
PROP_PREFIX = "PLANTWATCH_KAFKA_PROP_"


class ConfigError(ValueError):
    """A configuration a person must fix; the message says where and how."""


class ModelSettings(Config, frozen=True, kw_only=True):
    """Which model artifact ``plantwatch run`` serves, and where it runs."""

    path: str | None = None
    #: ``cpu``, ``cuda``, ``cuda:1``…; default: CUDA when available, else CPU.
    device: str | None = None
    torch_threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    #: Serve a model that can stream (the LSTM forecaster) one LSTM step per window from
    #: state carried per asset, instead of re-running every window (``ForecasterStream``);
    #: other models ignore it.
    stream: bool = True


class Settings(Config, frozen=True, kw_only=True):
    """Every setting of plantwatch; ``deploy/plantwatch.toml`` lists each with its default."""

    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    topics: TopicSettings = msgspec.field(default_factory=TopicSettings)
    consumer: ConsumerSettings = msgspec.field(default_factory=ConsumerSettings)
    window: WindowSettings = msgspec.field(default_factory=WindowSettings)
    threshold: ThresholdConfig = msgspec.field(default_factory=ThresholdConfig)
    alert: AlertConfig = msgspec.field(default_factory=AlertConfig)
    drift: DriftConfig = msgspec.field(default_factory=DriftConfig)
    online: OnlineConfig = msgspec.field(default_factory=OnlineConfig)
    rebaseline: RebaselineConfig = msgspec.field(default_factory=RebaselineConfig)
    sensor_health: SensorHealthConfig = msgspec.field(default_factory=SensorHealthConfig)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    model: ModelSettings = msgspec.field(default_factory=ModelSettings)
    quality: QualityConfig = msgspec.field(default_factory=QualityConfig)
    maintenance: MaintenanceConfig = msgspec.field(default_factory=MaintenanceConfig)
    operating_mode: OperatingModeConfig = msgspec.field(default_factory=OperatingModeConfig)


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
            out[key] = dict(value) if isinstance(value, Mapping) else value
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


def _literal(text: str) -> Any:
    """A ``--set`` value as TOML reads it (``3``, ``1e-4``, ``true``, ``"a"``), else text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_sets(sets: Iterable[str]) -> dict[str, Any]:
    """``["alert.k=2", "kafka.properties.sasl.mechanism=PLAIN"]`` as a nested tree.

    >>> parse_sets(["alert.k=2", "threshold.q=1e-5"])
    {'alert': {'k': 2}, 'threshold': {'q': 1e-05}}
    >>> parse_sets(["kafka.properties.sasl.mechanism=PLAIN"])
    {'kafka': {'properties': {'sasl.mechanism': 'PLAIN'}}}
    """
    tree: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or "." not in key:
            raise ConfigError(
                f"--set {item!r}: expected section.key=value, e.g. --set threshold.q=1e-5"
            )
        if key.startswith("kafka.properties."):
            # librdkafka property names contain dots themselves; their values stay text.
            prop = key[len("kafka.properties.") :]
            tree.setdefault("kafka", {}).setdefault("properties", {})[prop] = raw.strip()
            continue
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is set twice, as a value and a table")
            node = child
        node[leaf] = _literal(raw.strip())
    return tree


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: Iterable[str] = (),
) -> Settings:
    """Defaults, then the file, then ``PLANTWATCH_*`` variables, then ``sets``, then
    ``overrides`` (a nested mapping, as flags give it); all validated in one place."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _merge(data, _read_file(Path(path)))
    data = _merge(data, _from_env(os.environ if env is None else env))
    data = _merge(data, parse_sets(sets))
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


def with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` with some keys replaced, validated like a file (flags use this)."""
    try:
        data = _merge(msgspec.to_builtins(settings), overrides)
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc

"""Settings: defaults < file < PLANTWATCH_* < overrides; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import ConfigError, load_settings


def test_defaults_are_safe() -> None:
    s = load_settings(env={})
    assert s.metrics.host == "127.0.0.1"
    assert s.delivery.mode == "at_least_once"
    assert s.topics.sensors == "plantwatch.sensors"
    assert s.kafka.consumer_config()["group.id"] == "plantwatch"


def test_layers(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[kafka]\nbootstrap_servers = "file:9092"\n[kafka.properties]\n'
        '"security.protocol" = "SASL_SSL"\n"enable.ssl.certificate.verification" = true\n'
        "[metrics]\nport = 9000\n"
    )
    s = load_settings(
        cfg,
        env={"PLANTWATCH_METRICS__PORT": "9100", "PLANTWATCH_KAFKA_PROP_SASL_MECHANISM": "PLAIN"},
        overrides={"kafka": {"bootstrap_servers": "flag:9092"}},
    )
    assert s.kafka.bootstrap_servers == "flag:9092"
    assert s.metrics.port == 9100
    conf = s.kafka.client_config()
    # Passed through untouched, as strings librdkafka accepts.
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "PLAIN"
    assert conf["enable.ssl.certificate.verification"] == "true"


def test_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text("alert:\n  k: 2\n  n: 4\nthreshold:\n  kind: dspot\n  q: 0.001\n")
    s = load_settings(cfg, env={})
    assert (s.alert.k, s.alert.n, s.threshold.kind, s.threshold.q) == (2, 4, "dspot", 0.001)


@pytest.mark.parametrize(("text", "expected"), [("false", False), ("0", False), ("true", True)])
def test_booleans_parse_properly(text: str, expected: bool) -> None:
    assert load_settings(env={"PLANTWATCH_METRICS__ENABLED": text}).metrics.enabled is expected


@pytest.mark.parametrize(
    "env",
    [
        {"PLANTWATCH_METRICS__PORT": "abc"},
        {"PLANTWATCH_METRICS__ENABLED": "maybe"},
        {"PLANTWATCH_METRICS__PROT": "1"},  # a typo is an error, not silently ignored
        {"PLANTWATCH_THRESHOLD__KIND": "magic"},
    ],
)
def test_bad_values_are_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env=env)


def test_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[metrics\n")
    with pytest.raises(ConfigError, match="does not parse"):
        load_settings(bad, env={})


def test_secrets_never_in_repr() -> None:
    s = load_settings(
        env={
            "PLANTWATCH_KAFKA_PROP_SASL_PASSWORD": "hunter2",
            "PLANTWATCH_KAFKA_PROP_SSL_KEY_PASSWORD": "s3cret",
            "PLANTWATCH_KAFKA_PROP_SASL_USERNAME": "svc-plantwatch",
        }
    )
    text = repr(s) + str(s.kafka)
    assert "hunter2" not in text and "s3cret" not in text
    assert "svc-plantwatch" in text
    # ... while librdkafka still gets the real values.
    assert s.kafka.client_config()["sasl.password"] == "hunter2"


@pytest.mark.parametrize(
    ("section", "config_class"),
    [
        ("threshold", "models.thresholds:ThresholdConfig"),
        ("alert", "alerts.policy:AlertConfig"),
        ("drift", "models.drift:DriftConfig"),
        ("online", "models.online:OnlineConfig"),
    ],
)
def test_settings_sections_mirror_the_config_classes(section: str, config_class: str) -> None:
    """Every settings key reaches its config class, with the same default unless noted."""
    import dataclasses
    import importlib

    import msgspec

    module, name = config_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    values = msgspec.structs.asdict(getattr(load_settings(env={}), section))
    # Keys the monitor itself reads, not the config class.
    own = {"online": {"guard_ms"}}.get(section, set())
    assert set(values) - own <= set(defaults)
    # Deliberate differences, each with its reason in stream/config.py.
    differs = {("online", "max_score_ratio")}
    for key, value in values.items():
        if key in own or (section, key) in differs:
            continue
        assert value == defaults[key], f"{section}.{key}: settings {value} != {defaults[key]}"


def test_shipped_example_config_loads_and_states_every_default() -> None:
    import msgspec

    path = Path(__file__).resolve().parents[1] / "deploy" / "plantwatch.toml"
    assert load_settings(path, env={}) == load_settings(env={})
    text = path.read_text()
    for section, values in msgspec.structs.asdict(load_settings(env={})).items():
        assert f"[{section}]" in text
        for key in msgspec.structs.asdict(values) if not isinstance(values, dict) else values:
            assert key in text, f"{section}.{key} is not documented in deploy/plantwatch.toml"

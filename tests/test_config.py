"""Settings: defaults < file < PLANTWATCH_* < overrides; secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plantwatch.settings import ConfigError, load_settings


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
        ("metrics", "alerts.metrics:MetricsSettings"),
        ("window", "stream.config:WindowSettings"),
    ],
)
def test_settings_sections_are_the_config_classes_themselves(
    section: str, config_class: str
) -> None:
    """No mirror: the section a file sets is the struct the code reads."""
    import importlib

    module, name = config_class.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert type(getattr(load_settings(env={}), section)) is cls


def test_set_goes_over_the_environment_and_is_validated() -> None:
    s = load_settings(
        env={"PLANTWATCH_ALERT__K": "4"}, sets=["alert.k=2", "threshold.q=1e-5", "window.stride=3"]
    )
    assert (s.alert.k, s.threshold.q, s.window.stride) == (2, 1e-5, 3)
    with pytest.raises(ConfigError, match=r"\$\.alert"):
        load_settings(env={}, sets=["alert.k=0"])
    with pytest.raises(ConfigError, match="unknown field `nope`"):
        load_settings(env={}, sets=["window.nope=1"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_settings(env={}, sets=["k=2"])


def test_set_passes_kafka_properties_through_as_text() -> None:
    s = load_settings(env={}, sets=["kafka.properties.sasl.mechanism=SCRAM-SHA-512"])
    assert s.kafka.client_config()["sasl.mechanism"] == "SCRAM-SHA-512"


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("enable.auto.commit", "true"),
        ("enable.auto.offset.store", "true"),
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("group.protocol", "consumer"),
        ("transactional.id", "mine"),
        ("isolation.level", "read_uncommitted"),
    ],
)
def test_properties_that_would_break_delivery_are_refused_by_name(prop: str, value: str) -> None:
    # These used to override what the consumer and publisher set for themselves: auto-commit
    # passes undelivered alerts, read_uncommitted restores state of aborted transactions.
    secret = "hunter2-do-not-print"
    env = {
        f"PLANTWATCH_KAFKA_PROP_{prop.upper().replace('.', '_')}": value,
        "PLANTWATCH_KAFKA_PROP_SASL_PASSWORD": secret,
    }
    with pytest.raises(ConfigError, match=re.escape(f"kafka.properties.{prop}")) as exc:
        load_settings(env=env)
    assert secret not in str(exc.value)


def test_security_properties_pass_through_and_the_safe_value_is_accepted() -> None:
    props = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "plantwatch",
        "sasl.password": "hunter2",
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "ssl.key.password": "s3cret",
        "isolation.level": "read_committed",  # the value plantwatch needs is no override
    }
    s = load_settings(env={}, overrides={"kafka": {"properties": props}})
    consumer = s.kafka.consumer_config()
    assert {k: consumer[k] for k in props} == props
    assert "hunter2" not in repr(s) and "s3cret" not in str(s.kafka)

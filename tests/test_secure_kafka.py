"""Secured listeners: the monitor through SASL/PLAIN, TLS and SASL over TLS, and no password
in anything it prints, exports or writes, with librdkafka's debug logging on.

A local broker of this module's own (the session's broker has PLAINTEXT only) opens three
client listeners beside PLAINTEXT: ``SASL_PLAINTEXT`` (PLAIN), ``SSL`` (a throwaway CA from
``stream.broker.tls``, the client checking the certificate and the host name) and
``SASL_SSL``. Topics are created, readings produced and results read through the listener
under test; ``plantwatch run`` is the real command in a subprocess, configured by a TOML
file's ``[kafka.properties]`` with ``debug = "security,broker,protocol,msg"`` (``"all"``
for SASL_SSL, whose configuration dump must show ``sasl.password`` redacted) and
``--log-level DEBUG``. The password is then looked for (as text, hex, spaced hex as in a
hex dump, and base64) in the monitor's stdout and stderr, its /metrics exposition, every
record on its output topics (the state changelog included), every file under the test's
folder but the config file, the broker's state file and logs. A wrong password must stop
the monitor at once, with a line that says what to check and neither password nor the
client configuration; so must its traceback in-process.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from alerts.metrics import Metrics
from models.artifact import TrainedModel
from plantwatch.runloop import RunLoop
from stream.broker import BrokerError, LocalBroker, free_port, render_server_properties
from stream.broker.listeners import SecureListeners
from stream.broker.tls import BrokerKeystore
from stream.connect import KafkaConnectError, check_connection
from stream.simulator import produce
from tests.kafka_helpers import (
    alert_events,
    faulty_plant,
    read_topic,
    settings_for,
    trained_model,
    unalerted_faults,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
USER = "plantwatch"
PASSWORD = "pw-Sx9-unguessable"
WRONG = "wrong-Qz7-password"
DEBUG = "security,broker,protocol,msg"
N_ASSETS, DURATION_S = 3, 1200
OUTPUTS = ("alerts", "dlq", "notices", "state")


# -- the broker's files, no broker needed -------------------------------------------------


def test_secured_listeners_render_beside_plaintext_and_hide_the_passwords() -> None:
    security = SecureListeners(
        sasl_plain_port=9094, sasl_users={USER: PASSWORD}, ssl_port=9095, sasl_ssl_port=9096
    )
    keystore = BrokerKeystore(Path("/k/broker.p12"), Path("/k/ca.pem"), password="ks-secret")
    text = render_server_properties(
        port=9092,
        controller_port=9093,
        log_dir=Path("/d"),
        security=security,
        keystore=keystore,
    )
    props = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094,"
        "SSL://127.0.0.1:9095,SASL_SSL://127.0.0.1:9096"
    )
    assert props["advertised.listeners"].startswith("PLAINTEXT://127.0.0.1:9092,SASL_")
    assert "CONTROLLER" not in props["advertised.listeners"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"].endswith(
        ",SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL"
    )
    for name in ("sasl_plaintext", "sasl_ssl"):
        assert props[f"listener.name.{name}.plain.sasl.jaas.config"] == (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{PASSWORD}";'
        )
    for name in ("ssl", "sasl_ssl"):
        assert props[f"listener.name.{name}.ssl.keystore.password"] == "ks-secret"
    assert PASSWORD not in repr(security) and "ks-secret" not in repr(keystore)
    with pytest.raises(BrokerError, match="port of its own"):
        render_server_properties(
            port=9094,
            controller_port=9093,
            log_dir=Path("/d"),
            security=security,
            keystore=keystore,
        )
    with pytest.raises(BrokerError, match="keystore"):
        render_server_properties(
            port=9092,
            controller_port=9093,
            log_dir=Path("/d"),
            security=SecureListeners(ssl_port=1),
        )
    with pytest.raises(BrokerError) as bad:
        SecureListeners(sasl_plain_port=9094, sasl_users={USER: 'pw"Sx9'})
    assert "Sx9" not in str(bad.value)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_broker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalBroker]:
    # Depends on the session broker so the jars are cached (and PLANTWATCH_SKIP_KAFKA
    # skips these tests with the others).
    security = SecureListeners(
        sasl_plain_port=free_port(),
        sasl_users={USER: PASSWORD},
        ssl_port=free_port(),
        sasl_ssl_port=free_port(),
    )
    broker = LocalBroker(
        port=free_port(),
        controller_port=free_port(),
        data_dir=tmp_path_factory.mktemp("secure-kafka"),
        security=security,
    )
    broker.start(wait_s=180.0)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedModel, Path]:
    trained = trained_model(N_ASSETS, hours=4.0)
    return trained, trained.save(tmp_path_factory.mktemp("secure-model") / "pca")


# -- helpers --------------------------------------------------------------------------------


def _client(broker: LocalBroker, protocol: str, password: str = PASSWORD) -> dict[str, str]:
    if protocol.startswith("SASL"):
        return broker.client_config(protocol, USER, password)
    return broker.client_config(protocol)


def _forms(secret: str) -> dict[str, bytes]:
    """The ways a secret could be printed: as is, hex, a hex dump's spaced hex, base64."""
    raw = secret.encode()
    return {
        "text": raw,
        "hex": raw.hex().encode(),
        "spaced hex": raw.hex(" ").encode(),
        "base64": base64.b64encode(raw).rstrip(b"="),
    }


def _leaks(secrets: Mapping[str, str], places: Mapping[str, bytes]) -> list[str]:
    return [
        f"{name} as {form} in {where}"
        for name, secret in secrets.items()
        for form, needle in _forms(secret).items()
        for where, hay in places.items()
        if needle.lower() in hay.lower()
    ]


def _create_topics(client: Mapping[str, str], names: list[str]) -> None:
    """Created through the secured listener; every partition's leader awaited."""
    admin = AdminClient(dict(client))
    for future in admin.create_topics([NewTopic(n, num_partitions=3) for n in names]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    for name in names:
        while True:
            meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and meta.partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leader for every partition")
            time.sleep(0.1)


def _write_config(path: Path, client: Mapping[str, str], group: str, debug: str = DEBUG) -> Path:
    """A settings file as an operator writes one: secured properties, librdkafka debug on."""
    props = {k: v for k, v in client.items() if k != "bootstrap.servers"}
    props["debug"] = debug
    lines = [
        "[kafka]",
        f'bootstrap_servers = "{client["bootstrap.servers"]}"',
        f'group_id = "{group}"',
        "[kafka.properties]",
        *(f'"{k}" = "{v}"' for k, v in props.items()),
    ]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def _command(config: Path, model_dir: Path, topics: Mapping[str, str], port: int) -> list[str]:
    cmd = [sys.executable, "-m", "plantwatch.cli", "--log-level", "DEBUG", "run"]
    cmd += ["--config", str(config), "--model", str(model_dir), "--metrics-port", str(port)]
    for name, topic in topics.items():
        cmd += ["--set", f'topics.{name}="{topic}"']
    return cmd


def _env() -> dict[str, str]:
    # The worktree's plantwatch, whatever is installed.
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


def _processed(text: str | None) -> float:
    if text is None:
        return 0.0
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "plantwatch_messages_total"
    )


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"plantwatch run ignored SIGINT: {_tail(log)}") from None
    assert code == 0, f"plantwatch run exited {code}: {_tail(log)}"


def _tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if not line.startswith("%7|"))[-3000:]


def _files(folder: Path, skip: set[Path]) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p not in skip
    }


def _broker_files(broker: LocalBroker) -> dict[str, bytes]:
    """What the broker's data directory shows to others: its state file and its logs."""
    logs = broker.data_dir / "logs"
    found = {str(p): p.read_bytes() for p in logs.iterdir() if p.is_file()}
    state = broker.data_dir / "broker.json"
    if state.is_file():
        found[str(state)] = state.read_bytes()
    return found


# -- the monitor through each listener ------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "debug"),
    [("SASL_PLAINTEXT", DEBUG), ("SSL", DEBUG), ("SASL_SSL", "all")],
)
def test_the_monitor_alerts_through_a_secured_listener_and_no_password_shows(
    secure_broker: LocalBroker,
    model: tuple[TrainedModel, Path],
    tmp_path: Path,
    protocol: str,
    debug: str,
) -> None:
    trained, model_dir = model
    client = _client(secure_broker, protocol)
    tag = f"{protocol.lower()}-{uuid.uuid4().hex[:8]}"
    topics = {p: f"{tag}.{p}" for p in ("sensors", *OUTPUTS, "commands")}
    _create_topics(client, list(topics.values()))
    sim = faulty_plant(N_ASSETS, DURATION_S)
    sent = produce(sim, client, topics["sensors"], pace=False).readings
    assert sent == N_ASSETS * DURATION_S

    work = tmp_path / "work"
    work.mkdir()
    config = _write_config(tmp_path / "plantwatch.toml", client, f"secure-{tag}", debug)
    port = free_port()
    log = tmp_path / "monitor.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _command(config, model_dir, topics, port),
            cwd=work,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        metrics: str | None = None
        deadline = time.monotonic() + 180
        while _processed(metrics) < sent:
            assert proc.poll() is None, f"plantwatch run exited {proc.returncode}: {_tail(log)}"
            assert time.monotonic() < deadline, f"readings not all processed: {_tail(log)}"
            time.sleep(0.5)
            metrics = _scrape(port)
        processed_s = time.monotonic() - started
    finally:
        _stop(proc, log)
    assert metrics is not None

    events = alert_events(client["bootstrap.servers"], topics["alerts"], config=client)
    assert unalerted_faults(sim, events, 120_000) == [], events
    assert not [e for e in events if e.asset == sim.assets[-1]], "alert on the control asset"
    assert all(e.model.version == trained.version for e in events)
    records = read_topic(
        client["bootstrap.servers"], [topics[p] for p in OUTPUTS], config=client, timeout_s=30
    )
    assert any(m.topic() == topics["state"] for m in records), "no state checkpointed"

    output = log.read_bytes()
    debug_lines = [line for line in output.splitlines() if line.startswith(b"%7|")]
    # librdkafka's debug logging really was on, for the security layer too.
    assert len(debug_lines) > 100, _tail(log)
    if protocol.startswith("SASL"):
        assert b"SASL" in b"\n".join(debug_lines), "no SASL debug lines"
    if protocol.endswith("SSL"):
        assert b"SSL" in b"\n".join(debug_lines), "no TLS debug lines"
    if debug == "all":
        # librdkafka's dump of the client configuration: there, and redacted.
        assert b"sasl.password = [redacted]" in output

    places = {
        "the monitor's stdout and stderr": output,
        "/metrics": metrics.encode(),
        **{
            f"record {m.topic()}[{m.partition()}]@{m.offset()}": (m.key() or b"")
            + (m.value() or b"")
            + b"".join(v or b"" for _, v in m.headers() or [])
            for m in records
        },
        **_files(tmp_path, skip={config}),
        **_broker_files(secure_broker),
    }
    keystore_password = (secure_broker.data_dir / "tls" / "keystore.pass").read_text().strip()
    secrets = {"the SASL password": PASSWORD, "the keystore password": keystore_password}
    assert _leaks(secrets, places) == []
    if protocol.startswith("SASL"):
        # The search finds the password where it is: in the settings file the test wrote.
        assert _leaks(secrets, {"config": config.read_bytes()}) != []
    assert oct((secure_broker.data_dir / "server.properties").stat().st_mode & 0o777) == "0o600"
    print(
        f"{protocol}: {sent} readings processed {processed_s:.1f} s after start, "
        f"{len(events)} alert events, {len(debug_lines)} librdkafka debug lines, "
        f"{len(records)} output records, {len(places)} places searched, no secret in any"
    )


# -- a wrong password -----------------------------------------------------------------------


def test_a_wrong_password_stops_the_monitor_at_once_saying_what_to_check(
    secure_broker: LocalBroker, model: tuple[TrainedModel, Path], tmp_path: Path
) -> None:
    _, model_dir = model
    client = _client(secure_broker, "SASL_PLAINTEXT", WRONG)
    config = _write_config(tmp_path / "plantwatch.toml", client, "secure-wrong")
    started = time.monotonic()
    done = subprocess.run(
        _command(config, model_dir, {"sensors": "secure-wrong.sensors"}, free_port()),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        timeout=180,
        check=False,
    )
    elapsed_s = time.monotonic() - started
    output = done.stdout + done.stderr
    ours = [line for line in done.stderr.decode().splitlines() if line.startswith("plantwatch:")]
    assert done.returncode == 1, output.decode(errors="replace")[-3000:]
    assert len(ours) == 1, ours
    line = ours[0]
    # What happened and what to check; the refusal path, not a timeout.
    assert "cannot connect to Kafka at " + client["bootstrap.servers"] in line
    assert "Invalid username or password" in line and "_AUTHENTICATION" in line
    assert f"sasl.username={USER}" in line and "sasl.password" in line
    assert " within " not in line
    assert b"Traceback" not in output
    # No raw client configuration, in any of its usual spellings.
    for spelling in (b"'sasl.password'", b'"sasl.password"', b"sasl.password=", b"sasl.password:"):
        assert spelling not in output, spelling
    assert _leaks({"the wrong password": WRONG, "the password": PASSWORD}, {"output": output}) == []
    print(f"wrong password: exit 1 after {elapsed_s:.1f} s (process start included): {line}")


def test_the_traceback_of_a_refused_connection_names_no_secret(
    secure_broker: LocalBroker,
    model: tuple[TrainedModel, Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    trained, _ = model
    wrong = {**_client(secure_broker, "SASL_PLAINTEXT", WRONG), "debug": DEBUG}
    kafka: dict[str, Any] = {
        "bootstrap_servers": wrong["bootstrap.servers"],
        "group_id": "secure-traceback",
        "properties": {k: v for k, v in wrong.items() if k != "bootstrap.servers"},
    }
    settings = settings_for(wrong["bootstrap.servers"], {"sensors": "secure-tb"}, kafka=kafka)
    with pytest.raises(KafkaConnectError) as refused:
        RunLoop(settings, trained, Metrics.create()).run()
    text = "".join(traceback.format_exception(refused.value)) + repr(settings)
    assert "Invalid username or password" in text

    # A broker certificate nobody trusts: the TLS handshake is named, and the setting.
    # (The broker's own certificate as the CA: a file that loads, a chain that does not verify.)
    untrusted = _client(secure_broker, "SSL")
    untrusted["ssl.ca.location"] = str(secure_broker.ca_file.with_name("broker.crt"))
    with pytest.raises(KafkaConnectError, match=r"\(_SSL\).*ssl\.ca\.location") as tls:
        check_connection(untrusted, timeout_s=30)
    text += "".join(traceback.format_exception(tls.value))

    captured = capfd.readouterr()
    places = {"tracebacks": text.encode(), "librdkafka's stderr": captured.err.encode()}
    places["stdout"] = captured.out.encode()
    assert _leaks({"the wrong password": WRONG, "the password": PASSWORD}, places) == []

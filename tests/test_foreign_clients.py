"""Clients we did not write, at both ends of the monitor, on the real broker.

Kafka's own Java console producer (``kafka-tools`` from Maven Central, cached beside the
broker's jars) writes the simulated plant, two faults and two malformed lines included, to
the sensor topic; the monitor runs in exactly-once mode (each batch one transaction); then
Kafka's Java console consumer with ``isolation.level=read_committed`` and Debian's ``kcat``
(librdkafka 2.0, a C client of another version than ours) read ``plantwatch.alerts``. Every
record parses as the documented ``plantwatch.alert/v1`` (``alerts.events``) and carries every
field DESIGN's example shows; each client sees each record once, and all three (ours too)
see the same records. The same holds for ``plantwatch.quality``: a soft sensor served beside
the anomaly model predicts one of the pump's signals from the others, and each client reads
every prediction once, as the documented ``plantwatch.quality/v1``
(``alerts.predictions``). ``kcat`` also reads the dead letters with their reason headers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alerts.events import SCHEMA, decode_event
from alerts.metrics import Metrics
from alerts.predictions import PREDICTION_SCHEMA, decode_prediction
from common.reasons import Reason
from models.quality.artifact import QualityModel
from models.quality.training import fit_quality
from stream.broker import (
    CONSOLE_CONSUMER,
    CONSOLE_PRODUCER,
    BrokerError,
    ensure_console_tools,
    find_java,
)
from stream.schema import encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig
from stream.source import DLQ_REASON
from tests.kafka_helpers import (
    LIVE_START_MS,
    PLANT_SEED,
    read_topic,
    running_monitor,
    settings_for,
    trained_model,
    wait_for,
)
from tests.prometheus_api import TOOLS_DIR
from tests.test_alert_events import DESIGN_FIELDS

pytestmark = pytest.mark.integration

N_ASSETS = 3
DURATION_S = 1200
MALFORMED = ['{"asset": "pump-01", "ts"', "not json at all"]
#: The soft sensor predicts this signal from the other four, a prediction a minute.
QUALITY_TARGET = SIGNALS[0]
QUALITY_EVERY_MS = 60_000
#: DESIGN's QualityPrediction fields.
QUALITY_FIELDS = ("asset", "ts", "target", "predicted", "lower", "upper", "lsl", "usl", "in_spec")


#: As Kafka's config/tools-log4j2.yaml: warnings and errors to stderr, so stdout is records.
TOOLS_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders><Console name="stderr" target="SYSTEM_ERR">
    <PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
"""


def _console_client(tmp_path: Path) -> list[str]:
    """``java ... -cp CLASSPATH``: Kafka's console clients follow (main class, options)."""
    try:
        java = find_java()
        classpath = ensure_console_tools()
    except BrokerError as exc:
        pytest.fail(f"Kafka's console clients cannot run: {exc}", pytrace=False)
    log4j2 = tmp_path / "tools-log4j2.xml"
    log4j2.write_text(TOOLS_LOG4J2, encoding="utf-8")
    return [str(java.path), f"-Dlog4j2.configurationFile={log4j2}", "-cp", classpath]


def _kcat() -> tuple[str, dict[str, str]]:
    """kcat, with ``LD_LIBRARY_PATH`` at the libraries ``make tools`` extracted beside it."""
    found = shutil.which("kcat") or (
        str(TOOLS_DIR / "kcat") if (TOOLS_DIR / "kcat").is_file() else None
    )
    if found is None:
        pytest.fail(
            "kcat is neither on PATH nor in .venv/tools; `make tools` extracts it from "
            "Debian's kcat package (apt-get download kcat librdkafka1 libyajl2 && dpkg-deb -x)",
            pytrace=False,
        )
    env = dict(os.environ)
    usr = Path(found).resolve().parent.parent
    libs = [str(p) for p in usr.glob("lib/*-linux-gnu") if (p / "librdkafka.so.1").exists()]
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")])
    return found, env


def _simulator() -> PlantSimulator:
    sim = PlantSimulator(
        SimConfig(
            n_assets=N_ASSETS,
            period_ms=1000,
            start_ms=LIVE_START_MS,
            duration_s=DURATION_S,
            seed=1,
            plant_seed=PLANT_SEED,
            faults=2,
            control_assets=1,
            fault_kinds=("level_shift", "bearing_wear"),
            fault_duration_s=(90.0, 180.0),
            warmup_s=300.0,
        )
    )
    # Room after every fault for its alert to resolve within the run.
    assert all(f.end_ms < LIVE_START_MS + (DURATION_S - 300) * 1000 for f in sim.faults)
    return sim


def _soft_sensor() -> QualityModel:
    """A ridge soft sensor of ``QUALITY_TARGET`` from the other signals, on an hour of the
    same plant's normal history."""
    sim = PlantSimulator(
        SimConfig(
            n_assets=N_ASSETS,
            period_ms=1000,
            start_ms=LIVE_START_MS - 3_600_000,
            duration_s=3600,
            seed=3,
            plant_seed=PLANT_SEED,
        )
    )
    values, segments = sim.generate().by_asset()
    col = SIGNALS.index(QUALITY_TARGET)
    inputs = [s for s in SIGNALS if s != QUALITY_TARGET]
    cadence = {"cadence": {"interval_ms": 1000.0}}
    return fit_quality(
        np.delete(values, col, axis=1), values[:, col], inputs, QUALITY_TARGET, segments,
        kind="ridge", metadata=cadence,
    )  # fmt: skip


def _check_prediction_schema(asset_key: str, value: str) -> Any:
    """A quality record as DESIGN documents it."""
    prediction = decode_prediction(value.encode())
    raw = json.loads(value)
    assert raw.keys() >= set(QUALITY_FIELDS), sorted(set(QUALITY_FIELDS) - raw.keys())
    assert raw["schema"] == PREDICTION_SCHEMA and prediction.asset == asset_key
    assert prediction.target == QUALITY_TARGET
    return prediction


def _console_lines(sim: PlantSimulator) -> str:
    """``key<TAB>value`` lines for the console producer: every reading, then the bad ones."""
    chunk = sim.generate()
    lines = []
    for t in range(chunk.n_steps):
        for a, asset in enumerate(sim.assets):
            values = dict(zip(SIGNALS, chunk.values[t, a].tolist(), strict=True))
            reading = encode_reading(asset, int(chunk.ts_ms[t, a]), values).decode()
            lines.append(f"{asset}\t{reading}")
    lines.extend(f"pump-01\t{bad}" for bad in MALFORMED)
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, f"{cmd[0]} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def _check_design_schema(asset_key: str, value: str) -> Any:
    """The record as DESIGN documents it: our decoder accepts it, DESIGN's fields are there."""
    event = decode_event(value.encode())
    raw = json.loads(value)
    assert raw.keys() >= set(DESIGN_FIELDS), sorted(set(DESIGN_FIELDS) - raw.keys())
    assert raw["schema"] == SCHEMA and event.asset == asset_key
    assert raw["event"] in {"opened", "updated", "resolved"}
    assert raw["severity"] in {"warning", "critical"}
    assert set(raw["model"]) == {"name", "version"}
    return event


def test_foreign_clients_feed_the_monitor_and_read_its_alerts(
    kafka_bootstrap: str, new_topic: Any, tmp_path: Path
) -> None:
    java = _console_client(tmp_path)
    kcat, kcat_env = _kcat()

    def kcat_read(topic: str, *options: str) -> str:
        """Every message of ``topic`` from the start, one JSON envelope a line (``-J``)."""
        cmd = [kcat, "-b", kafka_bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-J"]
        return _run([*cmd, "-q", *options], env=kcat_env)

    names = ("sensors", "alerts", "dlq", "state", "notices", "quality")
    topics = {p: new_topic(p) for p in names}

    def console_read(topic: str) -> list[tuple[str, ...]]:
        """(key, value) of every record of ``topic``, by Kafka's console consumer, committed
        transactions only."""
        out = _run(
            [
                *java,
                CONSOLE_CONSUMER,
                "--bootstrap-server",
                kafka_bootstrap,
                "--topic",
                topic,
                "--from-beginning",
                "--isolation-level",
                "read_committed",
                "--timeout-ms",
                "15000",  # also covers joining the group on a loaded machine
                "--formatter-property",
                "print.key=true",
                "--formatter-property",
                "key.separator=\t",
            ]
        )
        return [tuple(line.split("\t", 1)) for line in out.splitlines() if line]

    sim = _simulator()
    readings = N_ASSETS * sim.config.n_steps  # type: ignore[operator]

    # -- Kafka's console producer writes the plant ----------------------------------------
    _run(
        [
            *java,
            CONSOLE_PRODUCER,
            "--bootstrap-server",
            kafka_bootstrap,
            "--topic",
            topics["sensors"],
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=\t",
        ],
        stdin=_console_lines(sim),
    )

    # -- the monitor, exactly once ---------------------------------------------------------
    model = trained_model(N_ASSETS, hours=6.0)
    settings = settings_for(
        kafka_bootstrap,
        topics,
        delivery={"mode": "exactly_once"},
        quality={"every_ms": QUALITY_EVERY_MS, "usl": 1e6},
    )
    metrics = Metrics.create()
    with running_monitor(settings, model, metrics, [_soft_sensor()]) as loop:
        wait_for(
            lambda: loop.stats.readings + loop.stats.rejected >= readings + len(MALFORMED),
            120,
            "every line of the console producer consumed",
        )
    assert loop.stats.readings == readings
    assert metrics.registry.get_sample_value(
        "plantwatch_messages_total", {"result": "ok"}
    ) == float(readings)

    ours = [
        (m.key().decode(), m.value().decode())
        for m in read_topic(kafka_bootstrap, topics["alerts"])
    ]
    events = [_check_design_schema(key, value) for key, value in ours]
    assert any(e.event == "opened" for e in events) and any(e.event == "resolved" for e in events)
    faulty = {f.asset for f in sim.faults}
    assert {e.asset for e in events if e.event == "opened"} >= faulty

    # -- Kafka's console consumer, read_committed ------------------------------------------
    java_records = console_read(topics["alerts"])
    assert all(len(r) == 2 for r in java_records), [r for r in java_records if len(r) != 2]
    for key, value in java_records:
        _check_design_schema(key, value)
    assert len(set(java_records)) == len(java_records), "a record seen twice"
    assert Counter(java_records) == Counter(ours)

    # -- kcat (librdkafka 2.0 from Debian) -------------------------------------------------
    out = kcat_read(topics["alerts"], "-X", "isolation.level=read_committed")
    kcat_records = [(m["key"], m["payload"]) for m in map(json.loads, out.splitlines())]
    for key, value in kcat_records:
        _check_design_schema(key, value)
    assert Counter(kcat_records) == Counter(ours)

    # -- plantwatch.quality, read alike by all three --------------------------------------
    quality = [
        (m.key().decode(), m.value().decode())
        for m in read_topic(kafka_bootstrap, topics["quality"])
        if dict(m.headers() or []).get("schema") == PREDICTION_SCHEMA.encode()
    ]
    predictions = [_check_prediction_schema(key, value) for key, value in quality]
    per_asset = Counter(p.asset for p in predictions)
    assert set(per_asset) == set(sim.assets), per_asset
    assert min(per_asset.values()) >= DURATION_S * 1000 // QUALITY_EVERY_MS - 2, per_asset
    assert all(p.in_spec is True and p.usl == 1e6 for p in predictions)
    java_quality = console_read(topics["quality"])
    for key, value in java_quality:
        _check_prediction_schema(key, value)
    assert len(set(java_quality)) == len(java_quality), "a prediction seen twice"
    assert Counter(java_quality) == Counter(quality)
    out = kcat_read(topics["quality"], "-X", "isolation.level=read_committed")
    kcat_quality = [(m["key"], m["payload"]) for m in map(json.loads, out.splitlines())]
    for key, value in kcat_quality:
        _check_prediction_schema(key, value)
    assert Counter(kcat_quality) == Counter(quality)

    # -- the dead letters, as kcat sees them ----------------------------------------------
    out = kcat_read(topics["dlq"])
    dead = [json.loads(line) for line in out.splitlines()]
    print(
        f"{readings} readings + {len(MALFORMED)} malformed lines by the console producer; "
        f"{len(ours)} alert records ({Counter(e.event for e in events)}) read alike by "
        f"ours, the console consumer ({len(java_records)}) and kcat ({len(kcat_records)}); "
        f"{len(quality)} quality predictions read alike by all three; "
        f"{len(dead)} dead letters by kcat"
    )
    assert sorted(m["payload"] for m in dead) == sorted(MALFORMED)
    for message in dead:
        headers = dict(zip(message["headers"][::2], message["headers"][1::2], strict=True))
        assert headers[DLQ_REASON] == Reason.NOT_JSON.value

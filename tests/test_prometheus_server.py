"""A real Prometheus scrapes a running monitor; every dashboard and rule query returns data.

The monitor (``plantwatch run``'s loop) consumes a simulated plant from a real broker: a
backlog of five minutes with two injected faults fills every window, then readings arrive
live at their own time, with one malformed message for every three readings. Prometheus
(Debian's build, from ``make tools``) scrapes ``/metrics`` every second with the rules of
deploy/prometheus/rules.yml loaded. Once it has a few scrapes a fault is switched on for one
asset, and every expression of every Grafana panel and every rule is run against
``/api/v1/query``. Each must return samples; the few alert rules that must stay quiet in
a healthy run (``QUIET``) return nothing, and the quantity they compare returns what they
compare instead. Last, the metrics endpoint is closed and ``PlantwatchMonitorDown``'s
expression returns the target as down.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from confluent_kafka import Producer

from alerts.metrics import Metrics, start_http_server
from models.quality.artifact import QualityModel
from models.quality.training import fit_quality
from stream.broker import free_port
from stream.lab import encode_lab_result
from stream.schema import encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig
from tests.kafka_helpers import (
    PLANT_SEED,
    kafka_with_lag_stats,
    running_monitor,
    settings_for,
    trained_model,
    wait_for,
)
from tests.prometheus_api import (
    PrometheusServer,
    panel_exprs,
    prometheus_tool,
    rule_exprs,
    rules,
    scrape_config,
    values,
    variable_queries,
)

pytestmark = pytest.mark.integration

N_ASSETS = 3
BACKLOG_S = 300
#: The live part is never needed this long; the producer stops when the test is done.
LIVE_S = 120
#: The asset whose live readings turn faulty once Prometheus is scraping (not the control).
FAULTY = "pump-01"
#: The soft sensor served beside the anomaly model, and a limit it never reaches.
QUALITY_TARGET = "temp"
QUALITY_INPUTS = ("pressure", "flow", "current")
QUALITY_USL = 1e6
#: Seconds to wait for every expression to have data (a fault opens an alert in ~5 s).
DATA_WAIT_S = 60.0

#: Alert rules that must not fire in a healthy run: why, and what is asked instead (the
#: quantity the rule compares, which must have samples that pass the check).
QUIET: dict[str, tuple[str, str, Callable[[float], bool]]] = {
    "PlantwatchNoData": (
        "valid readings arrive every second",
        'sum by (job, instance) (rate(plantwatch_messages_total{result="ok"}[5m]))',
        lambda v: v > 0,
    ),
    "PlantwatchConsumerLagHigh": (
        "the monitor keeps up with four messages a second",
        "sum by (partition) (plantwatch_consumer_lag)",
        lambda v: 0 <= v <= 10_000,
    ),
    "PlantwatchConsumerLagGrowing": (
        "the lag stays near zero",
        "sum by (job, instance, partition) (plantwatch_consumer_lag)",
        lambda v: 0 <= v <= 1000,
    ),
    "PlantwatchLatencyHigh": (
        "live readings are sent at their own time stamp and scored within a batch wait",
        "histogram_quantile(0.99, job_instance_le:plantwatch_e2e_latency_seconds_bucket:rate5m)",
        lambda v: 0 < v <= 10,
    ),
    "PlantwatchCommitsFailing": (
        "the broker accepts every commit",
        'sum by (job, instance) (increase(plantwatch_commit_total{result="error"}[5m]))',
        lambda v: v == 0,
    ),
    "PlantwatchDeliveriesFailing": (
        "the broker acknowledges every alert and dead letter",
        'sum by (job, instance) (increase(plantwatch_deliveries_total{result="failed"}[5m]))',
        lambda v: v == 0,
    ),
    "PlantwatchQualityOutOfSpec": (
        "the soft sensor's upper spec limit is far above any temperature the plant reaches",
        "max by (job, instance, target) (plantwatch_quality_predicted) - on (job, instance, "
        'target) max by (job, instance, target) (plantwatch_quality_spec_limit{limit="usl"})',
        lambda v: v < 0,
    ),
    "PlantwatchOperatorCommandRefused": (
        "no operator sends a command in this run",
        "sum by (job, instance) "
        '(increase(plantwatch_commands_total{result=~"unknown_alert|rejected"}[10m]))',
        lambda v: v == 0,
    ),
    "PlantwatchDrift": (
        "a minute of live data is too short for a Page-Hinkley drift outside the alert",
        "sum by (job, instance, kind) "
        '(increase(plantwatch_drift_events_total{kind!="anomaly"}[15m]))',
        lambda v: v == 0,
    ),
}
#: Checked after the metrics endpoint is closed (while it serves, ``up`` is 1).
DOWN_RULE = "PlantwatchMonitorDown"
#: Alert rules that must be active when the queries run, and the state each must be in.
ACTIVE = {
    "PlantwatchAnomaly": {"pending", "firing"},  # for: 1m
    "PlantwatchAlertsOpen": {"firing"},  # for: 0m
    "PlantwatchCriticalAlert": {"firing"},  # for: 0m
    "PlantwatchCriticalAlertOpen": {"pending", "firing"},  # the live fault's alert is critical
    "PlantwatchDLQRate": {"pending", "firing"},  # a quarter of the messages are malformed
}


def _simulator(live_start_ms: int) -> PlantSimulator:
    sim = PlantSimulator(
        SimConfig(
            n_assets=N_ASSETS,
            period_ms=1000,
            start_ms=live_start_ms - BACKLOG_S * 1000,
            duration_s=BACKLOG_S + LIVE_S,
            seed=7,
            plant_seed=PLANT_SEED,
            faults=2,
            control_assets=1,
            fault_kinds=("level_shift", "bearing_wear"),
            fault_duration_s=(40.0, 80.0),
            warmup_s=60.0,
        )
    )
    # The planned faults are in the backlog; the live fault is the test's own.
    assert all(f.end_ms < live_start_ms for f in sim.faults), sim.faults
    return sim


class LivePlant:
    """Sends the simulator's readings: the backlog at once, the rest each at its time.

    While ``fault`` is set, ``FAULTY``'s vibration alternates ten standard deviations
    above and below normal (a fault the baseline follower cannot take for a new steady
    operating point). After every step one malformed message goes out too.
    """

    def __init__(self, bootstrap: str, topic: str, live_start_ms: int) -> None:
        self.topic = topic
        self.live_start_ms = live_start_ms
        self.sim = _simulator(live_start_ms)
        chunk = self.sim.generate()
        self.values = chunk.values  # (steps, assets, signals)
        self.ts_ms = chunk.ts_ms  # (steps, assets)
        self.backlog_steps = int(np.sum(self.ts_ms[:, 0] < live_start_ms))
        self.vibration = SIGNALS.index("vibration_rms")
        self.swing = 10.0 * float(np.std(self.values[: self.backlog_steps, :, self.vibration]))
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": "5"})
        self.fault = threading.Event()
        self.stop = threading.Event()
        self.live_sent = 0
        self._thread = threading.Thread(target=self._live, daemon=True)

    @property
    def backlog_readings(self) -> int:
        return self.backlog_steps * N_ASSETS

    def quality_model(self) -> QualityModel:
        """A soft sensor of the motor temperature from the hydraulics, fitted on the backlog."""
        x = self.values[: self.backlog_steps].transpose(1, 0, 2)  # (assets, steps, signals)
        rows = x.reshape(-1, x.shape[2])
        per = self.backlog_steps
        segments = [(a * per, (a + 1) * per) for a in range(N_ASSETS)]
        inputs = [SIGNALS.index(s) for s in QUALITY_INPUTS]
        return fit_quality(
            rows[:, inputs], rows[:, SIGNALS.index(QUALITY_TARGET)], QUALITY_INPUTS,
            QUALITY_TARGET, segments, kind="ridge",
            metadata={"cadence": {"interval_ms": 1000.0}},
        )  # fmt: skip

    def send_lab(self, topic: str) -> int:
        """The measured temperature of a few backlog samples per asset, as lab results."""
        sent = 0
        temp = SIGNALS.index(QUALITY_TARGET)
        for step in range(60, self.backlog_steps, 60):
            for a, asset in enumerate(self.sim.assets):
                value = float(self.values[step, a, temp])
                record = encode_lab_result(asset, int(self.ts_ms[step, a]), QUALITY_TARGET, value)
                self.producer.produce(topic, record, key=asset.encode())
                sent += 1
        if self.producer.flush(30) != 0:
            raise AssertionError("the lab results were not delivered within 30 s")
        return sent

    def send_backlog(self) -> None:
        for step in range(self.backlog_steps):
            self._send(step, faulty=False)
        if self.producer.flush(30) != 0:
            raise AssertionError("the backlog was not delivered within 30 s")

    def start_live(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.producer.flush(10)

    def _live(self) -> None:
        for step in range(self.backlog_steps, len(self.ts_ms)):
            wait_s = self.ts_ms[step, 0] / 1000.0 - time.time()
            if wait_s > 0 and self.stop.wait(wait_s):
                return
            if self.stop.is_set():
                return
            self._send(step, faulty=self.fault.is_set())
            self.producer.produce(self.topic, b'{"asset": "pump-01", "ts"', key=b"pump-01")
            self.producer.poll(0)
            self.live_sent += 1

    def _send(self, step: int, *, faulty: bool) -> None:
        for a, asset in enumerate(self.sim.assets):
            row = self.values[step, a].astype(float)
            if faulty and asset == FAULTY:
                row[self.vibration] += self.swing if step % 2 else -self.swing
            value = encode_reading(
                asset, int(self.ts_ms[step, a]), dict(zip(SIGNALS, row.tolist(), strict=True))
            )
            self.producer.produce(self.topic, value, key=asset.encode())


def test_every_panel_and_rule_query_returns_data(
    kafka_bootstrap: str, new_topic: Any, tmp_path: Path
) -> None:
    binary = prometheus_tool("prometheus")
    names = ("sensors", "alerts", "dlq", "state", "notices", "quality", "lab")
    topics = {p: new_topic(p) for p in names}
    live_start_ms = (int(time.time()) + 2) * 1000
    plant = LivePlant(kafka_bootstrap, topics["sensors"], live_start_ms)
    assert FAULTY in plant.sim.assets and plant.sim.assets[-1] != FAULTY
    plant.send_backlog()

    model = trained_model(N_ASSETS, hours=6.0)
    quality = plant.quality_model()
    settings = settings_for(
        kafka_bootstrap,
        topics,
        kafka=kafka_with_lag_stats(kafka_bootstrap, f"monitor-{topics['sensors']}"),
        # A soft sensor beside the anomaly model, so the quality panel has its series.
        quality={"every_ms": 5_000, "usl": QUALITY_USL},
    )
    metrics = Metrics.create()
    endpoint = start_http_server(metrics, "127.0.0.1", 0)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(scrape_config([f"127.0.0.1:{endpoint.port}"])), encoding="utf-8"
    )
    report: list[str] = []
    try:
        with running_monitor(settings, model, metrics, [quality]) as loop:
            plant.start_live()
            wait_for(
                lambda: loop.stats.readings >= plant.backlog_readings, 60, "the backlog consumed"
            )
            # Lab results for samples of the backlog: the join's RMSE and bias get series.
            sent = plant.send_lab(topics["lab"])
            wait_for(lambda: loop.stats.lab_joins >= sent, 60, "the lab results joined")
            # Started after the backlog is consumed: its minutes-old readings are in the
            # first scrape already, so no rate() counts them as live latency.
            with PrometheusServer(binary, config, tmp_path, free_port()) as prom:
                wait_for(
                    lambda: _has(prom, 'count_over_time(up{job="plantwatch"}[1m]) >= 3'),
                    30,
                    "three scrapes of the monitor",
                )
                plant.fault.set()
                _check_every_query(prom, report, list(plant.sim.assets))
                _check_rule_health(prom)
                endpoint.close()
                down = _rule_expr(DOWN_RULE)
                wait_for(lambda: _has(prom, down), 15, "the closed endpoint seen as down")
                report.append(f"rule {DOWN_RULE}: {len(prom.query(down))} after the close")
    finally:
        plant.close()
        endpoint.close()
    print("\n".join(report))
    assert plant.live_sent > 0


def _has(prom: PrometheusServer, expr: str) -> bool:
    return bool(prom.query(expr))


def _rule_expr(name: str) -> str:
    return dict(rule_exprs())[name]


def _expectations() -> list[tuple[str, str, Callable[[PrometheusServer], str | None]]]:
    """(what, expression, check) for every panel and rule; a check says what is wrong."""
    out: list[tuple[str, str, Callable[[PrometheusServer], str | None]]] = []
    for title, expr in panel_exprs():
        out.append((f"panel {title}", expr, _returns_numbers(expr.replace("$asset", ".*"))))
    for name, expr in rule_exprs():
        if name == DOWN_RULE:
            out.append((f"rule {name}", expr, _quiet(expr, 'up{job="plantwatch"}', _is_one)))
        elif name in QUIET:
            _, inner, ok = QUIET[name]
            out.append((f"rule {name}", expr, _quiet(expr, inner, ok)))
        else:
            out.append((f"rule {name}", expr, _returns_numbers(expr)))
    return out


def _is_one(value: float) -> bool:
    return value == 1.0


def _returns_numbers(expr: str) -> Callable[[PrometheusServer], str | None]:
    def check(prom: PrometheusServer) -> str | None:
        samples = prom.query(expr)
        if not samples:
            return "no samples"
        if not all(math.isfinite(v) for v in values(samples)):
            return f"not finite: {values(samples)}"
        return None

    return check


def _quiet(
    expr: str, inner: str, ok: Callable[[float], bool]
) -> Callable[[PrometheusServer], str | None]:
    def check(prom: PrometheusServer) -> str | None:
        fired = prom.query(expr)
        if fired:
            return f"fires in a healthy run: {fired}"
        samples = prom.query(inner)
        if not samples:
            return f"{inner!r} has no samples"
        bad = [s for s in samples if not ok(float(s["value"][1]))]
        return f"{inner!r} gives {bad}" if bad else None

    return check


def _check_every_query(prom: PrometheusServer, report: list[str], assets: list[str]) -> None:
    """Polls until every expectation holds (or the wait is over), then reports each."""
    expectations = _expectations()
    deadline = time.monotonic() + DATA_WAIT_S
    while True:
        failures = {what: why for what, _, check in expectations if (why := check(prom))}
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for what, expr, _ in expectations:
        name = what.split(" ", 2)[1] if what.startswith("rule ") else ""
        shown = QUIET[name][1] if name in QUIET else expr.replace("$asset", ".*")
        if name == DOWN_RULE:
            shown = 'up{job="plantwatch"}'  # until the endpoint closes
        got = values(prom.query(shown))
        report.append(f"{what}: {len(got)} series {[float(f'{v:.4g}') for v in got]}")
    for what, query in variable_queries():
        # Grafana's label_values(metric, label) is the label values API, not PromQL.
        metric, label = (p.strip() for p in query.removeprefix("label_values(")[:-1].split(","))
        names = prom.api(f"label/{label}/values", [("match[]", metric)])
        report.append(f"{what}: {names}")
        if sorted(names) != sorted(assets):
            failures[what] = f"label values {names}, expected {sorted(assets)}"
    assert not failures, "\n".join(f"{what}: {why}" for what, why in failures.items())


def _check_rule_health(prom: PrometheusServer) -> None:
    """Every rule of the file is loaded and evaluates without error; the active ones are
    pending or firing (polled: a rule is evaluated up to an interval after a query sees it)."""
    expected = {rule.get("alert") or rule["record"] for rule in rules()}
    deadline = time.monotonic() + 10.0
    while True:
        groups = prom.api("rules")["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        states = {name: r["state"] for name, r in loaded.items() if r["type"] == "alerting"}
        wrong = {
            name: states.get(name)
            for name, allowed in ACTIVE.items()
            if states.get(name) not in allowed
        }
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(loaded) == expected
    errors = {name: r.get("lastError") for name, r in loaded.items() if r["health"] != "ok"}
    assert not errors, errors
    assert not wrong, f"alert rules not active: {wrong}"
    quiet = {name: state for name, state in states.items() if name not in ACTIVE}
    assert set(quiet.values()) == {"inactive"}, quiet

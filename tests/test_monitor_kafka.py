"""The monitor end to end on a real broker (the simulator → ``plantwatch run`` → alerts).

Every injected fault of a clearly detectable size is alerted for the right asset within a
bounded delay; the fault-free control asset raises nothing; each alert has exactly one
``opened`` and one ``resolved`` event; ``/metrics`` serves every DESIGN metric with counts
equal to what was produced.
"""

from __future__ import annotations

import urllib.request
from collections import Counter, defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.metrics import Metrics, start_http_server
from stream.simulator import produce
from tests.kafka_helpers import (
    LIVE_START_MS,
    alert_events,
    faulty_plant,
    kafka_with_lag_stats,
    running_monitor,
    settings_for,
    trained_model,
    unalerted_faults,
    wait_for,
)

pytestmark = pytest.mark.integration

DESIGN_METRICS = {
    "plantwatch_messages_total",
    "plantwatch_windows_scored_total",
    "plantwatch_alerts_total",
    "plantwatch_score_seconds",
    "plantwatch_e2e_latency_seconds",
    "plantwatch_alerts_open",
    "plantwatch_consumer_lag",
    "plantwatch_anomaly_score",
    "plantwatch_threshold",
    "plantwatch_model_info",
}
#: An alert must open within this long of its fault's start (readings are 1 s apart).
MAX_DELAY_MS = 120_000


def scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name].append((s.name, dict(s.labels), s.value))
    return samples


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_faults_alerted_control_quiet_metrics_complete(
    kafka_bootstrap: str, new_topic, mode: str
) -> None:
    n_assets, duration_s = 4, 2400
    sim = faulty_plant(n_assets, duration_s)
    # The plan leaves room after every fault for its alert to resolve.
    assert all(f.end_ms < LIVE_START_MS + (duration_s - 400) * 1000 for f in sim.faults)
    control = sim.assets[-1]
    topics = {p: new_topic(p) for p in ("sensors", "alerts", "dlq", "state")}
    produced = produce(sim, {"bootstrap.servers": kafka_bootstrap}, topics["sensors"], pace=False)
    assert produced.readings == n_assets * duration_s

    model = trained_model(n_assets)
    settings = settings_for(
        kafka_bootstrap,
        topics,
        kafka=kafka_with_lag_stats(kafka_bootstrap, f"monitor-{topics['sensors']}"),
        delivery={"mode": mode, "checkpoint_interval_s": 1.0},
    )
    metrics = Metrics.create()
    server = start_http_server(metrics, "127.0.0.1", 0)
    try:
        with running_monitor(settings, model, metrics) as loop:
            wait_for(lambda: loop.stats.readings >= produced.readings, 120, "all readings")
            wait_for(
                lambda: (
                    metrics.registry.get_sample_value("plantwatch_consumer_lag", {"partition": "0"})
                    == 0.0
                ),
                30,
                "consumer lag 0 reported from librdkafka statistics",
            )
            samples = scrape(server.port)
    finally:
        server.close()

    # -- alerts, read back from the topic -------------------------------------------------
    events = alert_events(kafka_bootstrap, topics["alerts"])
    assert events, "no alert events at all"
    assert not [e for e in events if e.asset == control], "false alert on the control asset"
    by_id: dict[str, list[str]] = defaultdict(list)
    for e in events:
        by_id[e.alert_id].append(e.event)
    for alert_id, kinds in by_id.items():
        counts = Counter(kinds)
        assert counts["opened"] == 1 and counts["resolved"] == 1, (alert_id, kinds)
        assert kinds[0] == "opened" and kinds[-1] == "resolved"
    assert not unalerted_faults(sim, events, MAX_DELAY_MS), "faults not alerted within 120 s"
    assert all(e.model.version == model.version for e in events)

    # -- metrics, scraped from /metrics while it ran -----------------------------------------
    names = {n for n in samples} | {n.removesuffix("_bucket") for n in samples}
    missing = {m for m in DESIGN_METRICS if m not in names and f"{m}_count" not in names}
    assert not missing, f"metrics missing from /metrics: {sorted(missing)}"

    def value(metric: str, /, **labels: str) -> float:
        return sum(
            v for _, lab, v in samples[metric] if all(lab.get(k) == x for k, x in labels.items())
        )

    assert value("plantwatch_messages_total", result="ok") == produced.readings
    expected_windows = n_assets * (duration_s - model.window + 1)
    assert value("plantwatch_windows_scored_total", model="pca") == expected_windows
    assert value("plantwatch_score_seconds_count") > 0
    assert value("plantwatch_e2e_latency_seconds_count") == expected_windows
    assert value("plantwatch_model_info", name="pca", version=model.version) == 1.0
    opened = sum(1 for e in events if e.event == "opened")
    assert value("plantwatch_alerts_total", event="opened") == opened
    assert {lab["asset"] for _, lab, _ in samples["plantwatch_anomaly_score"]} == set(sim.assets)
    assert all(v > 0 for _, _, v in samples["plantwatch_threshold"])
    assert value("plantwatch_alerts_open") >= 0

"""The metric bundle: DESIGN's names, bounded label sets, lag from librdkafka stats, /metrics."""

from __future__ import annotations

import json
import urllib.request
from typing import get_args, get_type_hints

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from alerts.events import AlertEvent, ModelRef
from alerts.metrics import DRIFT_KINDS, SKIP_REASONS, Metrics, start_http_server
from common.reasons import Reason

DESIGN_SERIES = [
    "plantwatch_messages_total",
    "plantwatch_windows_scored_total",
    "plantwatch_alerts_total",
    "plantwatch_score_seconds_bucket",
    "plantwatch_e2e_latency_seconds_bucket",
    "plantwatch_alerts_open",
    "plantwatch_consumer_lag",
    "plantwatch_anomaly_score",
    "plantwatch_threshold",
    "plantwatch_model_info",
]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics.create(CollectorRegistry(), max_asset_series=2)


def value(metrics: Metrics, sample: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(sample, labels)


def test_designs_metric_families_are_declared(metrics: Metrics) -> None:
    families = {m.name: m.type for m in metrics.registry.collect()}
    assert families["plantwatch_messages"] == "counter"
    assert families["plantwatch_windows_scored"] == "counter"
    assert families["plantwatch_alerts"] == "counter"
    assert families["plantwatch_score_seconds"] == "histogram"
    assert families["plantwatch_e2e_latency_seconds"] == "histogram"
    for gauge in (
        "plantwatch_alerts_open",
        "plantwatch_consumer_lag",
        "plantwatch_anomaly_score",
        "plantwatch_threshold",
        "plantwatch_model_info",
        "plantwatch_assets_unexported",
    ):
        assert families[gauge] == "gauge"
    assert all(name.startswith("plantwatch_") for name in families)


def test_every_design_series_appears_once_used(metrics: Metrics) -> None:
    metrics.messages.labels(result="ok").inc(3)
    metrics.windows_scored.labels(model="lstm-ae").inc(2)
    metrics.score_seconds.observe(0.002)
    metrics.e2e_latency_seconds.observe(0.2)
    metrics.alerts_open.set(1)
    metrics.observe_kafka_stats(stats_json({"0": 5}))
    metrics.set_asset_score("pump-1", 3.0, 4.0)
    metrics.set_model("lstm-ae", "1")
    text = generate_latest(metrics.registry).decode()
    for series in DESIGN_SERIES:
        assert f"\n{series}" in text, series


def test_counters_start_at_zero_for_known_outcomes(metrics: Metrics) -> None:
    assert value(metrics, "plantwatch_messages_total", result="ok") == 0.0
    for reason in Reason:
        assert value(metrics, "plantwatch_messages_total", result=reason.value) == 0.0
    assert value(metrics, "plantwatch_alerts_total", severity="critical", event="opened") == 0.0
    assert value(metrics, "plantwatch_commit_total", result="error") == 0.0
    for kind in DRIFT_KINDS:
        assert value(metrics, "plantwatch_drift_events_total", kind=kind) == 0.0
    for reason in SKIP_REASONS:
        assert value(metrics, "plantwatch_windows_skipped_total", reason=reason) == 0.0


def test_pre_created_labels_are_the_rooms_vocabularies() -> None:
    # alerts/ may not import stream/ or models/ (the layer contracts), so the label values
    # are written down twice; this keeps the copies equal.
    from models.drift import DriftEvent
    from stream.window import Push

    assert set(DRIFT_KINDS) == {*get_args(get_type_hints(DriftEvent)["kind"]), "anomaly"}
    assert set(SKIP_REASONS) == {Push.STALE.value, Push.MISSING.value}


def test_histogram_buckets_span_the_documented_ranges(metrics: Metrics) -> None:
    metrics.score_seconds.observe(0.00005)
    metrics.e2e_latency_seconds.observe(0.0005)
    text = generate_latest(metrics.registry).decode()
    assert 'plantwatch_score_seconds_bucket{le="0.0001"} 1.0' in text
    assert 'plantwatch_score_seconds_bucket{le="5.0"} 1.0' in text
    assert 'plantwatch_e2e_latency_seconds_bucket{le="0.001"} 1.0' in text
    assert 'plantwatch_e2e_latency_seconds_bucket{le="60.0"} 1.0' in text


def test_declaring_twice_in_one_registry_fails_loudly() -> None:
    registry = CollectorRegistry()
    Metrics.create(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics.create(registry)


def test_per_asset_series_are_capped(metrics: Metrics) -> None:
    assert metrics.set_asset_score("a", 1.0, 4.0)
    assert metrics.set_asset_score("b", 2.0, 4.0)
    assert not metrics.set_asset_score("c", 9.0, 4.0)
    assert not metrics.set_asset_score("c", 9.5, 4.0)
    assert not metrics.set_asset_score("d", 9.0, 4.0)
    assert metrics.set_asset_score("a", 5.0, 4.5)  # an exported asset keeps updating
    assert value(metrics, "plantwatch_anomaly_score", asset="a") == 5.0
    assert value(metrics, "plantwatch_threshold", asset="a") == 4.5
    assert value(metrics, "plantwatch_anomaly_score", asset="c") is None
    assert value(metrics, "plantwatch_assets_unexported") == 2.0
    text = generate_latest(metrics.registry).decode()
    assert text.count("plantwatch_anomaly_score{") == 2

    metrics.remove_asset("b")  # moved to another process: series gone, slot free
    assert value(metrics, "plantwatch_anomaly_score", asset="b") is None
    assert metrics.set_asset_score("c", 9.0, 4.0)
    assert value(metrics, "plantwatch_assets_unexported") == 1.0  # 'd' only
    metrics.remove_asset("d")
    assert value(metrics, "plantwatch_assets_unexported") == 0.0
    metrics.remove_asset("never-seen")
    assert not metrics.set_asset_score("e", 1.0, 4.0)  # 'a' and 'c' hold the two slots


def test_zero_cap_exports_no_asset_series() -> None:
    metrics = Metrics.create(CollectorRegistry(), max_asset_series=0)
    assert not metrics.set_asset_score("a", 1.0, 2.0)
    assert value(metrics, "plantwatch_assets_unexported") == 1.0
    with pytest.raises(ValueError, match="max_asset_series"):
        Metrics.create(CollectorRegistry(), max_asset_series=-1)


def test_model_swap_removes_the_old_label_set(metrics: Metrics) -> None:
    metrics.set_model("lstm-ae", "1")
    metrics.set_model("lstm-ae", "2")
    assert value(metrics, "plantwatch_model_info", name="lstm-ae", version="1") is None
    assert value(metrics, "plantwatch_model_info", name="lstm-ae", version="2") == 1.0


def test_alert_events_and_deliveries_are_counted(metrics: Metrics) -> None:
    def event(kind: str, severity: str) -> AlertEvent:
        return AlertEvent(
            alert_id="x",
            event=kind,  # type: ignore[arg-type]
            asset="a",
            severity=severity,  # type: ignore[arg-type]
            started_at="2026-11-28T21:00:00.000Z",
            ended_at=None,
            detected_at="2026-11-28T21:00:00.000Z",
            score=1.0,
            threshold=1.0,
            top_signals=[],
            model=ModelRef("m", "1"),
            peak_score=1.0,
            ratio=1.0,
            reason="r",
            window_at="2026-11-28T21:00:00.000Z",
        )

    metrics.count_alerts([event("opened", "warning"), event("updated", "critical")])
    metrics.count_alerts([event("resolved", "critical")])
    assert value(metrics, "plantwatch_alerts_total", severity="warning", event="opened") == 1.0
    assert value(metrics, "plantwatch_alerts_total", severity="critical", event="updated") == 1.0
    assert value(metrics, "plantwatch_alerts_total", severity="critical", event="resolved") == 1.0
    metrics.count_deliveries(5, 2)
    metrics.count_deliveries(1)
    assert value(metrics, "plantwatch_deliveries_total", result="delivered") == 6.0
    assert value(metrics, "plantwatch_deliveries_total", result="failed") == 2.0


# -- consumer lag from librdkafka statistics ------------------------------------------------


def partition_stats(partition: int, lag: int) -> dict[str, object]:
    """One partition block as librdkafka writes it (STATISTICS.md), trimmed of broker detail."""
    return {
        "partition": partition,
        "broker": 1 if partition >= 0 else -1,
        "leader": 1 if partition >= 0 else -1,
        "desired": partition >= 0,
        "unknown": False,
        "msgq_cnt": 0,
        "msgq_bytes": 0,
        "xmit_msgq_cnt": 0,
        "fetchq_cnt": 12,
        "fetchq_size": 4096,
        "fetch_state": "active" if lag >= 0 else "none",
        "query_offset": -1001,
        "next_offset": 1200,
        "app_offset": 1200,
        "stored_offset": 1200,
        "committed_offset": 1100,
        "eof_offset": 1200,
        "lo_offset": 0,
        "hi_offset": 1200 + max(lag, 0),
        "ls_offset": 1200 + max(lag, 0),
        "consumer_lag": lag,
        "consumer_lag_stored": lag,
        "leader_epoch": 3,
        "txmsgs": 0,
        "txbytes": 0,
        "rxmsgs": 5000,
        "rxbytes": 800000,
        "msgs": 5000,
        "rx_ver_drops": 0,
        "msgs_inflight": 0,
    }


def stats_json(lags: dict[str, int], *, other_topic: bool = False) -> str:
    topics: dict[str, object] = {
        "plantwatch.sensors": {
            "topic": "plantwatch.sensors",
            "age": 60_000,
            "metadata_age": 5_000,
            "batchsize": {"min": 0, "max": 0, "avg": 0},
            "batchcnt": {"min": 0, "max": 0, "avg": 0},
            "partitions": {
                **{p: partition_stats(int(p), lag) for p, lag in lags.items()},
                "-1": partition_stats(-1, -1),
            },
        }
    }
    if other_topic:
        topics["plantwatch.labels"] = {
            "topic": "plantwatch.labels",
            "partitions": {"0": partition_stats(0, 7)},
        }
    return json.dumps(
        {
            "name": "rdkafka#consumer-1",
            "client_id": "plantwatch",
            "type": "consumer",
            "ts": 1_234_567_890,
            "time": 1_795_899_600,
            "age": 60_000_000,
            "replyq": 0,
            "msg_cnt": 0,
            "msg_size": 0,
            "brokers": {"localhost:9092/1": {"name": "localhost:9092/1", "nodeid": 1}},
            "topics": topics,
            "cgrp": {"state": "up", "join_state": "steady", "assignment_size": len(lags)},
        }
    )


def test_lag_is_read_per_partition_skipping_unknowns(metrics: Metrics) -> None:
    metrics.observe_kafka_stats(stats_json({"0": 50, "1": 0, "2": -1}))
    assert value(metrics, "plantwatch_consumer_lag", partition="0") == 50.0
    assert value(metrics, "plantwatch_consumer_lag", partition="1") == 0.0
    assert value(metrics, "plantwatch_consumer_lag", partition="2") is None
    assert value(metrics, "plantwatch_consumer_lag", partition="-1") is None


def test_revoked_partitions_lose_their_lag_series(metrics: Metrics) -> None:
    metrics.observe_kafka_stats(stats_json({"0": 50, "1": 10}))
    metrics.observe_kafka_stats(stats_json({"1": 3}))
    assert value(metrics, "plantwatch_consumer_lag", partition="0") is None
    assert value(metrics, "plantwatch_consumer_lag", partition="1") == 3.0


def test_lag_for_one_topic_or_summed_over_topics(metrics: Metrics) -> None:
    stats = stats_json({"0": 50}, other_topic=True)
    metrics.observe_kafka_stats(stats, topic="plantwatch.sensors")
    assert value(metrics, "plantwatch_consumer_lag", partition="0") == 50.0
    metrics.observe_kafka_stats(stats)
    assert value(metrics, "plantwatch_consumer_lag", partition="0") == 57.0


def test_producer_stats_and_bad_json(metrics: Metrics) -> None:
    metrics.observe_kafka_stats(json.dumps({"name": "rdkafka#producer-1", "type": "producer"}))
    assert "plantwatch_consumer_lag{" not in generate_latest(metrics.registry).decode()
    with pytest.raises(ValueError, match="not JSON"):
        metrics.observe_kafka_stats("{truncated")


# -- HTTP endpoint --------------------------------------------------------------------------


def test_http_server_serves_text_exposition_on_loopback(metrics: Metrics) -> None:
    metrics.messages.labels(result="ok").inc(7)
    server = start_http_server(metrics, port=0)
    try:
        assert server.host == "127.0.0.1"
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
    finally:
        server.close()
    assert 'plantwatch_messages_total{result="ok"} 7.0' in body
    assert "# TYPE plantwatch_alerts_open gauge" in body


def test_http_server_port_in_use_says_what_to_do(metrics: Metrics) -> None:
    with (
        start_http_server(metrics, port=0) as first,
        pytest.raises(OSError, match=r"cannot serve metrics on 127\.0\.0\.1"),
    ):
        start_http_server(metrics, port=first.port)

"""Quality models served by ``plantwatch run`` on the real broker (issue 12, Done means):
readings with a known relation and delayed lab values go in; predictions on the quality
topic within a stated error, a quality alert for a forced out-of-spec episode, and the
lab-join metrics come out."""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from alerts.events import SCHEMA, decode_event
from alerts.metrics import Metrics
from alerts.policy import alert_id_for
from alerts.predictions import PREDICTION_SCHEMA, decode_prediction
from common.timestamps import parse_ts
from models.artifact import TrainedModel
from models.quality.artifact import QualityModel
from models.quality.training import fit_quality
from models.training import train_model
from plantwatch.runloop import RunLoop
from stream.lab import encode_lab_result
from stream.schema import encode_reading
from tests.conftest import TopicFactory
from tests.kafka_helpers import LIVE_START_MS, read_topic, settings_for, start_loop, wait_for

pytestmark = pytest.mark.integration

ASSET = "column-1"
STEP_MS = 1000
EVERY_MS = 10_000
USL = 3.0
LAB_OFFSET = 0.4  # the lab reads this much above the process relation: a bias to learn


def truth(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 2.0 * a + b


def _plant(
    rng: np.random.Generator, new_topic: TopicFactory
) -> tuple[QualityModel, TrainedModel, dict[str, str]]:
    """History with the relation the soft sensor learns (and normal behaviour for the
    anomaly model), both models, and fresh one-partition topics."""
    hist = rng.normal(0, 0.3, (3000, 2))
    y = truth(hist[:, 0], hist[:, 1]) + rng.normal(0, 0.02, 3000)
    cadence = {"cadence": {"interval_ms": float(STEP_MS)}}
    quality = fit_quality(hist, y, ("a", "b"), "y", [(0, 3000)], kind="ridge", metadata=cadence)
    anomaly = train_model(hist, ("a", "b"), window=8, scorer="pca")
    names = ("sensors", "alerts", "dlq", "state", "notices", "quality", "lab")
    return quality, anomaly, {p: new_topic(p, partitions=1) for p in names}


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_quality_predictions_alert_and_lab_joins_on_the_broker(
    kafka_bootstrap: str, new_topic: TopicFactory, mode: str
) -> None:
    rng = np.random.default_rng(5)
    quality, anomaly, topics = _plant(rng, new_topic)
    settings = settings_for(
        kafka_bootstrap,
        topics,
        quality={"every_ms": EVERY_MS, "usl": USL, "bias_rate": 0.2},
        # Exactly-once: predictions and quality alerts go out in each batch's transaction.
        delivery={"checkpoint_interval_s": 1.0, "mode": mode},
    )
    metrics = Metrics.create(CollectorRegistry())
    loop = RunLoop(settings, anomaly, metrics, quality_models=[quality])
    thread, errors = start_loop(loop)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    try:
        # 1. Ten minutes of readings; minutes 3-5 are forced out of spec (a += 2: y +4).
        n = 600
        live = rng.normal(0, 0.3, (n, 2))
        episode = slice(180, 300)
        live[episode, 0] += 2.0
        ts = LIVE_START_MS + np.arange(n) * STEP_MS
        for i in range(n):
            values = {"a": float(live[i, 0]), "b": float(live[i, 1])}
            producer.produce(topics["sensors"], encode_reading(ASSET, int(ts[i]), values), ASSET)
        producer.flush(30)
        wait_for(lambda: loop.stats.predictions >= n * STEP_MS // EVERY_MS, 90, "predictions")

        # 2. Lab results, late: one sample a minute, measured with the lab's offset.
        samples = list(range(30, n, 60))
        for i in samples:
            measured = float(truth(live[i, 0], live[i, 1])) + LAB_OFFSET
            producer.produce(
                topics["lab"], encode_lab_result(ASSET, int(ts[i]), "y", measured), ASSET
            )
        producer.flush(30)
        wait_for(lambda: loop.stats.lab_joins >= len(samples), 60, "the lab joins")

        # 3. One more minute of readings: its predictions carry the learnt bias.
        more = rng.normal(0, 0.3, (60, 2))
        for i in range(60):
            values = {"a": float(more[i, 0]), "b": float(more[i, 1])}
            at = int(ts[-1]) + (i + 1) * STEP_MS
            producer.produce(topics["sensors"], encode_reading(ASSET, at, values), ASSET)
        producer.flush(30)
        wait_for(lambda: loop.stats.predictions >= (n + 60) // 10, 60, "the later predictions")
        # Read while the loop runs: closing revokes the partitions, and their series go.
        get = metrics.registry.get_sample_value
        labels = {"asset": ASSET, "target": "y"}
        seen = {
            name: get(f"plantwatch_quality_{name}", labels)
            for name in ("bias", "rmse", "mae", "coverage", "predicted")
        }
        joined = get("plantwatch_quality_lab_results_total", {"result": "joined"})
        usl = get("plantwatch_quality_spec_limit", {"target": "y", "limit": "usl"})
    finally:
        loop.stop()
        thread.join(timeout=60)
    assert not errors, errors

    records = [
        m
        for m in read_topic(kafka_bootstrap, topics["quality"])
        if dict(m.headers() or []).get("schema") == PREDICTION_SCHEMA.encode()
    ]
    predictions = [decode_prediction(m.value()) for m in records]
    assert all(m.key() == ASSET.encode() for m in records)
    assert len(predictions) == (n + 60) // 10  # one per 10 s of reading time
    first = [p for p in predictions if parse_ts(p.ts) <= int(ts[-1])]
    at = ((np.array([parse_ts(p.ts) for p in first]) - LIVE_START_MS) // STEP_MS).astype(int)
    want = truth(live[at, 0], live[at, 1])
    got = np.array([p.predicted for p in first])
    # Within a stated error: the relation is learnt to its noise (0.02), far inside 0.1.
    assert float(np.sqrt(np.mean((got - want) ** 2))) < 0.1
    in_episode = (at >= episode.start) & (at < episode.stop)
    assert [p.in_spec for p in first] == [not e for e in in_episode.tolist()]
    assert all(p.lower is not None and p.lower < p.predicted < p.upper for p in first)  # type: ignore[operator]
    # Later predictions carry the bias learnt from 10 lab results (1 - 0.8**10 of 0.4).
    assert predictions[-1].bias == pytest.approx(LAB_OFFSET * (1 - 0.8**10), abs=0.05)

    events = [
        decode_event(m.value())
        for m in read_topic(kafka_bootstrap, topics["alerts"])
        if dict(m.headers() or []).get("schema") == SCHEMA.encode()
    ]
    q_events = [e for e in events if e.kind == "quality"]
    # One episode: opened, perhaps updated as the prediction rose, resolved, one id.
    kinds = [e.event for e in q_events]
    assert kinds[0] == "opened" and kinds[-1] == "resolved", kinds
    assert set(kinds[1:-1]) <= {"updated"}
    assert {e.alert_id for e in q_events} == {q_events[0].alert_id}
    opened = q_events[0]
    start = LIVE_START_MS + episode.start * STEP_MS
    assert opened.started_at == predictions[episode.start // 10].ts
    assert parse_ts(opened.started_at) == start
    assert opened.alert_id == alert_id_for(ASSET, "quality-ridge", start, kind="quality", rule="y")
    assert opened.severity == "critical" and "above USL 3" in opened.reason
    assert parse_ts(q_events[-1].window_at) > LIVE_START_MS + episode.stop * STEP_MS

    assert joined == len(samples)
    # All lab results met predictions made before any was known: they show the offset.
    assert seen["bias"] == pytest.approx(-LAB_OFFSET, abs=0.05)
    assert seen["rmse"] == pytest.approx(LAB_OFFSET, abs=0.05)
    assert seen["mae"] == pytest.approx(LAB_OFFSET, abs=0.05)
    assert seen["coverage"] is not None and 0.0 <= seen["coverage"] <= 1.0
    assert seen["predicted"] == pytest.approx(predictions[-1].predicted)
    assert usl == USL


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_the_quality_state_survives_a_restart(
    kafka_bootstrap: str, new_topic: TopicFactory, mode: str
) -> None:
    """The bias learned from lab results, and the predictions kept for lab results still
    to come, are in the state topic: a restarted monitor continues with both."""
    rng = np.random.default_rng(6)
    quality, anomaly, topics = _plant(rng, new_topic)
    settings = settings_for(
        kafka_bootstrap,
        topics,
        quality={"every_ms": EVERY_MS, "bias_rate": 0.5},
        delivery={"checkpoint_interval_s": 1.0, "mode": mode},
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    live = rng.normal(0, 0.3, (360, 2))
    ts = LIVE_START_MS + np.arange(len(live)) * STEP_MS

    def send(rows: range) -> None:
        for i in rows:
            values = {"a": float(live[i, 0]), "b": float(live[i, 1])}
            producer.produce(topics["sensors"], encode_reading(ASSET, int(ts[i]), values), ASSET)
        producer.flush(30)

    def lab(i: int) -> None:
        measured = float(truth(live[i, 0], live[i, 1])) + LAB_OFFSET
        producer.produce(topics["lab"], encode_lab_result(ASSET, int(ts[i]), "y", measured), ASSET)
        producer.flush(30)

    # 1. Five minutes of readings and four lab results; then a clean stop.
    first = RunLoop(
        settings, anomaly, Metrics.create(CollectorRegistry()), quality_models=[quality]
    )
    thread, errors = start_loop(first)
    try:
        send(range(300))
        wait_for(lambda: first.stats.predictions >= 30, 90, "the first predictions")
        for i in (30, 90, 150, 210):  # on the 10 s grid: each joins its own prediction
            lab(i)
        wait_for(lambda: first.stats.lab_joins >= 4, 60, "the lab joins")
    finally:
        first.stop()
        thread.join(timeout=60)
    assert not errors, errors

    # 2. Restarted: a late lab result for a sample of before the stop, and another minute.
    second = RunLoop(
        settings, anomaly, Metrics.create(CollectorRegistry()), quality_models=[quality]
    )
    thread, errors = start_loop(second)
    try:
        lab(270)
        send(range(300, 360))
        wait_for(lambda: second.stats.lab_joins >= 1, 60, "the late lab result joined")
        wait_for(lambda: second.stats.predictions >= 6, 60, "the predictions after the restart")
    finally:
        second.stop()
        thread.join(timeout=60)
    assert not errors, errors

    predictions = [
        decode_prediction(m.value())
        for m in read_topic(kafka_bootstrap, topics["quality"])
        if dict(m.headers() or []).get("schema") == PREDICTION_SCHEMA.encode()
    ]
    before = [p for p in predictions if parse_ts(p.ts) < int(ts[300])]
    after = [p for p in predictions if parse_ts(p.ts) >= int(ts[300])]
    assert len(after) == 6
    # Five lab results at bias_rate 0.5 toward the lab's offset: 1 - 0.5**5 of it; a restart
    # that forgot the first four would be at 0.5 of it.
    assert after[-1].bias == pytest.approx(LAB_OFFSET * (1 - 0.5**5), abs=0.03)
    assert after[0].bias == pytest.approx(LAB_OFFSET * (1 - 0.5**5), abs=0.03)
    assert before and all(p.bias == 0.0 for p in before)  # made before any lab result

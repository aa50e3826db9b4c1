"""The live quality core (plantwatch/quality_service.py): cadence, history, lab join,
rolling metrics, quality alerts and their metrics, with no broker."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from alerts.metrics import Metrics
from alerts.policy import AlertConfig, AlertPolicy, alert_id_for
from models.quality.config import QualityConfig
from models.quality.training import fit_quality
from plantwatch.quality_service import QualityService, due_rows, judge, observe_quality
from stream.config import WindowSettings
from stream.lab import LabResult
from stream.schema import SensorReading

T0 = 1_795_899_600_000
ASSET = "r-1"


def _model(kind: str = "ridge", lags: tuple[int, ...] | None = None):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    y = 2 * x[:, 0] + x[:, 1] + rng.normal(0, 0.05, 600)
    meta = {"cadence": {"interval_ms": 1000.0}}
    return fit_quality(x, y, ("a", "b"), "y", [(0, 600)], kind=kind, lags=lags, metadata=meta)


def _readings(
    n: int, *, step_ms: int = 1000, shift: float = 0.0, seed: int = 1
) -> list[SensorReading]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return [
        SensorReading(ASSET, T0 + i * step_ms, {"a": float(x[i, 0]) + shift, "b": float(x[i, 1])})
        for i in range(n)
    ]


def _service(**cfg: object) -> QualityService:
    model = _model(lags=(0, 1, 2))
    return QualityService([model], QualityConfig.validated(**cfg), WindowSettings())


def _run(service: QualityService, batches: list[list[SensorReading]]) -> list[tuple[str, float]]:
    policy = AlertPolicy()
    out: list[tuple[str, float]] = []
    for batch in batches:
        for p in service.process(batch, [], policy, now_ms=T0).predictions:
            out.append((p.ts, p.predicted))
    return out


def test_due_rows_is_one_per_period_whatever_the_batch_cut() -> None:
    ts = np.arange(0, 200_000, 7_000, dtype=np.int64)
    ok = np.ones(ts.size, np.bool_)
    whole, _ = due_rows(ts, ok, 0, 30_000)
    picked: list[int] = []
    nxt = 0
    for start in range(0, ts.size, 4):
        rows, nxt = due_rows(ts[start : start + 4], ok[start : start + 4], nxt, 30_000)
        picked.extend((rows + start).tolist())
    assert picked == whole.tolist()
    assert (np.diff(ts[whole] // 30_000) == 1).all()


def test_predictions_do_not_depend_on_the_batch_cut() -> None:
    readings = _readings(300)
    one = _run(_service(every_ms=10_000), [readings])
    cuts = [readings[i : i + 7] for i in range(0, 300, 7)]
    many = _run(_service(every_ms=10_000), cuts)
    assert len(one) == 30
    assert [t for t, _ in one] == [t for t, _ in many]
    np.testing.assert_allclose([v for _, v in one], [v for _, v in many], rtol=1e-6)


def test_stream_predictions_equal_the_models_on_the_same_rows() -> None:
    model = _model(lags=(0, 2))
    readings = _readings(50)
    service = QualityService([model], QualityConfig(every_ms=0), WindowSettings())
    got = [p.predicted for p in service.process(readings, [], AlertPolicy(), now_ms=T0).predictions]
    x = np.array([[r.values["a"], r.values["b"]] for r in readings])
    want = model.predict(x, [(0, 50)]).predicted
    assert len(got) == 50 - (model.history - 1)
    np.testing.assert_allclose(got, want[model.history - 1 :], rtol=1e-5, atol=1e-6)


def test_a_gap_restarts_the_history_and_late_readings_are_dropped() -> None:
    service = _service(every_ms=0)  # history 3
    policy = AlertPolicy()
    first = service.process(_readings(5), [], policy, now_ms=T0).predictions
    assert len(first) == 3
    # Far later than window.max_gap_intervals (20) sampling intervals: history starts again.
    later = [SensorReading(ASSET, T0 + 600_000 + i * 1000, {"a": 0.1, "b": 0.2}) for i in range(4)]
    late = [SensorReading(ASSET, T0 + 1000, {"a": 9.0, "b": 9.0})]
    out = service.process(late + later, [], policy, now_ms=T0).predictions
    assert [p.ts for p in out] == [
        "2026-11-28T21:10:02.000Z",
        "2026-11-28T21:10:03.000Z",
    ]


def test_a_missing_value_gives_no_prediction_where_the_history_holds_it() -> None:
    readings = _readings(10)
    readings[5] = SensorReading(ASSET, readings[5].ts_ms, {"a": None, "b": 1.0})
    service = _service(every_ms=0)
    got = [p.ts[17:19] for p in service.process(readings, [], AlertPolicy(), now_ms=T0).predictions]
    assert got == ["02", "03", "04", "08", "09"]


def test_lab_results_join_the_newest_prediction_at_or_before_their_sample_time() -> None:
    service = _service(every_ms=10_000, join_tolerance_ms=15_000, bias_rate=0.5)
    policy = AlertPolicy()
    made = service.process(_readings(60), [], policy, now_ms=T0).predictions
    assert [p.ts[14:19] for p in made] == ["00:02", "00:10", "00:20", "00:30", "00:40", "00:50"]
    first = made[1]
    lab = [
        LabResult(ASSET, T0 + 15_000, "y", first.predicted + 1.0),  # joins 00:10
        LabResult(ASSET, T0 + 12_000, "y", 0.0),  # the same prediction again
        LabResult(ASSET, T0 + 1_000, "y", 0.0),  # before any prediction
        LabResult(ASSET, T0 + 200_000, "y", 0.0),  # 150 s after the last: too far
        LabResult(ASSET, T0 + 15_000, "other", 0.0),
        LabResult("r-2", T0 + 15_000, "y", 0.0),
    ]
    out = service.process([], lab, policy, now_ms=T0)
    assert dict(out.lab) == {"joined": 1, "duplicate": 1, "unmatched": 3, "unknown_target": 1}
    (join,) = out.joins
    assert join.prediction_ts_ms == T0 + 10_000
    assert join.update.error == pytest.approx(1.0)
    assert join.update.bias_after == pytest.approx(0.5)
    assert join.rolling["rows"] == 1 and join.rolling["bias"] == pytest.approx(-1.0)
    # Later predictions carry the correction.
    after = service.process(
        _readings(20, seed=3)[:0]
        + [SensorReading(ASSET, T0 + 70_000 + i * 1000, {"a": 0.0, "b": 0.0}) for i in range(3)],
        [],
        policy,
        now_ms=T0,
    ).predictions
    assert after[0].bias == pytest.approx(0.5)


def test_rolling_metrics_cover_the_last_metrics_window_joins() -> None:
    service = _service(every_ms=10_000, metrics_window=3, bias_rate=0.0)
    policy = AlertPolicy()
    made = service.process(_readings(60), [], policy, now_ms=T0).predictions
    errors = [0.5, -0.5, 1.0, 2.0]  # predicted - measured
    lab = [
        LabResult(ASSET, T0 + (i + 1) * 10_000, "y", made[i + 1].predicted - e)
        for i, e in enumerate(errors)
    ]
    joins = service.process([], lab, policy, now_ms=T0).joins
    last = joins[-1].rolling
    assert last["rows"] == 3
    assert last["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 4) / 3))
    assert last["mae"] == pytest.approx(3.5 / 3)
    assert last["bias"] == pytest.approx(2.5 / 3)
    radius = made[1].upper - made[1].predicted  # type: ignore[operator]
    inside = [abs(e) <= radius for e in errors[1:]]
    assert last["coverage"] == pytest.approx(sum(inside) / 3)


def test_an_out_of_spec_episode_opens_and_resolves_one_quality_alert() -> None:
    service = _service(every_ms=10_000, usl=4.0)
    policy = AlertPolicy(AlertConfig(k=2, n=3, m=3, cooldown_ms=0))
    normal = _readings(60)
    shifted = [
        SensorReading(ASSET, r.ts_ms + 60_000, {**r.values, "a": 5.0}) for r in _readings(40)
    ]
    back = [SensorReading(ASSET, r.ts_ms + 100_000, r.values) for r in _readings(60, seed=4)]
    events = []
    predictions = []
    for batch in (normal, shifted, back):
        out = service.process(batch, [], policy, now_ms=T0)
        events += out.events
        predictions += out.predictions
    assert [(e.kind, e.event) for e in events] == [("quality", "opened"), ("quality", "resolved")]
    opened = events[0]
    assert opened.severity == "critical"  # the whole interval is above the USL
    assert opened.reason.startswith("y: predicted ") and "above USL 4" in opened.reason
    started = T0 + 60_000  # the first shifted reading is predicted out of spec
    assert opened.started_at == "2026-11-28T21:01:00.000Z"
    assert opened.alert_id == alert_id_for(
        ASSET, opened.model.name, started, kind="quality", rule="y"
    )
    assert [p.in_spec for p in predictions].count(False) == 4
    assert policy.open_alerts() == 0


def test_judge_says_which_side_and_whether_the_interval_or_the_point() -> None:
    assert judge(1.0, 0.5, 1.5, None, None) is None
    low = judge(0.0, -0.2, 0.2, 0.1, None, alert_on="point")
    assert low is not None and low.anomalous and low.severity == 1 and "below LSL" in low.why
    risky = judge(0.9, 0.8, 1.1, None, 1.0, alert_on="interval")
    assert risky is not None and risky.anomalous and risky.severity == 1
    quiet = judge(0.9, 0.8, 1.1, None, 1.0, alert_on="point")
    assert quiet is not None and not quiet.anomalous and quiet.limit == 1.0


def test_two_models_of_one_target_are_refused() -> None:
    with pytest.raises(ValueError, match="same target"):
        QualityService([_model(), _model()], QualityConfig())


def test_quality_metrics_are_set_capped_and_removed_with_the_asset() -> None:
    service = _service(every_ms=10_000, usl=4.0)
    policy = AlertPolicy()
    made = service.process(_readings(30), [], policy, now_ms=T0)
    lab = [LabResult(ASSET, T0 + 10_000, "y", made.predictions[1].predicted)]
    joined = service.process([], lab, policy, now_ms=T0)
    metrics = Metrics.create(CollectorRegistry(), max_asset_series=1)
    observe_quality(metrics, made)
    observe_quality(metrics, joined)
    get = metrics.registry.get_sample_value
    labels = {"asset": ASSET, "target": "y"}
    assert get("plantwatch_quality_predicted", labels) == pytest.approx(
        made.predictions[-1].predicted
    )
    assert get("plantwatch_quality_upper", labels) == pytest.approx(made.predictions[-1].upper)
    assert get("plantwatch_quality_rmse", labels) == pytest.approx(0.0, abs=1e-9)
    assert get("plantwatch_quality_coverage", labels) == 1.0
    assert get("plantwatch_quality_predictions_total", {"target": "y"}) == 3
    assert get("plantwatch_quality_lab_results_total", {"result": "joined"}) == 1
    # Over the cap: a second asset gets no series.
    assert not metrics.set_quality("r-2", "y", 1.0, 0.0, 2.0)
    metrics.remove_asset(ASSET)
    assert get("plantwatch_quality_predicted", labels) is None
    assert get("plantwatch_quality_rmse", labels) is None


class _Msg:
    """The parts of a confluent ``Message`` that ``decode_messages`` reads."""

    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)

    def headers(self) -> None:
        return None


def test_lab_messages_beside_readings_decode_or_go_to_the_dead_letter_topic() -> None:
    from stream.lab import LabDecoder, encode_lab_result
    from stream.schema import ReadingDecoder, encode_reading
    from stream.source import decode_messages

    good = encode_lab_result(ASSET, T0, "y", 0.25)
    messages = [
        _Msg("sensors", 0, ASSET.encode(), encode_reading(ASSET, T0, {"a": 1.0, "b": 2.0})),
        _Msg("lab", 0, ASSET.encode(), good),
        _Msg("lab", 1, b"r-2", good),  # keyed by another asset
        _Msg("lab", 2, ASSET.encode(), b'{"asset": "r-1", "ts": 1, "target": "y"}'),
        _Msg(
            "lab",
            3,
            ASSET.encode(),
            b'{"asset": "r-1", "ts": 1795899600000, "target": "y", "value": "x"}',
        ),
        _Msg("lab", 4, ASSET.encode(), b"not json"),
    ]
    batch = decode_messages(
        messages,  # type: ignore[arg-type]
        ReadingDecoder(),
        lab_topic="lab",
        lab_decoder=LabDecoder(),
    )
    assert [r.asset for r in batch.readings] == [ASSET]
    assert batch.lab_results == [LabResult(ASSET, T0, "y", 0.25)]
    assert [r.rejection.reason.value for r in batch.rejected] == [
        "key_mismatch",
        "missing_field",
        "non_numeric_value",
        "not_json",
    ]
    assert batch.next_offsets == {("sensors", 0): 1, ("lab", 0): 5}


def test_a_checkpointed_stream_continues_where_it_stopped() -> None:
    """The quality state survives a restart: what a service learned from lab results, its
    history, its due time and the predictions kept for late lab results come back from
    the snapshot (through JSON, as on the state topic), and the restored service goes on
    exactly as the one that never stopped."""
    import msgspec

    cfg = {"every_ms": 10_000, "join_tolerance_ms": 15_000, "bias_rate": 0.5}
    policy = AlertPolicy()
    first, second = _readings(60), _readings(60, seed=2)
    second = [SensorReading(ASSET, r.ts_ms + 60_000, dict(r.values)) for r in second]
    lab = [LabResult(ASSET, T0 + 15_000, "y", 3.0), LabResult(ASSET, T0 + 25_000, "y", -1.0)]
    late = [LabResult(ASSET, T0 + 45_000, "y", 2.0)]  # sampled before the restart

    def head(service: QualityService) -> None:
        service.process(first, lab, policy, now_ms=T0)

    kept = _service(**cfg)
    head(kept)
    snap = kept.snapshot_asset(ASSET)
    assert snap is not None and snap["y"]["updates"] == 2
    restored = _service(**cfg)
    restored.park(ASSET, msgspec.json.decode(msgspec.json.encode(snap)))
    for service in (kept, restored):
        assert service.process([], late, policy, now_ms=T0).lab["joined"] == 1
    a = kept.process(second, [], policy, now_ms=T0).predictions
    b = restored.process(second, [], policy, now_ms=T0).predictions
    assert [(p.ts, p.predicted, p.lower, p.upper, p.bias) for p in a] == [
        (p.ts, p.predicted, p.lower, p.upper, p.bias) for p in b
    ]
    assert a and a[0].bias != 0.0  # the learned bias, not a fresh one
    # Without the snapshot the late lab result finds nothing to join.
    assert _service(**cfg).process([], late, policy, now_ms=T0).lab["unmatched"] == 1


def test_a_checkpoint_of_another_model_or_unreadable_starts_afresh() -> None:
    cfg = {"every_ms": 10_000, "bias_rate": 0.5}
    service = _service(**cfg)
    service.process(
        _readings(30), [LabResult(ASSET, T0 + 12_000, "y", 5.0)], AlertPolicy(), now_ms=T0
    )
    snap = service.snapshot_asset(ASSET)
    assert snap is not None
    fresh = [
        p.bias
        for p in _service(**cfg).process(_readings(30), [], AlertPolicy(), now_ms=T0).predictions
    ]
    for broken in ({"y": {**snap["y"], "model": "another"}}, {"y": {**snap["y"], "rows": "x"}}):
        other = _service(**cfg)
        other.park(ASSET, broken)
        got = other.process(_readings(30), [], AlertPolicy(), now_ms=T0).predictions
        assert [p.bias for p in got] == fresh
    with pytest.raises(ValueError, match="not an object"):
        _service(**cfg).park(ASSET, ["y"])  # type: ignore[arg-type]
    # An idle asset's streams leave memory, but its snapshot is still there to write.
    service.evict([ASSET])
    assert service.assets == [] and service.snapshot_asset(ASSET) == snap

"""Backtest metrics: hand-computed cases, properties, and multi-asset aggregation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.evaluation import (
    MS_PER_DAY,
    NAB_PROFILES,
    EdgeMode,
    OverlapMode,
    auc_roc,
    evaluate,
    evaluate_by_asset,
    nab_score,
    runs,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 1_000
binary_lists = st.lists(st.integers(0, 1), min_size=1, max_size=80)


def seconds(n: int) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * STEP_MS


def nab_curve_at(position: int, a_tp: float, a_fp: float) -> float:
    """SKAB's scoring curve written out independently: tanh from A_tp down to A_fp over 1000
    sample points."""
    x = -math.pi / 2 + position * math.pi / 999
    return (a_tp - a_fp) / 2 * (1 - math.tanh(x) / math.tanh(math.pi / 2)) + a_fp


def normalised(raw: float, n_cp: int, a_tp: float, a_fn: float) -> float:
    return 100 * (raw - n_cp * a_fn) / (n_cp * a_tp - n_cp * a_fn)


# Two labelled events: rows 3-5 and rows 12-13, in 20 one-second rows.
LABELS = np.zeros(20, dtype=np.int64)
LABELS[3:6] = 1
LABELS[12:14] = 1


def test_perfect_detector() -> None:
    # The two onsets are 9 s apart: "cut_left" keeps a perfect detector at 100 (see below).
    r = evaluate(LABELS, LABELS, ts_ms=seconds(20), scores=LABELS * 2.0, nab_overlap="cut_left")
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (5, 0, 0, 15)
    assert r["precision"] == r["recall"] == r["f1"] == 1.0
    assert r["far_pct"] == 0.0 and r["mar_pct"] == 0.0
    assert r["events_labelled"] == r["events_detected"] == r["events_predicted"] == 2
    assert r["events_false"] == 0 and r["events_missed"] == 0
    assert r["event_precision"] == r["event_recall"] == r["event_f1"] == 1.0
    assert r["point_adjusted_f1_optimistic"] == 1.0
    assert r["detection_delay_rows_median"] == 0.0 and r["detection_delay_ms_mean"] == 0.0
    assert r["false_alarms_per_day"] == 0.0
    assert r["span_days"] == pytest.approx(19 * STEP_MS / MS_PER_DAY)
    assert r["nab_standard"] == r["nab_low_fp"] == r["nab_low_fn"] == pytest.approx(100.0)
    assert r["nab_missed_changepoints"] == 0 and r["nab_false_positives"] == 0
    assert r["auc_roc"] == 1.0


def test_null_detector() -> None:
    r = evaluate(LABELS, np.zeros(20, dtype=np.int64), ts_ms=seconds(20))
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (0, 0, 5, 15)
    assert r["precision"] is None  # nothing predicted: 0/0 is undefined, not 0
    assert r["recall"] == 0.0 and r["f1"] == 0.0
    assert r["far_pct"] == 0.0 and r["mar_pct"] == 100.0  # SKAB's null-detector row
    assert r["events_detected"] == 0 and r["events_missed"] == 2
    assert r["event_precision"] is None and r["event_recall"] == 0.0 and r["event_f1"] == 0.0
    assert r["point_adjusted_f1_optimistic"] == 0.0
    assert r["detection_delay_rows_median"] is None and r["detection_delay_ms_mean"] is None
    assert r["false_alarms_per_day"] == 0.0
    assert r["nab_standard"] == r["nab_low_fp"] == r["nab_low_fn"] == 0.0
    assert r["nab_missed_changepoints"] == 2


def test_one_delayed_detection() -> None:
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 0])
    predictions = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    r = evaluate(labels, predictions, ts_ms=seconds(8))
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 0, 2, 4)
    assert r["precision"] == 1.0 and r["recall"] == 0.5
    assert r["f1"] == pytest.approx(2 / 3)
    assert r["mar_pct"] == 50.0
    assert r["event_f1"] == 1.0
    assert r["point_adjusted_f1_optimistic"] == 1.0  # the whole segment counts once touched
    assert r["detection_delay_rows_median"] == 2.0 and r["detection_delay_rows_mean"] == 2.0
    assert r["detection_delay_ms_median"] == 2_000.0
    # NAB: the alarm comes 2 s into the 60 s window: position int(2/60 * 1000) = 33.
    for key, profile in [("nab_standard", "standard"), ("nab_low_fn", "low_fn")]:
        p = NAB_PROFILES[profile]
        expected = normalised(nab_curve_at(33, p.a_tp, p.a_fp), 1, p.a_tp, p.a_fn)
        assert r[key] == pytest.approx(expected, abs=1e-9)
    assert 95 < float(r["nab_standard"] or 0) < 100


def test_one_false_event() -> None:
    predictions = LABELS.copy()
    predictions[18:20] = 1  # a predicted event far from both labelled events
    r = evaluate(LABELS, predictions, ts_ms=seconds(20))
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (5, 2, 0, 13)
    assert r["events_predicted"] == 3 and r["events_false"] == 1
    assert r["event_precision"] == pytest.approx(2 / 3) and r["event_recall"] == 1.0
    assert r["event_f1"] == pytest.approx(0.8)
    assert r["false_alarms_per_day"] == pytest.approx(1 / (19 * STEP_MS / MS_PER_DAY))
    # NAB with 5 s windows [3 s, 8 s] and [12 s, 17 s]: both hit at their changepoint, and
    # the alarm at 18 s lies outside every window.
    r = evaluate(LABELS, predictions, ts_ms=seconds(20), nab_window_ms=5_000)
    assert r["nab_false_positives"] == 1 and r["nab_missed_changepoints"] == 0
    assert r["nab_standard"] == pytest.approx(normalised(2 - 0.11, 2, 1.0, -1.0))
    assert r["nab_low_fp"] == pytest.approx(normalised(2 - 0.22, 2, 1.0, -1.0))
    assert r["nab_low_fn"] == pytest.approx(normalised(2 - 0.11, 2, 1.0, -2.0))


def test_far_mar_on_a_known_confusion_matrix() -> None:
    # TP=3, FP=2, FN=1, TN=4, in shuffled order.
    labels = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    predictions = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 0])
    r = evaluate(labels, predictions)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (3, 2, 1, 4)
    assert r["far_pct"] == pytest.approx(2 / (2 + 4) * 100)
    assert r["mar_pct"] == pytest.approx(1 / (1 + 3) * 100)
    assert r["f1"] == pytest.approx(3 / (3 + (1 + 2) / 2))  # SKAB's TP / (TP + (FN + FP) / 2)
    assert r["precision"] == pytest.approx(3 / 5) and r["recall"] == pytest.approx(3 / 4)


def test_tolerance_counts_a_detection_just_after_the_label() -> None:
    labels = np.array([0, 1, 1, 0, 0, 0, 0, 0])
    predictions = np.array([0, 0, 0, 0, 1, 0, 0, 0])  # 2 s after the last labelled row
    strict = evaluate(labels, predictions, ts_ms=seconds(8))
    assert strict["events_detected"] == 0 and strict["events_false"] == 1
    loose = evaluate(labels, predictions, ts_ms=seconds(8), tolerance_ms=2_000)
    assert loose["events_detected"] == 1 and loose["events_false"] == 0
    assert loose["event_f1"] == 1.0 and loose["detection_delay_rows_median"] == 3.0
    assert loose["f1"] == strict["f1"] == 0.0  # point-wise metrics ignore the tolerance
    short = evaluate(labels, predictions, ts_ms=seconds(8), tolerance_ms=1_999)
    assert short["events_detected"] == 0


def test_nab_cut_right_window_and_first_alarm_only() -> None:
    # Changepoints at 0 s and 30 s with 60 s windows: the second window becomes [60 s, 90 s].
    ts = T0 + np.arange(0, 100_000, 1_000, dtype=np.int64)
    cps = np.zeros(ts.size, dtype=np.int64)
    cps[[0, 30]] = 1
    alarms = np.zeros(ts.size, dtype=np.int64)
    alarms[[30, 32, 80]] = 1  # 30 s: first alarm of window 1; 32 s: ignored; 80 s: window 2
    r = nab_score(np.zeros(ts.size), alarms, ts, changepoints=cps)
    p = NAB_PROFILES["standard"]
    raw = nab_curve_at(500, p.a_tp, p.a_fp) + nab_curve_at(666, p.a_tp, p.a_fp)
    assert r["standard"] == pytest.approx(normalised(raw, 2, p.a_tp, p.a_fn), abs=1e-9)


def test_nab_close_changepoints_cost_a_perfect_detector_under_skab_default() -> None:
    # Onsets at 3 s and 12 s with 60 s windows. SKAB's default "cut right window" makes the
    # second window [63 s, 72 s]: the perfect alarm at 12 s is a second alarm in the first
    # window, and the second window is missed. "cut left window" ends the first at 12 s.
    ts = seconds(20)
    right = nab_score(LABELS, LABELS, ts)
    assert right["standard"] == pytest.approx(normalised(1 - 1, 2, 1.0, -1.0))  # 50
    assert nab_score(LABELS, LABELS, ts, overlap="cut_left")["standard"] == pytest.approx(100.0)
    # Windows that only touch (9 s) share the boundary row; one more ms and the cut bites.
    assert nab_score(LABELS, LABELS, ts, window_ms=9_001)["standard"] == pytest.approx(50.0)
    assert nab_score(LABELS, LABELS, ts, window_ms=9_000)["standard"] == pytest.approx(100.0)


def test_nab_both_edges_mode_takes_run_ends_as_changepoints() -> None:
    labels = np.array([0, 1, 1, 1, 0, 0])
    ts = seconds(6)
    assert evaluate(labels, labels, ts_ms=ts, nab_edges="both")["nab_changepoints"] == 2
    assert evaluate(labels, labels, ts_ms=ts)["nab_changepoints"] == 1
    # Predicting only the onset misses the end changepoint in "both" mode.
    onset_only = np.array([0, 1, 1, 1, 1, 1])
    both = nab_score(labels, onset_only, ts, edges="both", window_ms=500)
    assert both["standard"] == pytest.approx(50.0)


@pytest.mark.parametrize("overlap", ["cut_right", "cut_left"])
@pytest.mark.parametrize("edges", ["onset", "both"])
@pytest.mark.parametrize("profile", list(NAB_PROFILES))
def test_nab_perfect_is_100_and_null_is_0(
    edges: EdgeMode, overlap: OverlapMode, profile: str
) -> None:
    rng = np.random.default_rng(7)
    n = 3_000
    labels = np.zeros(n, dtype=np.int64)
    # Events and gaps longer than the 60 s window: closer changepoints share a cut window in
    # SKAB's scheme, where even a perfect detector loses the later one.
    for start in rng.choice(np.arange(0, n - 150, 300), size=8, replace=False):
        labels[start : start + rng.integers(80, 120)] = 1
    ts = T0 + np.cumsum(rng.integers(500, 1_500, n)).astype(np.int64)
    assets = np.where(np.arange(n) % 3 == 0, "pump-1", "pump-2")
    perfect = nab_score(labels, labels, ts, edges=edges, overlap=overlap, assets=assets)
    null = nab_score(labels, np.zeros(n), ts, edges=edges, overlap=overlap, assets=assets)
    assert perfect[profile] == pytest.approx(100.0)
    assert null[profile] == pytest.approx(0.0)


def test_nab_is_undefined_without_changepoints_and_without_timestamps() -> None:
    r = nab_score(np.zeros(5), np.array([0, 1, 0, 0, 0]), seconds(5))
    assert r == dict.fromkeys(NAB_PROFILES)
    report = evaluate(LABELS, LABELS)
    assert report["nab_standard"] is None and report["false_alarms_per_day"] is None
    assert report["detection_delay_ms_median"] is None
    assert report["detection_delay_rows_median"] == 0.0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_point_adjusted_f1_is_never_below_pointwise_f1(data: st.DataObject) -> None:
    labels = data.draw(binary_lists)
    predictions = data.draw(st.lists(st.integers(0, 1), min_size=len(labels), max_size=len(labels)))
    r = evaluate(labels, predictions)
    if r["f1"] is None:
        assert r["point_adjusted_f1_optimistic"] is None
    else:
        assert float(r["point_adjusted_f1_optimistic"] or 0) >= float(r["f1"]) - 1e-12


EVENT_KEYS = ("events_labelled", "events_detected", "events_predicted", "events_false", "event_f1")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_event_metrics_invariances(data: st.DataObject) -> None:
    labels = np.array(data.draw(binary_lists))
    n = labels.size
    predictions = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    pad = data.draw(st.integers(0, 5))
    shift_ms = data.draw(st.integers(-(10**12), 10**12))
    base = evaluate(labels, predictions, ts_ms=seconds(n))
    expected = [base[k] for k in EVENT_KEYS]

    # Adding normal rows around the series changes nothing event-wise.
    padded = evaluate(np.pad(labels, pad), np.pad(predictions, pad), ts_ms=seconds(n + 2 * pad))
    assert [padded[k] for k in EVENT_KEYS] == expected
    # Neither does moving the whole series in time.
    moved = evaluate(labels, predictions, ts_ms=seconds(n) + shift_ms)
    assert [moved[k] for k in EVENT_KEYS] == expected
    # Overlap is symmetric, so playing the series backwards keeps every count.
    backwards = evaluate(labels[::-1], predictions[::-1], ts_ms=seconds(n))
    assert [backwards[k] for k in EVENT_KEYS] == expected


def test_event_f1_ignores_how_much_of_an_event_is_predicted() -> None:
    labels = np.array([0, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    one_row = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    all_rows = labels.copy()
    a, b = evaluate(labels, one_row), evaluate(labels, all_rows)
    assert a["event_f1"] == b["event_f1"] == 1.0
    assert float(a["f1"] or 0) < float(b["f1"] or 0)


def test_multi_asset_aggregation_equals_manual_sums() -> None:
    rng = np.random.default_rng(11)
    names = np.array(["pump-1", "pump-2", "valve-9"])
    n = 4_000
    assets = names[rng.integers(0, 3, n)]
    labels = np.zeros(n, dtype=np.int64)
    for start in rng.integers(0, n - 80, 12):
        labels[start : start + rng.integers(10, 80)] = 1
    predictions = (labels & (rng.random(n) < 0.6)) | (rng.random(n) < 0.02)
    ts = T0 + np.arange(n, dtype=np.int64) * 250  # interleaved: each asset sees gaps
    scores = rng.random(n) + labels

    total = evaluate(
        labels, predictions, ts_ms=ts, scores=scores, assets=assets, tolerance_ms=1_000
    )
    parts = [
        evaluate(
            labels[assets == a], predictions[assets == a], ts_ms=ts[assets == a], tolerance_ms=1_000
        )
        for a in names
    ]
    by_asset = evaluate_by_asset(
        labels, predictions, assets, ts_ms=ts, scores=scores, tolerance_ms=1_000
    )
    assert sorted(by_asset) == sorted(names.tolist())
    assert total["assets"] == 3
    for key in ("rows", "tp", "fp", "fn", "tn", "events_labelled", "events_detected"):
        assert total[key] == sum(int(p[key] or 0) for p in parts)
    for key in ("events_predicted", "events_false", "nab_changepoints", "nab_false_positives"):
        assert total[key] == sum(int(p[key] or 0) for p in parts)
    for a, part in zip(names, parts, strict=True):
        assert by_asset[str(a)]["f1"] == part["f1"]
        assert by_asset[str(a)]["auc_roc"] == auc_roc(labels[assets == a], scores[assets == a])
    tp, fp, fn = (int(total[k] or 0) for k in ("tp", "fp", "fn"))
    assert total["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    span_days = sum(float(p["span_days"] or 0) for p in parts)
    assert total["span_days"] == pytest.approx(span_days)
    events_false = sum(int(p["events_false"] or 0) for p in parts)
    assert total["false_alarms_per_day"] == pytest.approx(events_false / span_days)
    # NAB: raw scores add up over assets before normalisation.
    for key, profile in [("nab_standard", "standard"), ("nab_low_fn", "low_fn")]:
        p = NAB_PROFILES[profile]
        raw = null = perfect = 0.0
        for part in parts:
            k = int(part["nab_changepoints"] or 0)
            lo, hi = k * p.a_fn, k * p.a_tp
            raw += lo + float(part[key] or 0) / 100 * (hi - lo)
            null, perfect = null + lo, perfect + hi
        assert total[key] == pytest.approx(100 * (raw - null) / (perfect - null))
    assert total["auc_roc"] == auc_roc(labels, scores)


def test_assets_may_interleave_in_any_order() -> None:
    labels = np.array([1, 1, 0, 0, 0, 0, 1, 0])
    predictions = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    assets = np.array(["a", "b", "a", "b", "a", "b", "a", "b"])
    ts = np.array([0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int64) * 1_000 + T0
    mixed = evaluate(labels, predictions, ts_ms=ts, assets=assets)
    order = np.argsort(assets, kind="stable")
    grouped = evaluate(labels[order], predictions[order], ts_ms=ts[order], assets=assets[order])
    assert mixed == grouped
    # Rows 0 (asset a) and 1 (asset b) are one run only if assets are ignored.
    assert mixed["events_labelled"] == 3
    assert evaluate(labels, predictions)["events_labelled"] == 2


def test_auc_roc_hand_cases_and_ties() -> None:
    assert auc_roc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc_roc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    # Pairs (pos, neg): (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.1) = 1, (0.9 vs both) = 2 → 3.5 / 4.
    assert auc_roc([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9]) == pytest.approx(3.5 / 4)
    assert auc_roc([0, 1, 1], [0.2, np.nan, 0.7]) == 1.0  # NaN rows left out
    assert auc_roc([1, 1], [0.2, 0.3]) is None


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_auc_roc_equals_pairwise_count(data: st.DataObject) -> None:
    labels = np.array(data.draw(binary_lists))
    scores = np.array(
        data.draw(st.lists(st.integers(0, 6), min_size=labels.size, max_size=labels.size)),
        dtype=np.float64,
    )
    pos, neg = scores[labels == 1], scores[labels == 0]
    result = auc_roc(labels, scores)
    if pos.size == 0 or neg.size == 0:
        assert result is None
        return
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert result == pytest.approx(wins / (pos.size * neg.size))


def test_report_is_strict_json() -> None:
    r = evaluate(LABELS, LABELS, ts_ms=seconds(20), scores=np.arange(20.0))
    back = json.loads(json.dumps(r, allow_nan=False))
    assert back == r
    assert all(isinstance(v, int | float | str) or v is None for v in r.values())


def test_runs_and_empty_input() -> None:
    starts, ends = runs(np.array([1, 1, 0, 1]))
    assert starts.tolist() == [0, 3] and ends.tolist() == [2, 4]
    r = evaluate(np.zeros(0), np.zeros(0), ts_ms=np.zeros(0, dtype=np.int64))
    assert r["rows"] == 0 and r["f1"] is None and r["far_pct"] is None


def test_inputs_are_checked_with_actionable_errors() -> None:
    with pytest.raises(ValueError, match="rows but labels has"):
        evaluate([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="only 0 and 1; row 1"):
        evaluate([0, 2], [0, 1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        evaluate([0.0, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="must not decrease"):
        evaluate([0, 1, 0], [0, 1, 0], ts_ms=[T0, T0 + 2, T0 + 1])
    with pytest.raises(ValueError, match="tolerance_ms needs ts_ms"):
        evaluate([0, 1], [0, 1], tolerance_ms=10)
    with pytest.raises(ValueError, match="NAB edges"):
        evaluate([0, 1], [0, 1], nab_edges="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NAB window must be positive"):
        evaluate([0, 1], [0, 1], nab_window_ms=0)
    with pytest.raises(ValueError, match="one asset id per row"):
        evaluate([0, 1], [0, 1], assets=["a"])

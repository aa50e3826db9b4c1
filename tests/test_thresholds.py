"""Contract and behaviour tests for every threshold kind (models/thresholds/)."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.thresholds import (
    CRITICAL,
    WARNING,
    DSPOTThreshold,
    FixedThreshold,
    P2Quantile,
    QuantileThreshold,
    SPOTThreshold,
    Threshold,
    ThresholdConfig,
    ThresholdKind,
    fit_gpd,
    make_threshold,
    restore,
)

KINDS: tuple[ThresholdKind, ...] = ("fixed", "quantile", "spot", "dspot")


def _state_without_count(th: Threshold) -> dict[str, Any]:
    snap = th.snapshot()
    snap.pop("n_seen")
    return snap


def _json_round_trip(snap: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(snap, allow_nan=False))
    return loaded


@pytest.mark.parametrize("kind", KINDS)
def test_false_alarm_rate_on_iid_scores_stays_near_q_without_drifting(kind: ThresholdKind) -> None:
    # Exponential scores: the 1 - q quantile is ln(1/q), and for the quantile kind the
    # defaults (quantile 0.99, margin 1.5) put the threshold at 1.5 ln 100 = ln 1000, i.e. the
    # same 1e-3 rate. Each half of the stream is checked on its own: a threshold that slides
    # down over time (learning only what it did not flag) fails the second half.
    q = 1e-3
    rng = np.random.default_rng(7)
    config = ThresholdConfig(kind=kind, q=q)
    threshold = make_threshold(config, rng.exponential(size=20_000))
    _, anomalous, _ = threshold.update(rng.exponential(size=200_000))
    for half in (anomalous[:100_000], anomalous[100_000:]):
        rate = float(half.mean())
        assert q / 3 <= rate <= 3 * q, f"{kind}: false-alarm rate {rate:.2e} for q={q}"
    assert abs(threshold.value - math.log(1 / q)) < 0.25 * math.log(1 / q)


@pytest.mark.parametrize("kind", ["spot", "dspot"])
def test_spot_false_alarm_rate_on_gamma_scores(kind: ThresholdKind) -> None:
    q = 1e-3
    rng = np.random.default_rng(11)
    threshold = make_threshold(ThresholdConfig(kind=kind, q=q), rng.gamma(2.0, size=5000))
    _, anomalous, severity = threshold.update(rng.gamma(2.0, size=200_000))
    assert q / 3 <= anomalous.mean() <= 3 * q
    # Critical is the far tail: far rarer than warnings on normal data.
    assert (severity == CRITICAL).sum() <= 0.2 * anomalous.sum()


@pytest.mark.parametrize("kind", KINDS)
def test_clear_outlier_is_anomalous_critical_and_not_learned(kind: ThresholdKind) -> None:
    rng = np.random.default_rng(3)
    threshold = make_threshold(
        ThresholdConfig(kind=kind, q=1e-3, depth=50),
        rng.exponential(size=5000),
    )
    threshold.update(rng.exponential(size=1000))
    before_value, before_state = threshold.value, _state_without_count(threshold)
    thresholds, anomalous, severity = threshold.update([1000.0])
    assert anomalous.tolist() == [True]
    assert severity.tolist() == [CRITICAL]
    assert thresholds[0] == before_value
    assert threshold.value == before_value
    assert _state_without_count(threshold) == before_state


@pytest.mark.parametrize("kind", KINDS)
def test_scores_flagged_not_to_learn_are_judged_but_not_learned(kind: ThresholdKind) -> None:
    rng = np.random.default_rng(4)
    threshold = make_threshold(
        ThresholdConfig(kind=kind, q=1e-3, depth=50),
        rng.exponential(size=5000),
    )
    before = _state_without_count(threshold)
    scores = np.r_[rng.exponential(size=500), 5000.0]
    _, anomalous, _ = threshold.update(scores, learn=np.zeros(scores.size, dtype=bool))
    assert anomalous[-1]
    assert _state_without_count(threshold) == before


@pytest.mark.parametrize("kind", KINDS)
def test_grace_period_counts_calibration_scores(kind: ThresholdKind) -> None:
    rng = np.random.default_rng(5)
    grace = 1500
    config = ThresholdConfig(kind=kind, q=1e-3, grace=grace, depth=20, fixed_value=5.0)
    threshold = make_threshold(config, rng.exponential(size=1000))
    scores = rng.exponential(size=2000)
    scores[[10, 250, 499]] = 30.0  # inside the grace period: 1000 calibration + 500 online
    scores[700] = 1e4
    _, anomalous, _ = threshold.update(scores)
    assert not anomalous[: grace - 1000].any()
    assert anomalous[700]


@pytest.mark.parametrize("kind", KINDS)
def test_enough_calibration_scores_mean_no_grace_online(kind: ThresholdKind) -> None:
    rng = np.random.default_rng(6)
    config = ThresholdConfig(kind=kind, q=1e-3, grace=1000, depth=20)
    threshold = make_threshold(config, rng.exponential(size=3000))
    thresholds, anomalous, _ = threshold.update([1e4, 0.1])
    assert anomalous.tolist() == [True, False]
    assert np.isfinite(thresholds).all()


@pytest.mark.parametrize("kind", ["spot", "dspot"])
def test_spot_without_calibration_reports_inf_until_it_can_fit(kind: ThresholdKind) -> None:
    rng = np.random.default_rng(8)
    config = ThresholdConfig(kind=kind, q=1e-3, grace=0, depth=20)
    threshold = make_threshold(config)
    assert threshold.value == math.inf
    needed = math.ceil(10 / (1 - config.level)) + (config.depth if kind == "dspot" else 0)
    thresholds, anomalous, _ = threshold.update(rng.exponential(size=needed + 10))
    assert np.isinf(thresholds[:needed]).all() and not anomalous[:needed].any()
    assert np.isfinite(thresholds[needed:]).all()


def test_dspot_follows_a_drifting_baseline_with_far_fewer_false_alarms_than_spot() -> None:
    rng = np.random.default_rng(9)
    n, slope, q = 30_000, 3e-4, 1e-3
    calibration = rng.exponential(size=5000)
    scores = rng.exponential(size=n) + slope * np.arange(n)  # the level rises by 9 scales
    alarms = {}
    for kind in ("spot", "dspot"):
        threshold = make_threshold(ThresholdConfig(kind=kind, q=q, depth=200), calibration)
        thresholds, anomalous, _ = threshold.update(scores)
        alarms[kind] = int(anomalous.sum())
        if kind == "dspot":
            # The reported threshold is in score units and rises with the level.
            assert thresholds[-1] - thresholds[0] > 0.8 * slope * n
    assert alarms["dspot"] <= 3 * q * n
    assert alarms["spot"] >= 5 * alarms["dspot"], alarms


@pytest.mark.parametrize("kind", ["spot", "dspot"])
def test_peak_storage_is_bounded(kind: ThresholdKind) -> None:
    rng = np.random.default_rng(10)
    config = ThresholdConfig(kind=kind, q=1e-3, level=0.9, max_peaks=100, depth=20)
    threshold = make_threshold(config, rng.exponential(size=2000))
    threshold.update(rng.exponential(size=100_000))
    assert isinstance(threshold, SPOTThreshold | DSPOTThreshold)
    assert threshold.peaks_stored == 100
    assert len(threshold.snapshot()["tail"]["peaks"]) == 100


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_follows_the_protocol_and_snapshots_as_strict_json(kind: ThresholdKind) -> None:
    config = ThresholdConfig(kind=kind, q=1e-3, fixed_value=3.0)
    for calibration in (np.zeros(0), np.random.default_rng(0).exponential(size=3000)):
        threshold = make_threshold(config, calibration)
        assert isinstance(threshold, Threshold)
        snap = _json_round_trip(threshold.snapshot())
        assert snap["kind"] == kind and snap["v"] == 1
        assert restore(snap).snapshot() == threshold.snapshot()


_stream_cases = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "seed": st.integers(0, 2**32 - 1),
        "calibration": st.integers(0, 1500),
        "length": st.integers(1, 3000),
        "grace": st.integers(0, 800),
        "depth": st.integers(1, 40),
        "max_peaks": st.integers(10, 60),
        "level": st.sampled_from([0.9, 0.95, 0.98]),
        "q": st.sampled_from([1e-3, 1e-2]),
        "outlier_rate": st.sampled_from([0.0, 0.01, 0.1]),
        "skip_rate": st.sampled_from([0.0, 0.05, 0.5]),
        "cut_at": st.floats(0.0, 1.0),
        "pieces": st.integers(1, 6),
    }
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_stream_cases)
def test_snapshot_restore_continues_bit_identically_whatever_the_batches(
    case: dict[str, Any],
) -> None:
    rng = np.random.default_rng(case["seed"])
    config = ThresholdConfig(
        kind=case["kind"],
        q=case["q"],
        level=case["level"],
        grace=case["grace"],
        depth=case["depth"],
        max_peaks=case["max_peaks"],
        refit_every_peaks=8,
    )
    calibration = rng.exponential(size=case["calibration"])
    if case["kind"] == "fixed" and calibration.size == 0:
        calibration = rng.exponential(size=50)
    n = case["length"]
    scores = rng.exponential(size=n) + rng.normal(0.0, 0.01, size=n).cumsum()
    outliers = rng.random(n) < case["outlier_rate"]
    scores[outliers] += rng.exponential(30.0, size=int(outliers.sum()))
    learn = rng.random(n) >= case["skip_rate"]

    whole = make_threshold(config, calibration)
    expected = whole.update(scores, learn)

    cut = int(case["cut_at"] * n)
    first = make_threshold(config, calibration)
    outputs = [first.update(scores[:cut], learn[:cut])]
    resumed = restore(_json_round_trip(first.snapshot()))
    bounds = np.unique(np.r_[cut, np.sort(rng.integers(cut, n + 1, case["pieces"] - 1)), n])
    for lo, hi in itertools.pairwise(bounds):
        outputs.append(resumed.update(scores[lo:hi], learn[lo:hi]))
    # Short batches take a per-score loop, long ones numpy: both must agree to the bit.
    trickle = make_threshold(config, calibration)
    trickled, lo = [], 0
    while lo < n:
        hi = lo + int(rng.integers(1, 40))
        trickled.append(trickle.update(scores[lo:hi], learn[lo:hi]))
        lo = hi
    for parts in (outputs, trickled):
        for i, name in enumerate(("thresholds", "anomalous", "severity")):
            got = np.concatenate([o[i] for o in parts])
            assert got.dtype == expected[i].dtype, name
            assert np.array_equal(got, expected[i]), name
    assert resumed.snapshot() == whole.snapshot() == trickle.snapshot()


def test_fit_gpd_recovers_known_parameters() -> None:
    rng = np.random.default_rng(12)
    gamma, sigma = 0.2, 1.5
    u = rng.random(20_000)
    sample = sigma / gamma * (u ** (-gamma) - 1.0)  # GPD(γ, σ) by inverse transform
    fitted_gamma, fitted_sigma = fit_gpd(sample)
    assert abs(fitted_gamma - gamma) < 0.04
    assert abs(fitted_sigma - sigma) < 0.08


def test_fit_gpd_with_caps_undoes_the_truncation_that_protection_causes() -> None:
    # What SPOT sees when it never learns a flagged score: the top of the tail is missing.
    rng = np.random.default_rng(13)
    sample = rng.exponential(size=20_000)
    cap = 3.0  # removes 5% of the excesses, as q/(1-level) = 1e-3/0.02 does
    kept = sample[sample <= cap]
    naive_gamma, _ = fit_gpd(kept)
    gamma, sigma = fit_gpd(kept, np.full(kept.size, cap))
    assert naive_gamma < -0.15  # fitted as complete, the tail looks bounded
    assert abs(gamma) < 0.06 and abs(sigma - 1.0) < 0.08


def test_p2_quantile_tracks_the_empirical_quantile() -> None:
    rng = np.random.default_rng(14)
    data = rng.exponential(size=50_000)
    estimator = P2Quantile(0.99)
    for x in data.tolist():
        estimator.add(x)
    estimate = estimator.get()
    assert estimate is not None
    assert abs(estimate - np.quantile(data, 0.99)) < 0.03 * np.quantile(data, 0.99)


def test_fixed_threshold_value_and_ratio_severity() -> None:
    config = ThresholdConfig(kind="fixed", q=0.01, grace=0)
    calibration = np.arange(1000, dtype=float)
    threshold = FixedThreshold.from_calibration(config, calibration)
    assert threshold.value == pytest.approx(np.quantile(calibration, 0.99))
    # Fewer than 1/q scores: the largest one is the floor.
    few = FixedThreshold.from_calibration(config, np.arange(50, dtype=float))
    assert few.value == 49.0
    _, anomalous, severity = few.update([10.0, 60.0, 98.0])
    assert anomalous.tolist() == [False, True, True]
    assert severity.tolist() == [0, WARNING, CRITICAL]


def test_quantile_threshold_is_margin_times_the_learned_quantile() -> None:
    config = ThresholdConfig(kind="quantile", quantile=0.5, margin=2.0, grace=0)
    threshold = QuantileThreshold(config, np.arange(1.0, 102.0))
    assert threshold.value == pytest.approx(102.0)
    # A signed score's negative quantile is raised by the margin, not lowered.
    signed = QuantileThreshold(config, -np.arange(1.0, 102.0))
    assert signed.value == pytest.approx(-51.0 + 51.0)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"kind": "spot", "q": 0.05, "level": 0.98}, "below 1 - level"),
        ({"q": 1e-4, "critical_q": 1e-3}, "critical_q"),
        ({"kind": "median"}, "Invalid enum value"),
        ({"q": 1.5}, r"\$\.q"),
        ({"q": 0.0}, r"\$\.q"),
        ({"level": 1.0}, r"\$\.level"),
        ({"depth": 0}, r"\$\.depth"),
        ({"depth": 2.5}, r"\$\.depth"),
        ({"grace": -1}, r"\$\.grace"),
        ({"critical_q": 0.0}, r"\$\.critical_q"),
        ({"fixed_value": math.inf}, r"\$\.fixed_value"),
        ({"fixed_value": math.nan}, r"\$\.fixed_value"),
        ({"quantile": 1.0}, r"\$\.quantile"),
        ({"margin": 0.9}, r"\$\.margin"),
        ({"critical_ratio": 1.0}, r"\$\.critical_ratio"),
        ({"max_peaks": 9}, r"\$\.max_peaks"),
        ({"refit_every_peaks": 0}, r"\$\.refit_every_peaks"),
        ({"refit_growth": -0.1}, r"\$\.refit_growth"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_config_is_validated_when_converted(values: dict[str, Any], reason: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=reason):
        msgspec.convert(values, ThresholdConfig)
    with pytest.raises(ValueError, match=reason):  # ValidationError is a ValueError
        ThresholdConfig.validated(**values)


def test_config_defaults_validate_and_round_trip_through_json() -> None:
    for kind in KINDS:
        config = ThresholdConfig.validated(kind=kind, q=1e-3, fixed_value=2)
        assert config.fixed_value == 2.0 and isinstance(config.fixed_value, float)
        assert ThresholdConfig.from_json(_json_round_trip(config.to_json())) == config
    assert ThresholdConfig.validated() == ThresholdConfig()
    # Calling the class does not check ranges; make_threshold does, before deciding anything.
    with pytest.raises(msgspec.ValidationError, match=r"\$\.q"):
        make_threshold(ThresholdConfig(kind="quantile", q=5.0), np.ones(10))


def test_dspot_is_spot_over_a_moving_average_with_spot_snapshot_fields() -> None:
    rng = np.random.default_rng(15)
    config = ThresholdConfig(kind="dspot", q=1e-3, depth=30)
    dspot = make_threshold(config, rng.exponential(size=3000))
    spot = make_threshold(msgspec.structs.replace(config, kind="spot"), np.zeros(0))
    assert isinstance(dspot, SPOTThreshold)
    # The v1 layout old snapshots were written in: SPOT's fields plus the moving average's.
    assert set(dspot.snapshot()) == set(spot.snapshot()) | {"ring", "head", "sum"}
    assert len(dspot.snapshot()["ring"]) == 30


def test_invalid_inputs_raise_with_a_reason() -> None:
    threshold = make_threshold(
        ThresholdConfig(q=1e-3), np.random.default_rng(0).exponential(size=2000)
    )
    with pytest.raises(ValueError, match="finite"):
        threshold.update([1.0, float("nan")])
    with pytest.raises(ValueError, match="one flag per score"):
        threshold.update([1.0, 2.0], learn=[True])
    with pytest.raises(ValueError, match="fixed_value or calibration"):
        make_threshold(ThresholdConfig(kind="fixed"))
    snap = threshold.snapshot()
    with pytest.raises(ValueError, match="version"):
        restore({**snap, "v": 2})
    with pytest.raises(msgspec.ValidationError, match="unknown field `colour`"):
        restore({**snap, "config": {**snap["config"], "colour": "red"}})
    with pytest.raises(ValueError, match="either a calibration buffer or a tail"):
        restore({**snap, "buffer": [1.0]})
    dspot = make_threshold(ThresholdConfig(kind="dspot", depth=5), np.ones(100)).snapshot()
    with pytest.raises(ValueError, match="ring has 4 values but depth is 5"):
        restore({**dspot, "ring": dspot["ring"][:4]})


@pytest.mark.parametrize("kind", ["spot", "dspot"])
def test_a_slowly_growing_fault_does_not_leave_the_threshold_blind(kind: str) -> None:
    # Scores that grow 500-fold over 20,000 windows stay just under a threshold that moves
    # with them; learned as peaks they would fatten the tail until nothing was anomalous.
    rng = np.random.default_rng(0)
    calibration = rng.exponential(size=5000)
    results = {}
    for growth in (30.0, 1e9):  # the default, and no cap at all
        th = make_threshold(ThresholdConfig(kind=kind, max_tail_growth=growth), calibration)
        first = th.value
        th.update(np.geomspace(1, 500, 20_000) * rng.exponential(size=20_000))
        th.update(rng.exponential(size=20_000))  # the fault is over
        _, anomalous, _ = th.update(np.full(10, 50.0 * first))  # a plain fault after it
        results[growth] = (th.value / first, bool(anomalous.all()))
    assert results[30.0][0] <= 30.5 and results[30.0][1], results
    assert results[1e9][0] > 100 and not results[1e9][1], results  # what the cap prevents


@pytest.mark.parametrize("kind", ["spot", "dspot", "quantile", "fixed"])
@pytest.mark.parametrize("calibration", [0, 300, 5000])
def test_a_copy_judges_exactly_like_the_original_and_shares_nothing_it_writes(
    kind: str, calibration: int
) -> None:
    """``Monitor._judge`` judges a run again from a copy when its alert opens or resolves
    mid-run: the copy (SPOT/DSPOT's own cheap ``__deepcopy__``) must continue exactly as the
    original would, and writing to it must change nothing in the original — in the grace
    period (buffering), on a thin calibration (the bridge) and calibrated, with rings small
    enough to wrap."""
    import copy

    from models.thresholds.config import MIN_PEAKS
    from models.thresholds.factory import restore

    rng = np.random.default_rng(calibration)
    config = ThresholdConfig(
        kind=kind, fixed_value=3.0 if kind == "fixed" else None, max_peaks=MIN_PEAKS, depth=20
    )
    original = make_threshold(config, rng.exponential(size=calibration))
    original.update(rng.exponential(size=700), learn=rng.random(700) < 0.9)
    reference = restore(original.snapshot())  # independent by construction
    twin = copy.deepcopy(original)

    def stream(seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        x = np.r_[r.exponential(size=900), np.full(20, 40.0), r.exponential(size=600)]
        return x, r.random(x.size) < 0.95

    # The twin and the original go different ways; the original must behave as if the
    # twin never existed, and the twin as the original would have on its scores.
    mine, theirs = stream(1), stream(2)
    twin_verdicts = twin.update(*theirs)
    for a, b in zip(original.update(*mine), reference.update(*mine), strict=True):
        np.testing.assert_array_equal(a, b)
    assert json.dumps(original.snapshot(), sort_keys=True) == json.dumps(
        reference.snapshot(), sort_keys=True
    )
    fresh = make_threshold(config, np.random.default_rng(calibration).exponential(size=calibration))
    r0 = np.random.default_rng(calibration)
    r0.exponential(size=calibration)
    fresh.update(r0.exponential(size=700), learn=r0.random(700) < 0.9)
    for a, b in zip(twin_verdicts, fresh.update(*theirs), strict=True):
        np.testing.assert_array_equal(a, b)

"""Sensor health: each rule on a synthetic fault, silence on normal data, batch-cut invariance."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.events import SENSOR_RULES
from alerts.policy import AlertConfig, AlertPolicy
from models.health import (
    MIN_TRAINING_READINGS,
    RULES,
    HealthFindings,
    SensorHealth,
    SensorHealthConfig,
    SensorHealthProfile,
)

T0 = 1_795_899_600_000
Gen = Callable[[np.random.Generator, int], np.ndarray]


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(50.0, 1.0, n)


def ar(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    e = rng.normal(0.0, sd, n)
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def quantised(rng: np.random.Generator, n: int) -> np.ndarray:
    """A slow process read at 0.1 resolution: values repeat for short stretches."""
    return np.round(20.0 + ar(rng, n, 0.99, 0.05), 1)


def setpoint(rng: np.random.Generator, n: int) -> np.ndarray:
    """A set point: held at one of a few levels for long, random stretches."""
    out: list[float] = []
    while len(out) < n:
        out += [float(rng.choice([30.0, 40.0, 45.0, 50.0]))] * int(rng.exponential(300) + 1)
    return np.array(out[:n])


def tracking(rng: np.random.Generator, n: int) -> np.ndarray:
    """A process value following set-point steps with a lag, plus sensor noise."""
    sp = setpoint(rng, n)
    x = np.empty(n)
    x[0] = sp[0]
    for i in range(1, n):
        x[i] = x[i - 1] + 0.05 * (sp[i] - x[i - 1])
    return x + rng.normal(0.0, 0.2, n)


def heavy(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normal, but heavy-tailed noise (Student-t, 3 degrees of freedom)."""
    return 5.0 + rng.standard_t(3, n)


def hold(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sampled ten times faster than the sensor updates: every value repeats ten times."""
    return np.repeat(rng.normal(0.0, 1.0, n // 10 + 1), 10)[:n]


def onoff(rng: np.random.Generator, n: int) -> np.ndarray:
    out: list[float] = []
    level = 0.0
    while len(out) < n:
        out += [level] * int(rng.exponential(200) + 1)
        level = 1.0 - level
    return np.array(out[:n])


def gappy(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(3.0, 0.5, n)
    x[rng.random(n) < 0.3] = np.nan
    return x


def constant(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.full(n, 7.0)


PROCESSES: dict[str, Gen] = {
    "noise": noise,
    "smooth": lambda rng, n: 50.0 + ar(rng, n, 0.995, 0.1) + rng.normal(0.0, 0.01, n),
    "quantised": quantised,
    "setpoint": setpoint,
    "tracking": tracking,
    "heavy": heavy,
    "hold": hold,
    "sine": lambda rng, n: (
        20.0 + 5.0 * np.sin(np.arange(n) * 2 * np.pi / 2000) + rng.normal(0.0, 0.05, n)
    ),
    "onoff": onoff,
    "counts": lambda rng, n: rng.poisson(1.5, n).astype(np.float64),
    "gappy": gappy,
    "constant": constant,
}
SIGNALS = tuple(PROCESSES)
N_TRAIN = 20_000


def sample(seed: int, n: int) -> np.ndarray:
    return np.column_stack(
        [gen(np.random.default_rng(seed + 7 * j), n) for j, gen in enumerate(PROCESSES.values())]
    )


TRAIN = sample(1, N_TRAIN)
PROFILE = SensorHealthProfile.fit(TRAIN, [(0, N_TRAIN)], SIGNALS)


def col(name: str) -> int:
    return SIGNALS.index(name)


def live(seed: int, n: int) -> np.ndarray:
    return sample(seed, n)


def fired_rows(found: HealthFindings, rule: str, signal: str) -> list[int]:
    return np.flatnonzero(found.fired[rule][:, col(signal)]).tolist()  # type: ignore[index]


def only(found: HealthFindings, rule: str, signal: str) -> None:
    """Nothing but ``rule`` on ``signal`` fires anywhere."""
    for r in RULES:
        for j, s in enumerate(SIGNALS):
            if (r, s) != (rule, signal):
                assert not found.fired[r][:, j].any(), f"{r} fired on {s}"


def test_rules_are_the_alert_contracts_words() -> None:
    assert RULES == SENSOR_RULES


# -- each rule on its fault -------------------------------------------------------------------


def test_stuck_fires_on_a_frozen_sensor_past_its_limit() -> None:
    x = live(100, 600)
    x[300:, col("noise")] = x[299, col("noise")]  # frozen from reading 299 on
    found = SensorHealth(PROFILE).check(x)
    limit = found.limits["stuck"][col("noise")]
    assert limit == 30.0  # a noisy float never repeated long: the absolute minimum rules
    assert fired_rows(found, "stuck", "noise") == list(range(299 + 30, 600))
    assert found.scores["stuck"][329, col("noise")] == 31.0
    only(found, "stuck", "noise")


def test_float_jitter_on_a_frozen_value_is_still_frozen() -> None:
    x = live(101, 400)
    frozen = x[199, col("noise")] + np.random.default_rng(0).normal(0.0, 1e-9, 201)
    x[199:, col("noise")] = frozen
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "stuck", "noise")[0] == 199 + 30


def test_a_quantised_sensor_is_stuck_only_far_past_its_longest_training_run() -> None:
    j = col("quantised")
    longest = int(PROFILE.longest_run[j])
    assert longest > 10  # it legitimately repeats values
    x = live(102, 5_000)
    x[1_000:, j] = x[999, j]
    start = 999  # where the run that reading 999 is in began: quantised values repeat
    while x[start - 1, j] == x[999, j]:
        start -= 1
    found = SensorHealth(PROFILE).check(x)
    assert found.limits["stuck"][j] == 3 * longest
    assert fired_rows(found, "stuck", "quantised")[0] == start + 3 * longest
    only(found, "stuck", "quantised")


def test_a_set_point_held_three_times_longer_than_ever_is_stuck() -> None:
    j = col("setpoint")
    longest = int(PROFILE.longest_run[j])
    x = live(103, 4 * longest)
    x[:, j] = 45.0
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "stuck", "setpoint")[0] == 3 * longest


def test_a_one_reading_spike_is_found_on_the_reading_after_it() -> None:
    x = live(104, 400)
    x[200, col("noise")] += 15.0  # 15 sigma, one reading
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "spike", "noise") == [201]
    assert found.scores["spike"][201, col("noise")] > found.limits["spike"][col("noise")]
    only(found, "spike", "noise")  # too short for out_of_range


@pytest.mark.parametrize("length", [2, 3])
def test_a_spike_of_a_few_readings_is_found_when_it_ends(length: int) -> None:
    x = live(105, 400)
    x[200 : 200 + length, col("sine")] -= 3.0  # 60 sigma of its noise, inside its range
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "spike", "sine") == [200 + length]
    only(found, "spike", "sine")


def test_a_spike_is_judged_against_the_local_band_not_the_global_range() -> None:
    j = col("sine")
    x = live(106, 3_000)
    inside = PROFILE.low[j] + 0.5 * (PROFILE.high[j] - PROFILE.low[j])
    k = int(np.argmin(np.abs(x[1_000:2_000, j] - (inside + 2.0)))) + 1_000
    x[k, j] = x[k, j] - 2.0  # a dip well inside the trained range, but 40 noise sigmas
    found = SensorHealth(PROFILE).check(x)
    assert PROFILE.low[j] < x[k, j] < PROFILE.high[j]
    assert fired_rows(found, "spike", "sine") == [k + 1]


def test_an_excursion_longer_than_a_spike_is_out_of_range_not_a_spike() -> None:
    x = live(107, 400)
    x[200:210, col("noise")] = 200.0
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "spike", "noise") == []
    assert fired_rows(found, "out_of_range", "noise") == list(range(203, 210))


def test_a_level_step_in_one_signal_alone_is_found_and_its_return_is_not() -> None:
    x = live(110, 600)
    j = col("noise")
    x[200:400, j] += 8.0  # 8 sigma, within the envelope's margin, for 200 readings
    found = SensorHealth(PROFILE).check(x)
    # Known once 4 of the 7 readings after it are up; every reading of the run is flagged.
    rows = fired_rows(found, "step", "noise")
    assert rows and rows[0] == 203 and rows == list(range(203, rows[-1] + 1))
    assert found.scores["step"][203, j] > found.limits["step"][j]
    # The way back to the level before the step is no news.
    assert all(r < 400 for r in rows)
    for name in SIGNALS:
        if name != "noise":
            assert fired_rows(found, "step", name) == [], name


def test_a_step_that_moves_with_another_signal_is_a_process_change_not_a_sensor() -> None:
    x = live(111, 600)
    x[200:, col("noise")] += 8.0
    x[200:, col("gappy")] += 4.0  # 8 of its sigmas, at the same reading
    found = SensorHealth(PROFILE).check(x)
    assert not found.fired["step"].any()


def test_a_spike_never_moves_the_step_rules_medians() -> None:
    x = live(112, 600)
    x[300:303, col("noise")] += 40.0
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "spike", "noise") == [303]
    assert not found.fired["step"].any()


def test_a_profile_from_before_the_step_rule_loads_with_the_rule_off() -> None:
    doc = PROFILE.to_json()
    doc.pop("step_window")
    for entry in doc["signals"]:
        for key in ("step_scale", "step_q99", "step_q999"):
            entry.pop(key)
    old = SensorHealthProfile.from_json(doc)
    x = live(110, 600)
    x[200:400, col("noise")] += 8.0
    health = SensorHealth(old)
    found = health.check(x)
    assert not found.fired["step"].any()
    assert (found.limits["step"] == np.inf).all()
    assert found.counts()["spike"] == SensorHealth(PROFILE).check(x).counts()["spike"]
    # ... and a snapshot from before it restores, the step rule starting fresh.
    snap = SensorHealth(PROFILE).snapshot()
    for key in ("step_away", "step_run", "step_flag"):
        snap.pop(key)
    fresh = SensorHealth(PROFILE)
    fresh.restore(snap)
    assert fresh.snapshot() == SensorHealth(PROFILE).snapshot()


def test_a_drift_out_of_the_envelope_is_out_of_range() -> None:
    j = col("smooth")
    x = live(108, 4_000)
    span = PROFILE.high[j] - PROFILE.low[j]
    x[:, j] = np.linspace(PROFILE.high[j] - span, PROFILE.high[j] + 3 * span, 4_000)
    found = SensorHealth(PROFILE).check(x)
    beyond = np.flatnonzero(x[:, j] > PROFILE.high[j] + span)  # margin: one span
    assert fired_rows(found, "out_of_range", "smooth") == list(range(beyond[0] + 3, 4_000))
    assert found.limits["out_of_range"][j] == 1.0
    assert found.scores["out_of_range"][-1, j] == pytest.approx(3.0, abs=1e-3)
    only(found, "out_of_range", "smooth")


# -- quiet on normal data -------------------------------------------------------------------------


def test_no_rule_fires_on_normal_data_of_every_kind() -> None:
    health = SensorHealth(PROFILE)
    found = health.check(live(200, 40_000))
    assert found.counts() == {"stuck": 0, "spike": 0, "out_of_range": 0, "step": 0}
    assert found.present[:, col("gappy")].mean() == pytest.approx(0.7, abs=0.02)


def test_a_set_point_step_within_the_margin_is_quiet() -> None:
    x = live(201, 3_000)
    j = col("tracking")
    span = PROFILE.high[j] - PROFILE.low[j]
    new_level = PROFILE.high[j] + 0.8 * span  # never seen, within the margin of one span
    target = np.where(np.arange(3_000) < 1_500, 40.0, new_level)
    level = np.empty(3_000)
    level[0] = 40.0
    for i in range(1, 3_000):  # the process follows the new set point with its lag
        level[i] = level[i - 1] + 0.05 * (target[i] - level[i - 1])
    x[:, j] = level + np.random.default_rng(0).normal(0.0, 0.2, 3_000)
    x[1_500:, col("noise")] += 3.0  # a small step on a noisy signal too
    found = SensorHealth(PROFILE).check(x)
    assert found.counts() == {"stuck": 0, "spike": 0, "out_of_range": 0, "step": 0}


def test_a_signal_constant_in_training_is_never_stuck_but_has_a_range() -> None:
    j = col("constant")
    assert not PROFILE.changes_seen[j]
    x = live(202, 30_000)
    found = SensorHealth(PROFILE).check(x)  # 7.0 for 30 000 readings: quiet
    assert found.counts() == {"stuck": 0, "spike": 0, "out_of_range": 0, "step": 0}
    assert found.limits["stuck"][j] == np.inf and found.limits["spike"][j] == np.inf
    x[:, j] = 9.0  # its envelope spans 5 % of its level: [7 - 0.35, 7 + 0.35]
    found = SensorHealth(PROFILE).check(x)
    assert fired_rows(found, "out_of_range", "constant") == list(range(3, 30_000))
    assert fired_rows(found, "stuck", "constant") == []


def test_a_signal_zero_throughout_training_flags_any_other_value() -> None:
    train = np.zeros((500, 1))
    health = SensorHealth(SensorHealthProfile.fit(train, [(0, 500)], ("idle",)))
    x = np.zeros((20, 1))
    x[10:] = 1e-3
    found = health.check(x)
    assert found.limits["out_of_range"][0] == 0.0
    assert np.flatnonzero(found.fired["out_of_range"][:, 0]).tolist() == list(range(13, 20))
    assert found.scores["out_of_range"][13, 0] == pytest.approx(1e-3)


def test_heavy_tailed_noise_gets_a_band_its_own_outliers_stay_inside() -> None:
    j = col("heavy")
    # The band is widened by training's own tail, far past the 8-sigma floor ...
    assert SensorHealth(PROFILE).check(live(203, 1)).limits["spike"][j] > 50
    # ... while Gaussian noise keeps the floor.
    assert SensorHealth(PROFILE).check(live(203, 1)).limits["spike"][col("noise")] == 8.0


# -- missing values, segments, timestamps ----------------------------------------------------


def test_missing_readings_neither_extend_nor_break_a_run() -> None:
    x = live(300, 300)
    j = col("noise")
    x[100:, j] = x[99, j]
    x[100:300:2, j] = np.nan  # every other reading lacks the signal
    found = SensorHealth(PROFILE).check(x)
    rows = fired_rows(found, "stuck", "noise")
    finite = np.flatnonzero(np.isfinite(x[:, j]))
    assert rows == [r for r in finite.tolist() if r >= finite[finite >= 99][30]]
    assert not found.present[100, j] and not found.any()[100, j]


def test_runs_do_not_reach_across_training_segments() -> None:
    level = np.repeat(np.arange(10.0), 100)[:, None]  # 100 equal readings per level
    one = SensorHealthProfile.fit(level, [(0, 1_000)], ("x",))
    assert one.longest_run.tolist() == [100] and one.changes_seen.tolist() == [True]
    # Cut at every level change: within a segment nothing ever changed.
    cuts = [(i, i + 100) for i in range(0, 1_000, 100)]
    per_level = SensorHealthProfile.fit(level, cuts, ("x",))
    assert per_level.changes_seen.tolist() == [False]
    found = SensorHealth(per_level).check(np.full((5_000, 1), 3.0))
    assert not found.fired["stuck"].any()
    # Cut in the middle of each level: runs are 50 long.
    halves = [(i, i + 50) for i in range(0, 1_000, 50)]
    assert SensorHealthProfile.fit(level, halves, ("x",)).longest_run.tolist() == [50]


def test_a_signal_with_too_little_training_has_no_rules() -> None:
    train = np.random.default_rng(0).normal(size=(1_000, 2))
    train[MIN_TRAINING_READINGS - 1 :, 1] = np.nan
    health = SensorHealth(SensorHealthProfile.fit(train, [(0, 1_000)], ("ok", "sparse")))
    found = health.check(np.full((100, 2), 1e6))
    assert found.fired["out_of_range"][:, 0].any()
    assert not found.any()[:, 1].any()
    assert [found.limits[r][1] for r in RULES] == [np.inf] * len(RULES)


def test_with_timestamps_a_faster_live_cadence_does_not_fake_a_freeze() -> None:
    # Training: one reading a second of a sensor that updates every 10 s.
    train = np.repeat(np.random.default_rng(0).normal(size=300), 10)[:, None]
    ts_train = T0 + np.arange(3_000) * 1_000
    profile = SensorHealthProfile.fit(train, [(0, 3_000)], ("p",), ts_ms=ts_train)
    assert profile.longest_run.tolist() == [10]
    assert profile.longest_run_ms.tolist() == [9_000.0]
    # Live: read every 10 ms; each update holds 1 000 readings (but only 10 s).
    x = np.repeat(np.random.default_rng(1).normal(size=20), 1_000)[:, None]
    ts = T0 + np.arange(20_000) * 10
    assert SensorHealth(profile).check(x).fired["stuck"].any()  # counting readings alone
    assert not SensorHealth(profile).check(x, ts).fired["stuck"].any()
    x[10_000:] = x[9_999]  # a real freeze: flagged once it lasts over 3 x 9 s
    found = SensorHealth(profile).check(x, ts)
    first = int(np.flatnonzero(found.fired["stuck"][:, 0])[0])
    start = 9_000  # the frozen value's run began with its update at reading 9 000
    assert ts[first] - ts[start] > 27_000 >= ts[first - 1] - ts[start]


# -- batch-cut invariance, snapshot, profile JSON --------------------------------------------


def faulty(seed: int, n: int, nan_fraction: float) -> np.ndarray:
    """Normal readings with freezes, spikes, steps and gaps sprinkled in."""
    rng = np.random.default_rng(seed)
    x = live(seed + 1_000, n)
    for _ in range(3):
        j, a = int(rng.integers(len(SIGNALS))), int(rng.integers(n))
        x[a : a + int(rng.integers(1, 200)), j] = x[a, j]
        j, a = int(rng.integers(len(SIGNALS))), int(rng.integers(n))
        x[a : a + int(rng.integers(1, 5)), j] += float(rng.normal(0.0, 100.0))
        j, a = int(rng.integers(len(SIGNALS))), int(rng.integers(n))
        x[a:, j] += float(rng.normal(0.0, 20.0))
    x[rng.random(x.shape) < nan_fraction] = np.nan
    return x


def run_in_batches(
    health: SensorHealth, x: np.ndarray, cuts: list[int], ts: np.ndarray | None
) -> dict[str, np.ndarray]:
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(x)), len(x)]
    parts = [
        health.check(x[a:b], None if ts is None else ts[a:b]) for a, b in itertools.pairwise(bounds)
    ]
    out = {}
    for rule in RULES:
        out[f"fired.{rule}"] = np.vstack([p.fired[rule] for p in parts])
        out[f"score.{rule}"] = np.vstack([p.scores[rule] for p in parts])
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 700),
    nan_fraction=st.sampled_from([0.0, 0.05, 0.5]),
    cuts=st.lists(st.integers(0, 700), max_size=12),
    timed=st.booleans(),
)
def test_findings_do_not_depend_on_how_readings_are_cut_into_batches(
    seed: int, n: int, nan_fraction: float, cuts: list[int], timed: bool
) -> None:
    x = faulty(seed, n, nan_fraction)
    ts = T0 + np.arange(n) * 1_000 if timed else None
    whole_health = SensorHealth(PROFILE)
    whole = run_in_batches(whole_health, x, [], ts)
    cut_health = SensorHealth(PROFILE)
    assert_same(run_in_batches(cut_health, x, cuts, ts), whole)
    assert cut_health.snapshot() == whole_health.snapshot()


def test_every_rule_is_exercised_by_the_invariance_data() -> None:
    found = SensorHealth(PROFILE).check(np.vstack([faulty(s, 700, 0.05) for s in range(30)]))
    assert all(count > 0 for count in found.counts().values()), found.counts()


@pytest.mark.parametrize("cut", [0, 1, 5, 13, 250, 699])
def test_snapshot_restore_through_json_continues_exactly(cut: int) -> None:
    x = faulty(7, 700, 0.05)
    ts = T0 + np.arange(700) * 1_000
    expected = run_in_batches(SensorHealth(PROFILE), x, [], ts)
    first = SensorHealth(PROFILE)
    head = first.check(x[:cut], ts[:cut])
    snap = json.loads(json.dumps(first.snapshot(), allow_nan=False))
    second = SensorHealth(PROFILE)
    second.restore(snap)
    assert second.snapshot() == first.snapshot()
    tail = second.check(x[cut:], ts[cut:])
    for rule in RULES:
        got = np.vstack([head.fired[rule], tail.fired[rule]])
        np.testing.assert_array_equal(got, expected[f"fired.{rule}"])
    assert first.snapshot()["version"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version 2"),
        ({"signals": ["a"]}, "signals"),
        ({"run": "x"}, "damaged"),
        ({"run": [0]}, "wide"),
        ({"extra": 1}, "damaged"),
    ],
)
def test_restore_refuses_foreign_or_damaged_snapshots(
    change: dict[str, object], message: str
) -> None:
    health = SensorHealth(PROFILE)
    health.check(live(5, 20))
    with pytest.raises(ValueError, match=message):
        SensorHealth(PROFILE).restore({**health.snapshot(), **change})


def test_profile_json_round_trip_gives_the_same_findings() -> None:
    ts = T0 + np.arange(N_TRAIN) * 1_000
    profile = SensorHealthProfile.fit(TRAIN, [(0, 10_000), (10_000, N_TRAIN)], SIGNALS, ts_ms=ts)
    text = json.dumps(profile.to_json(), allow_nan=False)
    back = SensorHealthProfile.from_json(json.loads(text))
    assert back.to_json() == profile.to_json()
    x = faulty(3, 700, 0.05)
    assert_same(
        run_in_batches(SensorHealth(back), x, [], None),
        run_in_batches(SensorHealth(profile), x, [], None),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [({"version": 9}, "version 9"), ({"band_window": 1}, "damaged"), ({"x": 1}, "damaged")],
)
def test_profile_from_json_refuses_other_versions_and_damage(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SensorHealthProfile.from_json({**PROFILE.to_json(), **change})


# -- config, inputs, helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"stuck_factor": 0.5},
        {"stuck_min_readings": 1},
        {"spike_z": 0},
        {"spike_max_readings": 0},
        {"spike_return": 1.5},
        {"envelope_margin": -0.1},
        {"enabled": "maybe"},
        {"stuck_factr": 3.0},
    ],
)
def test_config_refuses_bad_values(values: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        SensorHealthConfig.validated(**values)


def test_spike_length_must_fit_the_profiles_band() -> None:
    with pytest.raises(ValueError, match="band_window=9"):
        SensorHealth(PROFILE, SensorHealthConfig(spike_max_readings=5))


def test_disabled_finds_nothing() -> None:
    x = faulty(1, 500, 0.0)
    found = SensorHealth(PROFILE, SensorHealthConfig(enabled=False)).check(x)
    assert not found.any().any() and len(found) == 500


def test_inputs_of_the_wrong_shape_are_refused() -> None:
    health = SensorHealth(PROFILE)
    with pytest.raises(ValueError, match="signals"):
        health.check(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="ts_ms"):
        health.check(np.zeros((3, len(SIGNALS))), [1, 2])
    with pytest.raises(ValueError, match="segment"):
        SensorHealthProfile.fit(TRAIN, [(0, N_TRAIN + 1)], SIGNALS)
    with pytest.raises(ValueError, match="segment"):
        SensorHealthProfile.fit(TRAIN, [], SIGNALS)
    assert len(health.check(np.zeros((0, len(SIGNALS))))) == 0


def test_findings_helpers() -> None:
    x = live(9, 400)
    x[100, col("noise")] += 50.0
    x[200:, col("noise")] = 500.0  # out of range from 203, and stuck from 230
    found = SensorHealth(PROFILE).check(x)
    counts = {"stuck": 400 - 230, "spike": 1, "out_of_range": 400 - 203, "step": 7}
    assert found.counts() == counts
    codes = found.codes()[:, col("noise")]
    assert codes[101] == 2 and codes[203] == 3 and codes[300] == 3 and codes[150] == 0
    assert found.flagged()[0][:3] == (101, "noise", "spike")


# -- findings through the alert policy ---------------------------------------------------------


Event = tuple[str, str, str, str, str, str]


def alert_stream(cuts: list[int]) -> list[Event]:
    """A sensor stuck from reading 499 to 1 199, through health and the policy in batches."""
    x = live(10, 2_000)
    j = col("noise")
    x[500:1_200, j] = x[499, j]
    ts = T0 + np.arange(2_000) * 1_000
    health, policy = SensorHealth(PROFILE), AlertPolicy(AlertConfig())
    bounds = [0, *sorted(c for c in cuts if 0 < c < 2_000), 2_000]
    events = []
    for a, b in itertools.pairwise(bounds):
        f = health.check(x[a:b], ts[a:b])
        events += policy.step_sensor(
            "pump-1",
            ts[a:b],
            f.signals,
            f.fired,
            f.scores,
            f.limits,
            present=f.present,
            model_name="lstm-ae",
            model_version="7",
            now_ms=int(ts[b - 1]),
        )
    assert policy.phase("pump-1") == "idle"  # the anomaly alert never moved
    assert policy.snapshot()["assets"] == {}  # nothing in progress is left behind
    return [(e.event, e.kind, e.reason, e.alert_id, e.started_at, e.window_at) for e in events]


def test_a_stuck_sensor_opens_and_resolves_a_sensor_alert() -> None:
    events = alert_stream([])
    kinds = [e[0] for e in events]
    assert kinds[0] == "opened" and kinds[-1] == "resolved"
    assert set(kinds[1:-1]) == {"updated"} and len(kinds) <= 8
    assert {e[1] for e in events} == {"sensor"} and len({e[3] for e in events}) == 1
    assert events[0][2] == "stuck: noise at 31, over its limit 30"
    assert events[0][5] == events[0][4]  # opened on the reading that made the run too long
    assert events[1][2] == "stuck: noise severity rose to critical"
    assert events[-1][2] == "stuck: noise back to normal for 10 readings in a row"


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 2_000), max_size=8))
def test_sensor_alerts_do_not_depend_on_batch_cuts(cuts: list[int]) -> None:
    assert alert_stream(cuts) == alert_stream([])

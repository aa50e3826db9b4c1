"""Bad stretches in a training history: flat-lined values screened out, long gaps not filled.

A sensor offline for ten hours in the history, exported as 0.0 (or as empty cells carried
forward), taught the model and its thresholds that the drop and the return are ordinary:
an excursion of 8 noise sd later in the stream went unseen (0 of 5 seeds found, against 5
of 5 with a clean history; docs/BENCHMARKS.md, "Bad values in the history").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.health.screen import (
    MAX_STRETCHES,
    flat_stretches,
    gross_readings,
    screened_rows,
)
from models.training import train_model
from plantwatch.cli import main


def _cycle(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    return 10 + 2 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.3, n)


def test_an_offline_stretch_is_found_with_its_rows_and_value() -> None:
    x = _cycle(3000, np.random.default_rng(0))[:, None]
    x[500:620] = 0.0
    (found,) = flat_stretches(x, [(0, 3000)], ["temp"])
    assert (found.signal, found.start, found.end, found.readings, found.value) == (
        "temp",
        500,
        620,
        120,
        0.0,
    )
    assert screened_rows([found], 3000).sum() == 120


def test_a_frozen_last_value_is_found_like_a_fill_value() -> None:
    x = _cycle(3000, np.random.default_rng(1))[:, None]
    x[800:900] = x[799]
    (found,) = flat_stretches(x, [(0, 3000)], ["temp"])
    assert (found.start, found.end) == (799, 900)  # the last good reading starts the run


def test_held_signals_and_recurring_stops_are_operation_not_faults() -> None:
    rng = np.random.default_rng(2)
    set_point = np.repeat(rng.normal(50, 5, 30), 100)  # changed by operators now and then
    nightly = _cycle(3000, rng)
    for day in range(MAX_STRETCHES + 1):  # a pump stopped every night
        nightly[day * 1000 : day * 1000 + 200] = 0.0
    x = np.column_stack([set_point, nightly])
    assert flat_stretches(x, [(0, 3000)], ["sp", "flow"]) == []


def test_runs_do_not_reach_across_segments_and_missing_readings_do_not_break_them() -> None:
    x = _cycle(3000, np.random.default_rng(3))[:, None]
    x[1000:1040] = 7.0  # 40 unchanged readings, split 20 + 20 by a segment boundary
    assert flat_stretches(x, [(0, 1020), (1020, 3000)], ["temp"]) == []
    x[2000:2040] = 7.0
    x[2010:2015] = np.nan  # a few missing readings inside a frozen value
    (found,) = flat_stretches(x, [(0, 1020), (1020, 3000)], ["temp"])
    assert (found.start, found.end, found.readings) == (2000, 2040, 35)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    quantum=st.sampled_from([0.0, 0.05, 0.25, 0.5]),
    phi=st.sampled_from([0.0, 0.9, 0.99]),
)
def test_a_healthy_signal_has_nothing_screened(seed: int, quantum: float, phi: float) -> None:
    # Noise, AR(1) wander and a historian's quantisation: runs end at random, none is flat.
    # (Measured over 1,800 such streams, quantised to 0.5 and 1.0 with phi 0.9-0.999: none
    # at 0.5; at 1.0, 3.3 noise sd, two had one stretch of 56 and 74 readings screened,
    # just past their limits of 53 and 63: harmless, and kept out of this property.)
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.3, 4000)
    x = np.empty(4000)
    x[0] = e[0]
    for i in range(1, 4000):
        x[i] = phi * x[i - 1] + e[i]
    if quantum:
        x = np.round(x / quantum) * quantum
    assert flat_stretches(x[:, None], [(0, 4000)], ["v"]) == []


def test_sentinels_and_dropouts_are_gross_readings_and_only_they() -> None:
    x = _cycle(3000, np.random.default_rng(6))[:, None]
    bad = [200, 901, 1777, 2500]
    x[bad] = -9999.0
    (found,) = gross_readings(x, [(0, 3000)], ["temp"])
    assert found.rows == tuple(bad) and found.low == found.high == -9999.0
    assert screened_rows([], 3000, [found]).sum() == 4
    # 3 % of readings dropped out to 0.0: too many for accidents, but one repeated value.
    y = _cycle(3000, np.random.default_rng(7))[:, None]
    y[::33] = 0.0
    (fill,) = gross_readings(y, [(0, 3000)], ["flow"])
    assert fill.low == fill.high == 0.0 and len(fill.rows) > 0.02 * 3000


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), df=st.sampled_from([1.0, 1.5, 2.0, 3.0]))
def test_a_heavy_tail_keeps_its_own_extremes(seed: int, df: float) -> None:
    # Student-t noise on a cycle, recorded to 0.01: far readings, never one value repeated.
    # (Screening such extremes taught the model a lighter tail than the signal's: 26-63
    # false alerts in 8 streams against 5-9.)
    rng = np.random.default_rng(seed)
    x = np.round(_cycle(3000, rng) + 0.3 * rng.standard_t(df, 3000), 2)[:, None]
    assert gross_readings(x, [(0, 3000)], ["v"]) == []


def test_training_splits_where_the_monitor_would_call_a_value_stale() -> None:
    rng = np.random.default_rng(4)
    x = _cycle(2000, rng)[:, None]
    x[600:700] = np.nan  # 100 readings missing: carried forward 100 readings
    model = train_model(x, ["v"], window=16, stale_limit=5)
    data = model.metadata["data"]
    assert data["train"]["stale_rows"] + data["validation"]["stale_rows"] == 95
    unlimited = train_model(x, ["v"], window=16)
    assert unlimited.metadata["data"]["train"]["stale_rows"] == 0


def _write(path: Path, x: np.ndarray, label: np.ndarray, blank: slice | None = None) -> None:
    cells = [f"{v:.5f}" for v in x]
    if blank is not None:
        cells[blank] = [""] * len(cells[blank])
    path.write_text(
        "timestamp,value,label\n"
        + "".join(f"{1_700_000_000 + 300 * i},{c},{lab}\n" for i, (c, lab) in
                  enumerate(zip(cells, label, strict=True)))
    )  # fmt: skip


@pytest.mark.parametrize("how", ["zeros", "blank", "sentinel"])
def test_an_excursion_is_found_after_an_offline_stretch_in_the_history(
    tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    n = 4000
    x = _cycle(n, rng)
    label = np.zeros(n, dtype=int)
    x[2700:2710] += 2.4  # 8 noise sd for 50 minutes, inside the daily cycle's range
    label[2700:2710] = 1
    blank = None
    if how == "zeros":
        x[500:620] = 0.0  # ten hours offline, inside the training part (first 40 %)
    elif how == "blank":
        blank = slice(500, 620)
    else:
        x[rng.choice(np.arange(100, 1600), 20, replace=False)] = -9999.0
    src = tmp_path / "stream.csv"
    _write(src, x, label, blank)
    args = ["backtest", "--input", str(src), "--train-fraction", "0.4", "--labels", "label"]
    found = {}
    for screen in ("true", "false"):
        report = tmp_path / f"report-{screen}.json"
        extra = ["--set", f"sensor_health.screen_history={screen}"]
        assert main([*args, *extra, "--out", str(tmp_path / "o.csv"), "--report", str(report)]) == 0
        found[screen] = json.loads(report.read_text())["alerts"]["events_detected"]
        err = capsys.readouterr().err
        if screen == "true":
            said = {
                "zeros": "held 0 for 120 readings",
                "blank": "carried forward",
                "sentinel": "20 readings of value far outside its local band (-9999",
            }[how]
            assert said in err, err
    assert found["true"] == 1
    if how != "blank":
        assert found["false"] == 0  # the screen is what finds it


def test_a_signal_reported_far_less_often_is_named_when_nothing_can_train() -> None:
    # An analyser value every 15 rows beside signals every row: the monitor would call it
    # stale most of the time, so training says which signal and which setting.
    x = np.random.default_rng(5).normal(size=(2000, 3))
    x[np.arange(2000) % 15 != 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"\['lab'\].*window\.stale_limit"):
        train_model(x, ["a", "b", "lab"], window=16, stale_limit=5)
    model = train_model(x, ["a", "b", "lab"], window=16, stale_limit=20)
    assert model.metadata["data"]["train"]["stale_rows"] == 0

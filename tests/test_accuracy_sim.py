"""Accuracy on the simulator's labelled faults, through the command line a person uses.

Both tests run ``plantwatch simulate``, ``train`` and ``backtest --report``
(``plantwatch.cli.main``)
on one seeded plant (``--plant-seed 7``): 24 h of normal history from 5 pumps, then an 8 h test
run on the next day of the same plant with 16 faults (every kind) on 4 pumps and one control
pump that gets none. Each test compares two figures measured in the same run on the same data,
so it asserts margins and ratios, never a machine-dependent number. The per-seed values the
margins were chosen from are in the docstrings; ``bench/sim_faults.py`` measures every scorer
and threshold kind on a larger run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

from plantwatch.cli import main
from plantwatch.settings import load_settings

pytestmark = pytest.mark.slow

PLANT_SEED = 7
HISTORY_SEED = 1007
#: The test run's seed (faults, normal changes, noise). 0 is the first one tried, not the best:
#: the docstrings list seeds 0-4 (and more) and the margins hold on all of them.
TEST_SEED = 0
ASSETS = 5
HISTORY_START = "2026-01-01T00:00:00Z"
TEST_START = "2026-01-02T00:00:00Z"
HISTORY_S = 24 * 3600
TEST_S = 8 * 3600
FAULTS = 16
#: The deep model: the LSTM forecaster had the best event F1 of the three deep scorers on
#: simulated faults (bench/sim_faults.py) and trains in seconds on one CPU thread.
DEEP_SCORER = "lstm-forecaster"
EPOCHS = 5


@dataclass(frozen=True)
class Plant:
    """The shared history and the deep model trained on it."""

    root: Path
    history: Path
    deep_model: Path


def _cli(args: Sequence[str]) -> None:
    code = main(list(args))
    if code != 0:
        raise AssertionError(f"plantwatch {' '.join(args)} exited with {code}")


def _simulate(path: Path, *, start: str, duration_s: int, seed: int, extra: Sequence[str]) -> Path:
    _cli(
        [
            "simulate",
            "--assets",
            str(ASSETS),
            "--period-ms",
            "1000",
            "--duration",
            str(duration_s),
            "--start",
            start,
            "--seed",
            str(seed),
            "--plant-seed",
            str(PLANT_SEED),
            "--out",
            str(path),
            "--quiet",
            *extra,
        ]
    )
    return path


def _train(history: Path, model: Path, scorer: str, *extra: str) -> Path:
    _cli(["train", "--input", str(history), "--model", str(model), "--scorer", scorer, *extra])
    return model


def _backtest(
    data: Path, model: Path, out_dir: Path, name: str, config: Path | None = None
) -> tuple[dict[str, Any], Path]:
    """``plantwatch backtest --report``: the report's alert metrics and the per-row CSV."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.csv"
    report = out_dir / f"{name}.json"
    args = ["backtest", "--input", str(data), "--model", str(model), "--labels", "fault"]
    args += ["--out", str(out), "--report", str(report)]
    if config is not None:
        args += ["--config", str(config)]
    _cli(args)
    alerts: dict[str, Any] = json.loads(report.read_text())["alerts"]
    return alerts, out


@pytest.fixture(autouse=True)
def _no_plantwatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from defaults and the test's config files only, not the caller's shell."""
    for name in list(os.environ):
        if name.startswith("PLANTWATCH_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sim-plant")
    history = _simulate(
        root / "history.parquet",
        start=HISTORY_START,
        duration_s=HISTORY_S,
        seed=HISTORY_SEED,
        extra=["--faults", "0"],
    )
    deep = _train(history, root / DEEP_SCORER, DEEP_SCORER, "--epochs", str(EPOCHS))
    yield Plant(root=root, history=history, deep_model=deep)
    torch.set_num_threads(threads)


def _faults_run(plant: Plant, name: str, *extra: str) -> Path:
    return _simulate(
        plant.root / f"{name}.parquet",
        start=TEST_START,
        duration_s=TEST_S,
        seed=TEST_SEED,
        extra=["--faults", str(FAULTS), "--control-assets", "1", *extra],
    )


def test_deep_model_event_f1_at_least_the_river_baseline(plant: Plant, tmp_path: Path) -> None:
    """Issue 4, as deployed now: ``plantwatch train`` then ``plantwatch backtest`` with the
    default settings detects the injected faults with an event F1 of at least 0.8, and at
    least that of River's Half-Space Trees (``river-hst``) on the same data.

    History: with SPOT and no sensor-health rules this test asserted a margin of 0.3 over
    river-hst (seeds 0-4: forecaster 0.69-0.75, river-hst 0.13-0.24; the baseline lost on
    false alerts when the set-point walk left the history's range). The defaults chosen by
    issue 9's measurements (DSPOT, sensor health, re-baselining) lifted both: on seed 0 the
    forecaster reached 1.000 (16/16, no false alert) and river-hst 0.938 (15/16, 2 false
    alerts), so the old margin no longer exists to assert; what is asserted is that the deep
    model is not worse than the baseline and finds the faults.
    """
    data = _faults_run(plant, "faults")
    hst = _train(plant.history, tmp_path / "river-hst", "river-hst")
    deep_alerts, _ = _backtest(data, plant.deep_model, tmp_path, "deep")
    hst_alerts, _ = _backtest(data, hst, tmp_path, "hst")

    assert deep_alerts["events_labelled"] == FAULTS == hst_alerts["events_labelled"]
    deep_f1, hst_f1 = float(deep_alerts["event_f1"]), float(hst_alerts["event_f1"])
    summary = (
        f"{DEEP_SCORER}: event F1 {deep_f1:.3f} ({deep_alerts['events_detected']}/{FAULTS} "
        f"detected, {deep_alerts['events_false']} false alerts); river-hst: event F1 "
        f"{hst_f1:.3f} ({hst_alerts['events_detected']}/{FAULTS} detected, "
        f"{hst_alerts['events_false']} false alerts)"
    )
    print(summary)
    assert deep_f1 >= hst_f1, summary
    assert deep_f1 >= 0.8, summary
    # Well above also means catching faults, not only staying quiet.
    assert deep_alerts["events_detected"] >= FAULTS // 2, summary


def _config(path: Path, kind: str) -> Path:
    path.write_text(f'[threshold]\nkind = "{kind}"\n\n[alert]\nk = 5\nn = 10\n')
    return path


def _scored_windows(out_csv: Path) -> int:
    scores = pacsv.read_csv(out_csv).column("score").to_numpy(zero_copy_only=False)
    return int(np.count_nonzero(~np.isnan(np.asarray(scores, dtype=np.float64))))


def test_adaptive_threshold_keeps_false_alarms_within_risk_where_fixed_floods(
    plant: Plant, tmp_path: Path
) -> None:
    """Issue 5: on a run with faults plus slow normal changes (every pump, the control pump
    included, gets one set-point step that stays and one gradual sensor drift, both labelled
    ``is_fault=false``), DSPOT keeps false alarms per day within the configured risk and
    still catches the faults; a fixed threshold floods. Same model, same data, same alert
    policy; only ``threshold.kind`` differs.

    *Within the configured risk* is defined as: false alert events per asset-day (alerts
    overlapping no fault, over the summed per-asset time span) at most ``q`` times the scored
    windows per asset-day. ``q`` is the probability that a normal window's score exceeds the
    threshold, so ``q · windows`` is the number of false window verdicts per asset-day the
    risk allows (8.6 at q = 1e-4 and one window a second), and an alert cannot open without
    such verdicts. It is a bound on alarms, which is what an operator counts, and it is the
    loose one: every alert needs ``k`` verdicts, so a threshold exactly at its risk would
    give at most ``q · windows / k`` (1.7 here), which DSPOT does not meet (2.4-5.4).

    The alert policy is 5 of 10 windows (not the default 3 of 5) for both kinds: with the
    defaults DSPOT measured 4.2-10.8 false alerts per asset-day over seeds 0-4, over the
    budget on seed 2. With 5 of 10, over seeds 0-6: fixed 26-139, DSPOT 2.4-5.4 per
    asset-day, ratio 6.4-29 (asserted: 4), DSPOT detecting 8-12 of 16 faults (asserted: 8).

    What this does not show: that DSPOT flags fault-free *windows* at rate ``q``. A set-point
    step that takes a pump outside the operating range seen in the history raises the score
    for good; DSPOT learns nothing while an alert is open, so that alert stays open (on seed 0
    alerts were open for a quarter of the fault-free time: few alert events, but tens of
    thousands of flagged windows). The summary printed below shows that share for both kinds.
    """
    data = _faults_run(
        plant, "changes", "--regime-changes", str(ASSETS), "--sensor-drift", str(ASSETS)
    )
    fixed, fixed_csv = _backtest(
        data, plant.deep_model, tmp_path, "fixed", _config(tmp_path / "fixed.toml", "fixed")
    )
    dspot, dspot_csv = _backtest(
        data, plant.deep_model, tmp_path, "dspot", _config(tmp_path / "dspot.toml", "dspot")
    )

    q = load_settings(tmp_path / "dspot.toml", env={}).threshold.q
    asset_days = float(dspot["span_days"])
    budget = q * _scored_windows(dspot_csv) / asset_days
    assert _scored_windows(fixed_csv) == _scored_windows(dspot_csv)
    fixed_rate = float(fixed["false_alarms_per_day"])
    dspot_rate = float(dspot["false_alarms_per_day"])
    summary = (
        f"false alerts per asset-day: fixed {fixed_rate:.1f} ({fixed['events_false']}), "
        f"dspot {dspot_rate:.1f} ({dspot['events_false']}); risk budget {budget:.2f}; "
        f"faults detected: fixed {fixed['events_detected']}/{FAULTS}, dspot "
        f"{dspot['events_detected']}/{FAULTS}; fault-free time under an alert: fixed "
        f"{fixed['far_pct']:.1f}%, dspot {dspot['far_pct']:.1f}%"
    )
    print(summary)
    assert dspot["events_labelled"] == FAULTS
    assert math.isfinite(budget) and budget > 0
    assert dspot_rate <= budget, summary
    assert dspot["events_detected"] >= FAULTS // 2, summary
    assert fixed_rate > budget, summary
    assert fixed_rate >= 4.0 * dspot_rate, summary

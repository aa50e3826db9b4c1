"""Accuracy on the simulator's labelled faults: every scorer × threshold kind, streamed.

One seeded plant (``plant_seed`` fixed) gives a fault-free history to train on and, on
another day of the same plant, a test run with faults of every kind and one control asset
that gets none. The test run comes in two scenarios that share every fault and every noise
draw (same simulator seed); they differ only in the normal changes the second one adds:

* ``faults``: faults only; nothing else changes.
* ``faults+changes``: the same faults, plus on every asset (the control asset too) a
  set-point step that stays (``regime_change``) and a slow calibration drift of one signal
  (``sensor_drift``). Both are labelled ``is_fault=false``: the plant is healthy, so an
  alert there is a false alarm.

Each scorer is trained once on the history (``plantwatch.backtest.train_table``, as
``plantwatch train`` trains, labels unused) and each (scorer, threshold kind) pair replays
the test file through
:func:`plantwatch.backtest.replay`: the windows, scorer, threshold and alert policy of
``plantwatch run`` (each asset's first ``window - 1`` readings only fill its window). Labels
(the file's ``fault`` column) only evaluate. A row counts as predicted while an alert is open
(what an operator is told).

Columns: event F1; faults detected / labelled; false alert events (overlapping no fault);
false alarms per asset-day (all assets, and the control asset alone); median detection
delay; point-wise F1; the share of fault-free rows under an open alert (SKAB's FAR: an alert
that stays open for hours counts once in the alert columns and heavily here); and the
fraction of fault-free windows the threshold flagged, in units of the configured risk ``q``
(a window is fault-free when none of its readings lies in a fault; 1.0 means the threshold
kept exactly the risk it was configured with). A second table gives the detection rate per
fault kind.

    .venv/bin/python bench/sim_faults.py --quick     # a few minutes
    .venv/bin/python bench/sim_faults.py             # about 10 minutes on 2 loaded cores
    .venv/bin/python bench/sim_faults.py --scorers pca,conv-ae --thresholds spot,dspot \\
        --set alert.k=5 --set alert.n=10 --assets 6 --hours 24 --json sim.json

Progress goes to stderr; the tables, the exact command and the runtime go to stdout.
``torch`` runs on one thread, on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.artifact import TrainedModel
from models.evaluation import evaluate
from models.registry import SCORERS
from plantwatch.backtest import BacktestResult, replay, train_table
from plantwatch.settings import ConfigError, load_settings, parse_sets
from stream.files import Table, read_table
from stream.simulator import (
    DEFAULT_START_MS,
    FAULT_KINDS,
    FaultInterval,
    PlantSimulator,
    SimConfig,
    write_file,
)

ALL_SCORERS = ("pca", "river-hst", "lstm-forecaster", "conv-ae", "lstm-ae")
THRESHOLD_KINDS = ("fixed", "quantile", "spot", "dspot")
DEEP_SCORERS = frozenset({"lstm-forecaster", "conv-ae", "lstm-ae"})
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run; ``quick`` and full differ only here."""

    assets: int
    history_hours: float
    test_hours: float
    faults: int
    epochs: int
    window: int
    plant_seed: int
    seed: int


@dataclass
class Row:
    """What one (scenario, scorer, threshold kind) replay measured."""

    scenario: str
    scorer: str
    threshold: str
    event_f1: float | None
    events_detected: int
    events_labelled: int
    events_false: int
    false_alarms_per_day: float | None
    control_false_alarms_per_day: float
    detection_delay_s_median: float | None
    point_f1: float | None
    false_alert_time_pct: float | None
    flagged_fault_free_windows: float
    flagged_fault_free_windows_per_q: float
    detected_by_kind: dict[str, list[int]]
    replay_s: float


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _simulate(config: SimConfig, path: Path, *, labels: bool) -> tuple[Table, PlantSimulator]:
    """Write the run to Parquet as ``plantwatch simulate --out`` does, and read it back."""
    sim = PlantSimulator(config)
    write_file(sim, path)
    return read_table(path, label_column="fault" if labels else None), sim


def fault_rows(
    assets: npt.NDArray[np.object_],
    ts_ms: npt.NDArray[np.int64],
    faults: Sequence[FaultInterval],
    tail_ms: int,
) -> npt.NDArray[np.bool_]:
    """Rows whose window holds a fault reading: each fault from its first reading to its last
    reading plus ``tail_ms`` (the window's span: later windows still contain the fault)."""
    mask = np.zeros(len(ts_ms), dtype=bool)
    for fault in faults:
        mask |= (
            (assets == fault.asset) & (ts_ms >= fault.start_ms) & (ts_ms <= fault.end_ms + tail_ms)
        )
    return mask


def _detected_by_kind(
    result: BacktestResult, faults: Sequence[FaultInterval]
) -> dict[str, list[int]]:
    """Per fault kind: [detected, labelled]; detected = an alert is open on one of its rows."""
    if result.assets is None:
        raise ValueError("the replay result has no assets")
    out = {kind: [0, 0] for kind in FAULT_KINDS}
    for fault in faults:
        inside = (
            (result.assets == fault.asset)
            & (result.ts_ms >= fault.start_ms)
            & (result.ts_ms <= fault.end_ms)
        )
        out[fault.kind][1] += 1
        out[fault.kind][0] += int(result.anomaly[inside].any())
    return out


def _measure(
    scenario: str,
    scorer: str,
    kind: str,
    result: BacktestResult,
    sim: PlantSimulator,
    *,
    q: float,
    window: int,
    replay_s: float,
) -> Row:
    if result.labels is None or result.assets is None:
        raise ValueError("the replay result needs labels and assets to be evaluated")
    report = evaluate(result.labels, result.anomaly, ts_ms=result.ts_ms, assets=result.assets)
    control = set(sim.assets[sim.config.n_assets - sim.config.control_assets :])
    on_control = np.isin(result.assets, list(control))
    if on_control.any():
        control_report = evaluate(
            result.labels[on_control],
            result.anomaly[on_control],
            ts_ms=result.ts_ms[on_control],
            assets=result.assets[on_control],
        )
        control_per_day = float(control_report["false_alarms_per_day"] or 0.0)
    else:
        control_per_day = math.nan
    period_ms = sim.config.period_ms
    in_fault = fault_rows(result.assets, result.ts_ms, sim.faults, (window - 1) * period_ms)
    fault_free = ~np.isnan(result.scores) & ~in_fault
    flagged = float(result.exceeds[fault_free].mean()) if fault_free.any() else math.nan
    delay_ms = report["detection_delay_ms_median"]
    return Row(
        scenario=scenario,
        scorer=scorer,
        threshold=kind,
        event_f1=_maybe_float(report["event_f1"]),
        events_detected=int(report["events_detected"] or 0),
        events_labelled=int(report["events_labelled"] or 0),
        events_false=int(report["events_false"] or 0),
        false_alarms_per_day=_maybe_float(report["false_alarms_per_day"]),
        control_false_alarms_per_day=control_per_day,
        detection_delay_s_median=None if delay_ms is None else float(delay_ms) / 1000.0,
        point_f1=_maybe_float(report["f1"]),
        false_alert_time_pct=_maybe_float(report["far_pct"]),
        flagged_fault_free_windows=flagged,
        flagged_fault_free_windows_per_q=flagged / q,
        detected_by_kind=_detected_by_kind(result, sim.faults),
        replay_s=replay_s,
    )


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _rate(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _print_tables(rows: Sequence[Row], scenarios: dict[str, str], q: float) -> None:
    for scenario, description in scenarios.items():
        mine = [r for r in rows if r.scenario == scenario]
        if not mine:
            continue
        print(f"\n### Scenario `{scenario}`: {description}\n")
        print(
            "| scorer | threshold | event F1 | detected | false alerts | false alarms/asset-day "
            "| control FA/day | median delay s | point F1 | fault-free time alerted % "
            f"| fault-free windows flagged (× q={q:g}) |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in mine:
            print(
                f"| {r.scorer} | {r.threshold} | {_fmt(r.event_f1)} | "
                f"{r.events_detected}/{r.events_labelled} | {r.events_false} | "
                f"{_fmt(r.false_alarms_per_day, 1)} | {_fmt(r.control_false_alarms_per_day, 1)} | "
                f"{_fmt(r.detection_delay_s_median, 0)} | {_fmt(r.point_f1)} | "
                f"{_fmt(r.false_alert_time_pct, 1)} | {_rate(r.flagged_fault_free_windows_per_q)} |"
            )
        print(f"\nDetection per fault kind (`{scenario}`, detected/labelled):\n")
        print("| scorer | threshold | " + " | ".join(FAULT_KINDS) + " |")
        print("|---|---|" + "---:|" * len(FAULT_KINDS))
        for r in mine:
            cells = [f"{r.detected_by_kind[k][0]}/{r.detected_by_kind[k][1]}" for k in FAULT_KINDS]
            print(f"| {r.scorer} | {r.threshold} | " + " | ".join(cells) + " |")


def _names(text: str, valid: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {unknown or '(none)'}; choose from {', '.join(valid)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small plant, short runs, 3 epochs")
    parser.add_argument("--scorers", default=",".join(ALL_SCORERS), help="comma-separated")
    parser.add_argument("--thresholds", default="fixed,spot,dspot", help="comma-separated")
    parser.add_argument("--assets", type=int, help="pumps, the last one a control (default 5)")
    parser.add_argument("--hours", type=float, help="test run length in hours (default 12)")
    parser.add_argument("--history-hours", type=float, help="normal history (default 24)")
    parser.add_argument("--faults", type=int, help="faults in the test run (default 2 per kind)")
    parser.add_argument("--epochs", type=int, help="epochs of the deep scorers (default 10)")
    parser.add_argument("--window", type=int, default=32, help="readings per window")
    parser.add_argument("--plant-seed", type=int, default=7, help="the plant (default 7)")
    parser.add_argument("--seed", type=int, default=2, help="the test run's noise and faults")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="settings override for every replay, e.g. threshold.q=1e-3 or alert.k=5 "
        "(repeatable; threshold.kind comes from --thresholds)",
    )
    parser.add_argument("--json", metavar="OUT.json", help="also write every row as JSON")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    torch.set_num_threads(1)
    scorers = _names(args.scorers, sorted(SCORERS), "scorer")
    kinds = _names(args.thresholds, THRESHOLD_KINDS, "threshold kind")
    quick = Plan(4, 24.0, 3.0, len(FAULT_KINDS), 3, args.window, args.plant_seed, args.seed)
    full = Plan(5, 24.0, 12.0, 2 * len(FAULT_KINDS), 10, args.window, args.plant_seed, args.seed)
    plan = quick if args.quick else full
    plan = replace(
        plan,
        assets=args.assets if args.assets is not None else plan.assets,
        test_hours=args.hours if args.hours is not None else plan.test_hours,
        history_hours=args.history_hours if args.history_hours is not None else plan.history_hours,
        faults=args.faults if args.faults is not None else plan.faults,
        epochs=args.epochs if args.epochs is not None else plan.epochs,
    )
    if plan.assets < 2:
        raise SystemExit("--assets must be at least 2: one pump with faults and one control")

    history_config = SimConfig(
        n_assets=plan.assets,
        duration_s=plan.history_hours * 3600.0,
        start_ms=DEFAULT_START_MS,
        seed=plan.plant_seed + 1000,
        plant_seed=plan.plant_seed,
    )
    test_start_ms = DEFAULT_START_MS + round(plan.history_hours * HOUR_MS)
    faults_only = SimConfig(
        n_assets=plan.assets,
        duration_s=plan.test_hours * 3600.0,
        start_ms=test_start_ms,
        seed=plan.seed,
        plant_seed=plan.plant_seed,
        faults=plan.faults,
        control_assets=1,
    )
    with_changes = replace(faults_only, regime_changes=plan.assets, sensor_drifts=plan.assets)
    scenarios = {
        "faults": f"{plan.faults} faults on {plan.assets - 1} pumps, 1 control pump, "
        "no normal changes",
        "faults+changes": "the same faults, plus one set-point step and one slow sensor "
        "drift on every pump (control included), labelled normal",
    }
    try:
        overrides = parse_sets(args.set)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from exc
    settings_by_kind = {
        kind: load_settings(
            env={},
            overrides={
                **overrides,
                "threshold": {**overrides.get("threshold", {}), "kind": kind},
            },
        )
        for kind in kinds
    }
    alert = settings_by_kind[kinds[0]].alert
    q = settings_by_kind[kinds[0]].threshold.q

    rows: list[Row] = []
    train_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="plantwatch-bench-") as tmp:
        _log(f"simulating {plan.history_hours:g} h of history for {plan.assets} pumps ...")
        history, _ = _simulate(history_config, Path(tmp) / "history.parquet", labels=False)
        tests: dict[str, tuple[Table, PlantSimulator]] = {}
        for name, config in (("faults", faults_only), ("faults+changes", with_changes)):
            tests[name] = _simulate(config, Path(tmp) / f"{name}.parquet", labels=True)
        for scorer in scorers:
            hyper: dict[str, Any] = {"epochs": plan.epochs} if scorer in DEEP_SCORERS else {}
            _log(f"training {scorer} {hyper or ''} on {len(history):,} rows ...")
            t0 = time.perf_counter()
            # As `plantwatch train` trains: the history screened, stale rows split.
            model: TrainedModel = train_table(
                history,
                settings_by_kind[kinds[0]],
                scorer=scorer,
                window=plan.window,
                seed=0,
                **hyper,
            )
            train_s[scorer] = time.perf_counter() - t0
            for scenario, (table, sim) in tests.items():
                for kind in kinds:
                    t1 = time.perf_counter()
                    result = replay(table, model, settings_by_kind[kind], batch_rows=2000)
                    seconds = time.perf_counter() - t1
                    row = _measure(
                        scenario,
                        scorer,
                        kind,
                        result,
                        sim,
                        q=q,
                        window=model.window,
                        replay_s=seconds,
                    )
                    rows.append(row)
                    _log(
                        f"  {scenario:15s} {kind:6s} event F1 {_fmt(row.event_f1)}  "
                        f"detected {row.events_detected}/{row.events_labelled}  "
                        f"false {row.events_false}  ({seconds:.1f} s)"
                    )

    runtime_s = time.perf_counter() - started
    command = " ".join(
        [".venv/bin/python", "bench/sim_faults.py", *map(shlex.quote, sys.argv[1:])]
        if argv is None
        else [".venv/bin/python", "bench/sim_faults.py", *map(shlex.quote, argv)]
    )
    test_rows = len(tests["faults"][0])
    print("## Simulated faults: every scorer × threshold through the streaming code\n")
    print(f"Command: `{command}`\n")
    print(
        f"Plant seed {plan.plant_seed}; history {plan.history_hours:g} h × {plan.assets} pumps "
        f"at 1 s ({len(history):,} rows); test run seed {plan.seed}, {plan.test_hours:g} h "
        f"({test_rows:,} rows); window {plan.window}; deep scorers {plan.epochs} epochs; "
        f"threshold risk q = {q:g}; alert on {alert.k} of {alert.n} windows; settings "
        f"overrides: {', '.join(args.set) or 'none'}."
    )
    _print_tables(rows, scenarios, q)
    print("\nTraining and replay time (s; replay summed over scenarios and thresholds):\n")
    print("| scorer | train s | replay s |")
    print("|---|---:|---:|")
    for scorer in scorers:
        replay_total = sum(r.replay_s for r in rows if r.scorer == scorer)
        print(f"| {scorer} | {train_s[scorer]:.1f} | {replay_total:.1f} |")
    print(f"\nTotal runtime: {runtime_s:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command,
                    "plan": asdict(plan),
                    "q": q,
                    "scenarios": scenarios,
                    "train_s": train_s,
                    "runtime_s": runtime_s,
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

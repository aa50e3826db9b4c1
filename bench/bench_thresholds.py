"""Microseconds per score for every threshold kind and the drift monitor, against a baseline.

Last, the drift tests of 2,000 assets side by side (``models.drift.update_runs``) against
one ``DriftMonitor.update`` per asset, in and past the warm-up, at one and four windows
per asset per batch.

The baseline is the cheapest possible decision: a numpy compare against a precomputed
``1 - q`` quantile of the calibration scores, run in the same process on the same stream, so
the ratio column is comparable across machines. Scores are i.i.d. exponential (the common
case: almost every score below SPOT's level ``t``), fed in batches of 1, 32 and 1024 scores
(one asset's share of a consumed batch is usually small, so per-call overhead matters). The
``ramp`` rows feed a rising score level, where SPOT, whose level ``t`` stays where it was
calibrated, sees a peak at nearly every score (DSPOT's use case).

Last, the copy ``Monitor._judge`` takes of an asset's threshold once per asset run (so the
run can be judged again if its alert opens or resolves in it): SPOT/DSPOT's own
``__deepcopy__`` against ``copy.deepcopy``'s generic walk of the same object, in this process.

    .venv/bin/python bench/bench_thresholds.py          # about 2-3 minutes
    .venv/bin/python bench/bench_thresholds.py --quick  # under a minute
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from models.drift import DriftMonitor, update_runs
from models.thresholds import ThresholdConfig, make_threshold
from models.thresholds.dspot import MovingAverage
from models.thresholds.spot import SPOTThreshold, _CalibrationBuffer
from models.thresholds.tail import Tail

FloatArray = npt.NDArray[np.float64]


def _time_batches(step: Callable[[FloatArray], object], scores: FloatArray, batch: int) -> float:
    """Seconds to feed ``scores`` through ``step`` in batches of ``batch``."""
    start = time.perf_counter()
    for lo in range(0, scores.size, batch):
        step(scores[lo : lo + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scores; under a minute")
    parser.add_argument("--q", type=float, default=1e-4, help="false-alarm rate (default 1e-4)")
    args = parser.parse_args()

    n_scores = 100_000 if args.quick else 1_000_000
    batches = {1: n_scores // 20, 32: n_scores, 1024: n_scores}
    rng = np.random.default_rng(0)
    calibration = rng.exponential(size=20_000)
    stream = rng.exponential(size=n_scores)
    # The ramp rises by 2e-4 scale per score; SPOT is slow there (every score a peak), so
    # those rows use a fifth of the scores.
    ramp = stream + 2e-4 * np.arange(n_scores)

    rows: list[tuple[str, str, int, float, float, float]] = []
    for batch, n in batches.items():
        scores = stream[:n]
        fixed_value = float(np.quantile(calibration, 1.0 - args.q))

        def compare(s: FloatArray, value: float = fixed_value) -> object:
            return s > value

        baseline_s = _time_batches(compare, scores, batch)
        baseline_us = max(baseline_s / n * 1e6, 1e-9)
        rows.append(("numpy compare", "iid", batch, baseline_us, 1.0, float("nan")))
        for kind in ("fixed", "quantile", "spot", "dspot"):
            for stream_name, data in (("iid", scores), ("ramp", ramp[: n // 5])):
                if stream_name == "ramp" and kind not in ("spot", "dspot"):
                    continue
                threshold = make_threshold(ThresholdConfig(kind=kind, q=args.q), calibration)
                alarms = 0

                def step(s: FloatArray, th: object = threshold) -> None:
                    nonlocal alarms
                    alarms += int(th.update(s)[1].sum())  # type: ignore[attr-defined]

                seconds = _time_batches(step, data, batch)
                us = seconds / data.size * 1e6
                rows.append((kind, stream_name, batch, us, us / baseline_us, alarms / data.size))
        monitor = DriftMonitor([f"s{i}" for i in range(8)])
        means = rng.normal(size=(n, 8))
        start = time.perf_counter()
        for lo in range(0, n, batch):
            monitor.update(scores[lo : lo + batch], means[lo : lo + batch])
        us = (time.perf_counter() - start) / n * 1e6
        rows.append(("drift (8 signals)", "iid", batch, us, us / baseline_us, float("nan")))

    print(
        f"scores per row: {n_scores:,} ({batches[1]:,} for batch 1, a fifth for ramp rows); "
        f"q = {args.q:g}\n"
    )
    print("| kind | stream | batch | µs/score | × baseline | alarm rate |")
    print("|---|---|---:|---:|---:|---:|")
    for kind, stream_name, batch, us, ratio, rate in rows:
        rate_text = "" if np.isnan(rate) else f"{rate:.1e}"
        print(f"| {kind} | {stream_name} | {batch} | {us:.3f} | {ratio:,.0f} | {rate_text} |")
    print()
    print(copy_costs(calibration, rng))
    print()
    print(drift_runs_costs(rng))


def drift_runs_costs(rng: np.random.Generator, n_assets: int = 2000, rounds: int = 20) -> str:
    """µs per asset run of every asset's drift tests side by side (``update_runs``) against
    one ``DriftMonitor.update`` per asset, interleaved: assets past their warm-up and in it,
    one and four windows each per batch (a live batch, 5 signals)."""
    lines = [
        "| assets | drift tests | windows per asset | side by side µs/run | one by one µs/run "
        "| ratio |",
        "|---|---|---|---|---|---|",
    ]
    for phase, history in (("past warm-up", 600), ("warming up", 0)):
        for per in (1, 4):
            fast = [DriftMonitor([f"s{i}" for i in range(5)]) for _ in range(n_assets)]
            slow = [DriftMonitor([f"s{i}" for i in range(5)]) for _ in range(n_assets)]
            for m in (*fast, *slow):
                if history:
                    m.update(rng.exponential(size=history), rng.normal(size=(history, 5)))
            bounds = [(a * per, (a + 1) * per) for a in range(n_assets)]
            times = {"fast": 0.0, "slow": 0.0}
            for _ in range(rounds):
                scores = rng.exponential(size=n_assets * per)
                means = rng.normal(size=(n_assets * per, 5))
                flags = np.zeros(n_assets * per, np.bool_)
                start = time.perf_counter()
                update_runs(fast, bounds, scores, means, flags)
                times["fast"] += time.perf_counter() - start
                start = time.perf_counter()
                for m, (a, b) in zip(slow, bounds, strict=True):
                    m.update(scores[a:b], means[a:b], flags[a:b])
                times["slow"] += time.perf_counter() - start
            fast_us = times["fast"] / rounds / n_assets * 1e6
            slow_us = times["slow"] / rounds / n_assets * 1e6
            lines.append(
                f"| {n_assets:,} | {phase} | {per} | {fast_us:.1f} | {slow_us:.1f} "
                f"| {slow_us / fast_us:.1f}x |"
            )
    return "\n".join(lines)


def copy_costs(calibration: FloatArray, rng: np.random.Generator, rounds: int = 5) -> str:
    """µs per copy of a calibrated threshold: the classes' own copies vs the generic walk."""
    own = [(c, c.__dict__["__deepcopy__"]) for c in (SPOTThreshold, Tail, MovingAverage,
                                                     _CalibrationBuffer)]  # fmt: skip
    lines = ["| kind | own copy µs | generic deepcopy µs | ratio |", "|---|---:|---:|---:|"]
    for kind in ("spot", "dspot"):
        threshold = make_threshold(ThresholdConfig(kind=kind), calibration)
        threshold.update(rng.exponential(size=500))
        best = {"own": float("inf"), "generic": float("inf")}
        try:
            for _ in range(rounds):
                for mode in best:
                    for cls, fn in own:
                        if mode == "own":
                            cls.__deepcopy__ = fn
                        elif "__deepcopy__" in cls.__dict__:
                            delattr(cls, "__deepcopy__")
                    start = time.perf_counter()
                    for _ in range(2000):
                        copy.deepcopy(threshold, {id(threshold.config): threshold.config})
                    best[mode] = min(best[mode], (time.perf_counter() - start) / 2000 * 1e6)
        finally:
            for cls, fn in own:
                cls.__deepcopy__ = fn
        ratio = best["generic"] / best["own"]
        lines.append(f"| {kind} | {best['own']:.1f} | {best['generic']:.1f} | {ratio:.1f}x |")
    # A new asset: calibrated from the model's scores (as before) or copied from the
    # monitor's one calibrated prototype (``Monitor._new_threshold``).
    config = ThresholdConfig()
    start = time.perf_counter()
    for _ in range(20):
        prototype = make_threshold(config, calibration)
    fit_us = (time.perf_counter() - start) / 20 * 1e6
    start = time.perf_counter()
    for _ in range(2000):
        copy.deepcopy(prototype, {id(config): config})
    copy_us = (time.perf_counter() - start) / 2000 * 1e6
    lines.append(
        f"| new asset (dspot): calibrated {fit_us:,.0f} µs, copied from the prototype "
        f"{copy_us:.1f} µs | | | {fit_us / copy_us:,.0f}x |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

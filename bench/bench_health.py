"""Microseconds per reading of the sensor-health rules, side by side over many assets.

What the monitor's columnar path runs every batch (``models.health.check_many``: the assets
that share a profile stand side by side as the columns of one wide check), on Gaussian
readings of 5 signals, against the same check with the ``step`` rule off (a profile trained
before it existed), in the same process and interleaved, so the ratio is what the step
rule costs. Rates on a shared machine move between runs; read the ratio.

    .venv/bin/python bench/bench_health.py            # 200 assets x 10 readings, 3 rounds
    .venv/bin/python bench/bench_health.py --quick    # 1 round, 15 batches
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from models.health import SensorHealth, SensorHealthConfig, SensorHealthProfile, check_many

SIGNALS = ("a", "b", "c", "d", "e")


def per_reading_us(
    profile: SensorHealthProfile, assets: int, per: int, batches: int, seed: int
) -> float:
    rng = np.random.default_rng(seed)
    config = SensorHealthConfig()
    healths = [SensorHealth(profile, config) for _ in range(assets)]
    for health in healths:  # fill each band's history, so every asset goes side by side
        health.check(rng.normal(size=(2 * health._keep, len(SIGNALS))))
    data = [[rng.normal(size=(per, len(SIGNALS))) for _ in healths] for _ in range(batches)]
    stamps = [np.arange(per) for _ in healths]
    start = time.perf_counter()
    for values in data:
        check_many(healths, values, stamps)
    return (time.perf_counter() - start) / (assets * per * batches) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=200, help="assets (default 200)")
    parser.add_argument("--readings", type=int, default=10, help="per asset per batch")
    parser.add_argument("--batches", type=int, default=30, help="batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="1 round of 15 batches")
    args = parser.parse_args()
    rounds, batches = (1, 15) if args.quick else (args.rounds, args.batches)
    train = np.random.default_rng(0).normal(size=(5_000, len(SIGNALS)))
    profile = SensorHealthProfile.fit(train, [(0, 5_000)], SIGNALS)
    without = dataclasses.replace(profile, step_window=None)
    print(f"sensor health, {args.assets} assets x {args.readings} readings per batch, side by side")
    print("| round | without the step rule µs/reading | with it | ratio |")
    print("|---|---:|---:|---:|")
    for k in range(rounds):
        off = per_reading_us(without, args.assets, args.readings, batches, seed=k)
        on = per_reading_us(profile, args.assets, args.readings, batches, seed=k)
        print(f"| {k + 1} | {off:.2f} | {on:.2f} | {on / off:.2f}x |")


if __name__ == "__main__":
    main()

"""Throughput of the plant simulator, as readings/s and as ratios within one run.

Rows, each for the same number of readings:

* ``rng floor``: only the random draws the simulator makes per reading (the least any
  generator of this much noise could cost); the baseline of the ratio column;
* ``generate``: ``PlantSimulator.chunks`` (physics, faults, sensors, rounding);
* ``encode``: ``encode_reading`` for every reading of precomputed values (Kafka's share
  of CPU on the simulator side, without the producer);
* ``generate+encode``: what ``produce`` does before handing bytes to librdkafka;
* ``csv`` / ``parquet``: ``write_file`` to a temporary directory.

The last column says how many times faster than real time the ``plantwatch simulate
--assets 20 --rate 2000`` case runs (2,000 readings/s needed).

    .venv/bin/python bench/bench_simulator.py            # ~20 s
    .venv/bin/python bench/bench_simulator.py --quick    # ~5 s
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stream.schema import encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig, write_file

NEEDED_PER_S = 2000.0


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up (the least disturbed measurement)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer readings and repeats")
    parser.add_argument("--assets", type=int, default=20)
    parser.add_argument("--period-ms", type=int, default=10)
    args = parser.parse_args()
    seconds = 10.0 if args.quick else 30.0
    repeats = 2 if args.quick else 3
    config = SimConfig(
        n_assets=args.assets,
        period_ms=args.period_ms,
        duration_s=seconds,
        faults=args.assets,
        warmup_s=seconds / 5,
        fault_duration_s=(seconds / 20, seconds / 4),
        regime_changes=2,
        sensor_drifts=2,
    )
    sim = PlantSimulator(config)
    steps = config.n_steps or 0
    readings = steps * config.n_assets
    per_chunk = max(1, min(50, 50_000 // config.n_assets))

    def rng_floor() -> None:
        rng = np.random.default_rng(0)
        for _ in range(0, steps, sim.block_steps):
            rng.standard_normal((sim.block_steps, config.n_assets, 14))
            rng.random((sim.block_steps, config.n_assets, 2))

    def generate() -> None:
        for _ in sim.chunks(per_chunk):
            pass

    whole = sim.generate()
    rows = whole.values.tolist()
    stamps = whole.ts_ms.tolist()

    def encode() -> None:
        for t in range(steps):
            row, stamp = rows[t], stamps[t]
            for a in range(config.n_assets):
                encode_reading(sim.assets[a], stamp[a], dict(zip(SIGNALS, row[a], strict=True)))

    def generate_encode() -> None:
        for chunk in sim.chunks(per_chunk):
            values, ts = chunk.values.tolist(), chunk.ts_ms.tolist()
            for t in range(chunk.n_steps):
                for a in range(config.n_assets):
                    encode_reading(
                        sim.assets[a], ts[t][a], dict(zip(SIGNALS, values[t][a], strict=True))
                    )

    tmp_dir = tempfile.TemporaryDirectory(prefix="bench-sim-")
    tmp = Path(tmp_dir.name)

    def to_csv() -> None:
        write_file(sim, tmp / "plant.csv")

    def to_parquet() -> None:
        write_file(sim, tmp / "plant.parquet")

    cases: list[tuple[str, Callable[[], None]]] = [
        ("rng floor", rng_floor),
        ("generate", generate),
        ("encode", encode),
        ("generate+encode", generate_encode),
        ("csv", to_csv),
        ("parquet", to_parquet),
    ]
    print(
        f"{readings:,} readings: {config.n_assets} assets x {steps:,} steps of "
        f"{config.period_ms} ms, chunks of {per_chunk} steps, best of {repeats}"
    )
    print(f"{'case':<16} {'readings/s':>12} {'x rng floor':>12} {'x real time':>12}")
    base: float | None = None
    for name, fn in cases:
        per_s = readings / best_seconds(fn, repeats)
        base = base or per_s
        print(f"{name:<16} {per_s:>12,.0f} {per_s / base:>12.3f} {per_s / NEEDED_PER_S:>12.1f}")
    tmp_dir.cleanup()


if __name__ == "__main__":
    main()

"""How long the monitor's core takes per live-shaped batch: the distribution, not the mean.

A live stream below the drain rate never fills a consumed batch: ``consume()`` returns
after ``consumer.batch_wait_ms`` with a few readings per asset. This times each such batch
through ``Monitor.process`` (window -> score -> threshold -> alert, sensor health, drift,
baselines) in-process, no broker, and prints p50 / p90 / p99 / max milliseconds per batch
and the readings/s they make: the part of the end-to-end latency (``bench/e2e_broker.py``)
that is the monitor's own work, so what is left of a p99 there is transport and the box.

The plant is the simulator's (``--assets`` pumps, 1 s readings); the model is trained on
``--history-s`` of it; then ``--live-s`` seconds are fed ``--per-asset`` readings of every
asset per batch, in time order. The first batches (every asset's thresholds and drift
tests starting) are reported apart from the rest.

    .venv/bin/python bench/batch_latency.py                 # 100 pumps, 4 readings each
    .venv/bin/python bench/batch_latency.py --assets 1000 --per-asset 1 --scorer conv-ae
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_monitor import T0, plant

from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from stream.simulator import SIGNALS

#: Batches counted as the start (thresholds and drift tests of every asset starting).
START_BATCHES = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--per-asset", type=int, default=4, help="readings per asset per batch")
    parser.add_argument("--history-s", type=int, default=1800, help="training history per asset")
    parser.add_argument("--live-s", type=int, default=600, help="live readings per asset")
    parser.add_argument("--scorer", default="pca")
    parser.add_argument("--quick", action="store_true", help="--live-s 120")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    live_s = 120 if args.quick else args.live_s
    n, per = args.assets, args.per_asset
    history = plant(n, args.history_s, 1, T0 - args.history_s * 1000)
    model = train_model(
        history.reshape(-1, len(SIGNALS)), SIGNALS, scorer=args.scorer, window=32, seed=0
    )
    monitor = Monitor.from_settings(model, load_settings(env={}, overrides={}))
    live = plant(n, live_s, 2, T0)
    names = [f"pump-{a:04d}" for a in range(n)]
    times: list[float] = []
    for start in range(0, live_s - per + 1, per):
        readings = [
            SensorReading(
                names[a], T0 + t * 1000 + a, dict(zip(SIGNALS, live[t, a].tolist(), strict=True))
            )
            for t in range(start, start + per)
            for a in range(n)
        ]
        began = time.perf_counter()
        monitor.process(readings, now_ms=T0 + start * 1000)
        times.append(time.perf_counter() - began)
    ms = 1000 * np.asarray(times)
    steady = ms[START_BATCHES:]
    p50, p90, p99, top = np.percentile(steady, [50, 90, 99, 100])
    batch = n * per
    print(f"Command: `.venv/bin/python bench/batch_latency.py {' '.join(argv or [])}`".strip())
    print(
        f"\n{args.scorer}, {n} assets x {per} readings = {batch:,} readings per batch, "
        f"{steady.size} batches after the first {START_BATCHES}:\n"
    )
    print("| ms per batch: p50 | p90 | p99 | max | first batches, max | readings/s (p50) |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {p50:.1f} | {p90:.1f} | {p99:.1f} | {top:.1f} | {ms[:START_BATCHES].max():.1f} "
        f"| {batch / (p50 / 1000):,.0f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How the monitor's core scales with the number of assets and the window length.

Issue 11's scaling benchmark. ``Monitor.process`` (no broker) is fed readings as Kafka
would deliver a busy plant's: time-major (every asset's reading at one instant, then the
next instant), cut into consumed batches of ``--batch`` readings. Each asset streams
``window + --scored`` readings, so every asset fills its window and then has ``--scored``
windows judged. The plant is synthetic and cheap to make for 100,000 assets (a latent
AR(1) factor per asset seen through fixed loadings, plus noise): the point is the cost of
many assets, not accuracy. Reported per run:

- readings/s over the whole stream and over the batches after every window was full, both
  as a ratio to the first (smallest) run of the same table, measured in the same process;
- memory: the process's resident set after the run less before the monitor was made,
  per asset (what the monitor's state costs, allocator overheads included).

``--drift-ab`` also runs each asset count with one ``DriftMonitor.update`` per asset run
(``Monitor.drift_side_by_side = False``, before ``models.drift.update_runs``).

Readings are built before the clock starts (only ``Monitor.process`` is timed).

    .venv/bin/python bench/bench_scaling.py                        # 100, 1k, 10k assets
    .venv/bin/python bench/bench_scaling.py --assets 100,1000,10000,100000 --scored 8
    .venv/bin/python bench/bench_scaling.py --windows 16,32,64,128 --assets 1000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading

T0 = 1_795_899_600_000
SIGNALS = ("flow", "pressure", "temperature", "vibration", "current")
#: How each signal sees the asset's latent load (fixed: one plant design for every asset).
LOADINGS = np.array([1.0, 0.8, 0.5, 0.3, 0.9])
NOISE = np.array([0.1, 0.1, 0.05, 0.2, 0.1])


def rss_mb() -> float:
    """The resident set of this process (Linux ``/proc``), in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def plant_steps(n_assets: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """(assets, signals) readings per time step: a latent AR(1) load per asset."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n_assets)
    offsets = rng.normal(scale=0.2, size=(n_assets, 1))
    for _ in range(steps):
        z = 0.95 * z + np.sqrt(1 - 0.95**2) * rng.normal(size=n_assets)
        yield offsets + z[:, None] * LOADINGS + rng.normal(size=(n_assets, 5)) * NOISE


def train(window: int, scorer: str) -> TrainedModel:
    history = np.concatenate(list(plant_steps(4, 3000, seed=1)), axis=0)
    hyper = {} if scorer == "pca" else {"epochs": 2, "device": "cpu"}
    return train_model(history, SIGNALS, window=window, scorer=scorer, **hyper)


def batches(n_assets: int, steps: int, batch: int) -> list[list[SensorReading]]:
    names = [f"pump-{a:06d}" for a in range(n_assets)]
    out: list[list[SensorReading]] = []
    current: list[SensorReading] = []
    for t, values in enumerate(plant_steps(n_assets, steps, seed=2)):
        ts = T0 + t * 1000
        for name, row in zip(names, values.tolist(), strict=True):
            current.append(SensorReading(name, ts, dict(zip(SIGNALS, row, strict=True))))
            if len(current) == batch:
                out.append(current)
                current = []
    if current:
        out.append(current)
    return out


def run(
    model: TrainedModel, n_assets: int, scored: int, batch: int, *, drift_side_by_side: bool = True
) -> dict[str, float]:
    window = model.window
    feed = batches(n_assets, window + scored, batch)
    first_scored = (window - 1) * n_assets  # readings before every window is full
    gc.collect()
    before = rss_mb()
    monitor = Monitor.from_settings(model, load_settings(env={}))
    monitor.drift_side_by_side = drift_side_by_side
    seen = scored_readings = 0
    total = scored_s = 0.0
    windows = 0
    for part in feed:
        started = time.perf_counter()
        out = monitor.process(part, now_ms=T0)
        spent = time.perf_counter() - started
        total += spent
        if seen >= first_scored:  # every asset's window was full before this batch
            scored_s += spent
            scored_readings += len(part)
        seen += len(part)
        windows += len(out.scored)
    gc.collect()
    after = rss_mb()
    readings = n_assets * (window + scored)
    return {
        "assets": n_assets,
        "window": window,
        "readings": readings,
        "windows": windows,
        "rate": readings / total,
        "scored_rate": scored_readings / scored_s if scored_s else float("nan"),
        "kb_per_asset": (after - before) * 1024 / n_assets,
    }


def table(rows: Sequence[dict[str, float]], by: str) -> None:
    base = dict(rows[0])
    # A run whose every batch had windows still filling has no scored rate: the first that
    # has one is the base of that column.
    base["scored_rate"] = next(
        (r["scored_rate"] for r in rows if np.isfinite(r["scored_rate"])), float("nan")
    )
    print(
        f"| {by} | readings | windows judged | readings/s | ratio | readings/s, windows full "
        "| ratio | KB per asset (RSS) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[by]:,.0f} | {r['readings']:,.0f} | {r['windows']:,.0f} | {r['rate']:,.0f} "
            f"| {r['rate'] / base['rate']:.2f}x | {r['scored_rate']:,.0f} "
            f"| {r['scored_rate'] / base['scored_rate']:.2f}x | {r['kb_per_asset']:,.0f} |",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default="100,1000,10000", help="asset counts to run")
    parser.add_argument("--windows", default="", help="also: window lengths at --window-assets")
    parser.add_argument("--window-assets", type=int, default=1000)
    parser.add_argument("--window", type=int, default=32, help="window of the asset runs")
    parser.add_argument("--scored", type=int, default=20, help="windows judged per asset")
    parser.add_argument("--batch", type=int, default=2000, help="readings per consumed batch")
    parser.add_argument("--scorer", default="pca", help="pca, or lstm-forecaster (streamed)")
    parser.add_argument(
        "--drift-ab",
        action="store_true",
        help="also run each asset count with one DriftMonitor.update per asset run",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = train(args.window, args.scorer)
    counts = [int(a) for a in args.assets.split(",") if a.strip()]
    print(f"\n### {args.scorer}, window {args.window}, by number of assets\n")
    rows = []
    for n in counts:
        rows.append(run(model, n, args.scored, args.batch))
        if args.drift_ab:
            alone = run(model, n, args.scored, args.batch, drift_side_by_side=False)
            print(
                f"{n:,} assets: drift tests side by side {rows[-1]['scored_rate']:,.0f} "
                f"readings/s with windows full, one update per asset {alone['scored_rate']:,.0f}"
                f" ({rows[-1]['scored_rate'] / alone['scored_rate']:.2f}x)",
                flush=True,
            )
    table(rows, "assets")
    if args.windows:
        print(f"\n### {args.scorer}, {args.window_assets:,} assets, by window length\n")
        rows = []
        for w in [int(w) for w in args.windows.split(",") if w.strip()]:
            rows.append(run(train(w, args.scorer), args.window_assets, args.scored, args.batch))
        table(rows, "window")
    cmd = " ".join(["bench/bench_scaling.py", *(argv if argv is not None else sys.argv[1:])])
    print(
        f"\n`.venv/bin/python {cmd}` "
        f"(1 torch thread, batches of {args.batch:,} readings, time-major)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

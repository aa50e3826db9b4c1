"""Throughput of the monitor's pure core (window → score → threshold → alert), no broker.

Readings per second through ``Monitor.process`` for consumed batches of 1, 100 and 2,000
readings (20 assets interleaved, or ``--assets``), for each scorer, as a ratio to batch size
1 of the same scorer measured in the same run: batching across assets is where the speed
comes from. The per-reading path (``Monitor.columnar = False``) is timed too, on the same
readings, and the columnar path's rate is given as a ratio to it. ``--one-pass-ab`` also
times the columnar path with each asset's run pushed on its own (``Monitor.one_pass =
False``, what it did before ``stream.window.push_runs``), and ``--follow-ab`` with each
asset's drift follower stepped on its own (``Monitor.baselines.side_by_side = False``,
before ``models.rebaseline.follow_runs``), and ``--stream-ab`` with a streaming scorer's
windows re-run by ``score_batch`` (``model.stream = false``, what the LSTM forecaster did
before ``ForecasterStream.score_windows`` served it), interleaved in the same process.

    .venv/bin/python bench/bench_monitor.py [--quick] [--scorers pca,lstm-ae,conv-ae]
        [--assets 200] [--steps 300] [--batches 1,100,2000] [--repeat 3]
        [--one-pass-ab] [--follow-ab] [--stream-ab]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig

T0 = 1_795_899_600_000


def plant(n_assets: int, seconds: int, seed: int, start_ms: int) -> np.ndarray:
    sim = PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=1000,
            start_ms=start_ms,
            duration_s=seconds,
            seed=seed,
            plant_seed=5,
        )
    )
    return sim.generate().values  # (T, A, S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer readings (about a minute)")
    parser.add_argument("--scorers", default="pca,lstm-ae,conv-ae")
    parser.add_argument("--assets", type=int, default=20, help="assets interleaved")
    parser.add_argument("--steps", type=int, default=0, help="readings per asset")
    parser.add_argument("--batches", default="1,100,2000", help="batch sizes (readings)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path, best kept")
    parser.add_argument(
        "--one-pass-ab",
        action="store_true",
        help="also time the columnar path with each asset's run pushed on its own",
    )
    parser.add_argument(
        "--follow-ab",
        action="store_true",
        help="also time it with each asset's drift follower stepped on its own",
    )
    parser.add_argument(
        "--stream-ab",
        action="store_true",
        help="also time it with a streaming scorer's windows re-run (model.stream = false)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_assets = args.assets
    history = plant(4, 4 * 3600, 1, T0 - 4 * 3_600_000)
    values = history.transpose(1, 0, 2).reshape(-1, history.shape[2])
    per = history.shape[0]
    segments = [(a * per, (a + 1) * per) for a in range(4)]
    steps = args.steps or (150 if args.quick else 600)
    live = plant(n_assets, steps, 2, T0)
    readings = [
        SensorReading(
            f"pump-{a:02d}", T0 + t * 1000, dict(zip(SIGNALS, live[t, a].tolist(), strict=True))
        )
        for t in range(steps)
        for a in range(n_assets)
    ]
    settings = load_settings(env={})
    rerun = load_settings(env={}, sets=["model.stream=false"])
    extra = " runs one by one | ratio |" if args.one_pass_ab else ""
    extra += " followers one by one | ratio |" if args.follow_ab else ""
    extra += " windows re-run | ratio |" if args.stream_ab else ""
    print(
        "| scorer | batch (readings) | readings/s | ratio to batch 1 | per-reading path | ratio |"
        + extra
    )
    abs_on = args.one_pass_ab + args.follow_ab + args.stream_ab
    print("|---|---|---|---|---|---|" + "---|---|" * abs_on)

    def rate(
        model: TrainedModel,
        feed: list[SensorReading],
        batch: int,
        columnar: bool,
        one_pass: bool = True,
        side_by_side: bool = True,
        stream: bool = True,
    ) -> float:
        monitor = Monitor.from_settings(model, settings if stream else rerun)
        monitor.columnar = columnar
        monitor.one_pass = one_pass
        monitor.baselines.side_by_side = side_by_side
        started = time.perf_counter()
        for s in range(0, len(feed), batch):
            monitor.process(feed[s : s + batch], now_ms=T0)
        return len(feed) / (time.perf_counter() - started)

    for name in args.scorers.split(","):
        hyper = {"epochs": 2} if name != "pca" and name != "river-hst" else {}
        model = train_model(values, SIGNALS, segments=segments, scorer=name, window=32, **hyper)
        base = None
        for batch in [int(b) for b in args.batches.split(",")]:
            # Batch size 1 is slow for deep models: time a slice of the stream there.
            feed = (
                readings
                if batch > 1
                else readings[: min(len(readings), 40 * n_assets + 32 * n_assets)]
            )
            # Interleaved and the best of each kept: the machine is shared and noisy.
            fast = slow = runs = alone = windowed = 0.0
            for _ in range(args.repeat):
                fast = max(fast, rate(model, feed, batch, columnar=True))
                slow = max(slow, rate(model, feed, batch, columnar=False))
                if args.one_pass_ab:
                    runs = max(runs, rate(model, feed, batch, columnar=True, one_pass=False))
                if args.follow_ab:
                    alone = max(alone, rate(model, feed, batch, True, side_by_side=False))
                if args.stream_ab:
                    windowed = max(windowed, rate(model, feed, batch, True, stream=False))
            base = base or fast
            ab = f" {runs:,.0f} | {fast / runs:.2f}x |" if args.one_pass_ab else ""
            ab += f" {alone:,.0f} | {fast / alone:.2f}x |" if args.follow_ab else ""
            ab += f" {windowed:,.0f} | {fast / windowed:.2f}x |" if args.stream_ab else ""
            print(
                f"| {name} | {batch} | {fast:,.0f} | {fast / base:.1f}x | {slow:,.0f} "
                f"| {fast / slow:.1f}x |" + ab,
                flush=True,
            )
    print(
        f"\n`.venv/bin/python bench/bench_monitor.py{' --quick' if args.quick else ''} "
        f"--scorers {args.scorers} --assets {n_assets} --steps {steps} --batches {args.batches} "
        f"--repeat {args.repeat}{' --one-pass-ab' if args.one_pass_ab else ''}"
        f"{' --follow-ab' if args.follow_ab else ''}{' --stream-ab' if args.stream_ab else ''}` "
        "(1 torch thread, "
        f"{n_assets} assets, {steps} readings each, window 32)"
    )


if __name__ == "__main__":
    main()

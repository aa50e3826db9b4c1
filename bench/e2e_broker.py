"""End to end through a real Kafka broker: ``plantwatch run`` against a River reference.

Issue 11's benchmark. A topic is pre-filled with simulator readings (keyed by asset, stamped
in the recent past); for each scorer the real ``plantwatch run`` (a subprocess, its own
consumer group and output topics) reads it from the beginning, and its rate is taken from
its own ``plantwatch_messages_total`` on /metrics, from the first change of the count to
the last (start-up excluded). In the same run, the reference a user of the usual online
tools would write (:func:`river_reference`: confluent-kafka ``consume()`` in batches,
``json.loads``, per-asset River ``MinMaxScaler | HalfSpaceTrees``, ``score_one`` then
``learn_one`` per reading) reads the same topic in its own group, measured the same way.
Rates are reported as a ratio to it: the machines are shared and noisy.

Then, unless turned off: end-to-end latency (``plantwatch_e2e_latency_seconds``: a
window's last reading time to its score or alert published) while readings stamped "now"
are produced at half the measured rate (``--latency-fractions``); memory per asset (the
monitor's RSS after the full run less that of a run over ``--memory-assets`` assets, per
extra asset); and, with
``--profile SCORER``, a cProfile of that scorer's ``plantwatch run`` summarised by stage.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` when set, else a throwaway
``stream.broker.LocalBroker`` on free ports. The monitor subprocess and its /metrics
scrape live in ``e2e_monitor.py``, the River reference in ``e2e_river.py``, the profile
summary in ``e2e_profile.py``.

    .venv/bin/python bench/e2e_broker.py --quick                  # a few minutes
    .venv/bin/python bench/e2e_broker.py --repeat 3               # 200 assets, 120k readings
    .venv/bin/python bench/e2e_broker.py --scorers pca,conv-ae,lstm-ae --profile conv-ae
    .venv/bin/python bench/e2e_broker.py --quick \
        --scorers lstm-forecaster,lstm-forecaster@model.stream=false   # stream vs windows
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_monitor import (
    Monitor,
    MonitorRun,
    create_topic,
    histogram_quantile,
    measure_monitor,
    quantile_bucket,
    say,
)
from e2e_profile import summarise_profile
from e2e_river import river_reference

from plantwatch.backtest import train_table
from plantwatch.settings import load_settings
from stream.broker import LocalBroker, free_port
from stream.files import Table
from stream.schema import encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig
from stream.simulator.chunks import Chunk
from stream.simulator.kafka_sink import produce

PERIOD_MS = 1000

# -- the broker and the data ---------------------------------------------------------------


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[str]:
    """``KAFKA_BOOTSTRAP_SERVERS`` when set, else a local broker for the run's duration."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        yield configured
        return
    local = LocalBroker(port=free_port(), controller_port=free_port(), data_dir=workdir / "kafka")
    started = time.monotonic()
    bootstrap = local.start(wait_s=180.0, progress=lambda m: say(f"broker: {m}"))
    say(f"local broker at {bootstrap} in {time.monotonic() - started:.0f} s")
    try:
        yield bootstrap
    finally:
        local.stop()


def simulator(n_assets: int, steps: int, start_ms: int, seed: int) -> PlantSimulator:
    """The same plant (``plant_seed``) every time; ``seed`` picks the day."""
    return PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=PERIOD_MS,
            start_ms=start_ms,
            duration_s=steps * PERIOD_MS / 1000,
            seed=seed,
            plant_seed=5,
        )
    )


def fill_topic(bootstrap: str, topic: str, n_assets: int, steps: int, partitions: int) -> int:
    """``n_assets * steps`` readings ending a minute ago (never refused as future)."""
    start_ms = (int(time.time() * 1000) - steps * PERIOD_MS - 60_000) // 1000 * 1000
    create_topic(bootstrap, topic, partitions)
    started = time.monotonic()
    summary = produce(
        simulator(n_assets, steps, start_ms, seed=2),
        {"bootstrap.servers": bootstrap},
        topic,
        pace=False,
    )
    say(f"filled {topic}: {summary.readings:,} readings in {time.monotonic() - started:.0f} s")
    return int(summary.readings)


def history_table(chunk: Chunk) -> Table:
    """A simulated history as the table ``train_table`` takes: asset after asset."""
    values, _ = chunk.by_asset()
    return Table(
        ts_ms=chunk.ts_ms.T.reshape(-1).astype(np.int64),
        signals=tuple(SIGNALS),
        values=values.astype(np.float64),
        assets=np.repeat(np.array(chunk.assets, dtype=object), chunk.n_steps),
        labels=None,
        time_column="ts",
    )


def train(
    scorer: str,
    n_assets: int,
    history_s: int,
    window: int,
    epochs: int,
    out: Path,
    max_windows: int = 0,
) -> Path:
    """Train on simulator history through the train command's path; save the artifact."""
    steps = history_s * 1000 // PERIOD_MS
    start_ms = int(time.time() * 1000) - 86_400_000
    table = history_table(simulator(n_assets, steps, start_ms, seed=1).generate())
    hyper: dict[str, Any] = {}
    if scorer not in ("pca", "river-hst"):
        hyper["epochs"] = epochs
        if max_windows:
            hyper["train_stride"] = max(1, len(table) // max_windows)
    started = time.monotonic()
    model = train_table(table, load_settings(env={}), scorer=scorer, window=window, **hyper)
    path = model.save(out / scorer, overwrite=True)
    say(f"trained {scorer} on {len(table):,} rows in {time.monotonic() - started:.0f} s")
    return Path(path)


# -- latency at a paced rate ------------------------------------------------------------------


def paced_latency(
    bootstrap: str,
    model_dir: Path,
    logdir: Path,
    n_assets: int,
    rate: float,
    seconds: float,
    partitions: int,
    sets: Sequence[str],
) -> dict[str, float]:
    """p50/p99 of ``plantwatch_e2e_latency_seconds`` while readings stamped now arrive at ``rate``.

    A fresh topic; production starts once the monitor has its partitions, runs a few
    seconds of warm-up, and only the histogram's growth over the next ``seconds`` counts.
    """
    topic = f"e2e-paced-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions)
    steps = max(64, int(rate * (seconds + 10) / n_assets) + 64)
    chunk = simulator(n_assets, steps, 0, seed=3).generate()
    values = chunk.values.tolist()
    assets = list(chunk.assets)
    keys = [a.encode() for a in assets]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    mon = Monitor(bootstrap, model_dir, topic, logdir, sets=sets)
    try:
        mon.wait_assigned()
        sent = 0
        warmup_s = max(4.0, seconds / 2)  # every asset's first windows and thresholds
        started = time.monotonic()
        before: dict[float, float] | None = None
        batches_before = {"count": 0.0, "sum": 0.0}
        checkpoints_before: dict[str, dict[str, float]] = {}
        while True:
            elapsed = time.monotonic() - started
            if before is None and elapsed >= warmup_s:
                got = mon.scrape()
                before = got["buckets"] if got else {}
                batches_before = got["batches"] if got else batches_before
                checkpoints_before = got["checkpoints"] if got else {}
            if elapsed >= warmup_s + seconds:
                break
            due = int(rate * elapsed)
            while sent < due:
                a = sent % n_assets
                step = sent // n_assets
                now_ms = int(time.time() * 1000)
                value = encode_reading(
                    assets[a], now_ms, dict(zip(SIGNALS, values[step][a], strict=True))
                )
                producer.produce(topic, value, keys[a])
                sent += 1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(30)
        time.sleep(1.0)  # the last batch: at most batch_wait_ms away
        got = mon.scrape()
        after = got["buckets"] if got else {}
        counted = got["messages"] if got else 0.0
        batches_after = got["batches"] if got else batches_before
        checkpoints_after = got["checkpoints"] if got else {}
        mon.check_alive()
    finally:
        mon.stop()
    grown = {le: after.get(le, 0.0) - (before or {}).get(le, 0.0) for le in after}
    return {
        "sent_per_s": sent / (warmup_s + seconds),
        "windows": grown.get(float("inf"), 0.0),
        "behind_at_end": sent - counted,
        "mean_batch": (batches_after["sum"] - batches_before["sum"])
        / max(1.0, batches_after["count"] - batches_before["count"]),
        # The checkpoints in the measured part: how many, and the mean ms of each phase.
        "checkpoints": checkpoints_after.get("state", {}).get("count", 0.0)
        - checkpoints_before.get("state", {}).get("count", 0.0),
        **{
            f"checkpoint_{phase}_ms": _mean_ms(checkpoints_before.get(phase), numbers)
            for phase, numbers in checkpoints_after.items()
        },
        "p50_ms": 1000 * histogram_quantile(0.5, grown),
        "p99_ms": 1000 * histogram_quantile(0.99, grown),
        "p50_bucket_ms": [1000 * b for b in quantile_bucket(0.5, grown)],
        "p99_bucket_ms": [1000 * b for b in quantile_bucket(0.99, grown)],
    }


def _mean_ms(before: dict[str, float] | None, after: dict[str, float]) -> float:
    """Mean milliseconds of the observations a histogram's count and sum gained."""
    count = after["count"] - (before or {}).get("count", 0.0)
    total = after["sum"] - (before or {}).get("sum", 0.0)
    return 1000.0 * total / count if count > 0 else math.nan


# -- the run ----------------------------------------------------------------------------------


def _bucket(bounds: Sequence[float]) -> str:
    """How little a histogram knows: the bucket a quantile fell in, in ms."""
    return f"({bounds[0]:g}, {bounds[1]:g}]"


def spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def ratio_spread(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few minutes)")
    parser.add_argument(
        "--scorers",
        default="pca,conv-ae,lstm-forecaster",
        help="systems to run, comma-separated: a scorer, optionally with settings of its own "
        "after '@' (';' between them), e.g. lstm-forecaster@model.stream=false",
    )
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--readings", type=int, default=120_000, help="pre-filled readings")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1, help="rate rounds (each system)")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="deep scorers' training epochs")
    parser.add_argument("--history-s", type=int, default=1800, help="training history per asset")
    parser.add_argument(
        "--max-train-windows",
        type=int,
        default=8000,
        help="deep scorers train on about this many windows (0: training's own cap)",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="model.torch_threads of the monitor"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="passed to every plantwatch run (repeatable)",
    )
    parser.add_argument("--latency-s", type=float, default=20.0, help="0: no latency phase")
    parser.add_argument(
        "--latency-fractions",
        default="0.5",
        help="paced rates as fractions of each scorer's measured rate, e.g. 0.5,0.25",
    )
    parser.add_argument(
        "--latency-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a further latency run per scorer with these settings, e.g. consumer.batch_wait_ms=20",
    )
    parser.add_argument(
        "--memory-assets", type=int, default=10, help="small run's assets; 0: no memory phase"
    )
    parser.add_argument("--profile", default="", help="scorer whose run is profiled ('' none)")
    parser.add_argument("--profile-out", type=Path, help="keep the .prof file here")
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    if args.quick:
        args.assets, args.readings, args.epochs = 100, 30_000, 1
        args.history_s, args.latency_s, args.max_train_windows = 600, 8.0, 4000
    # A system is a scorer, with settings of its own after '@' (';' between them), e.g.
    # lstm-forecaster@model.stream=false: the window forecaster beside the streaming one.
    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    base = {s: s.split("@", 1)[0] for s in scorers}
    own = {s: [x for x in s.partition("@")[2].split(";") if x] for s in scorers}
    steps = args.readings // args.assets
    sets = [f"model.torch_threads={args.torch_threads}", *args.set]
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp, broker(Path(tmp)) as bootstrap:
        work = Path(tmp)
        models = {
            s: train(
                s,
                args.assets,
                args.history_s,
                args.window,
                args.epochs,
                work / "models",
                args.max_train_windows,
            )
            for s in sorted(set(base.values()))
        }
        topic = f"e2e-sensors-{uuid.uuid4().hex[:8]}"
        total = fill_topic(bootstrap, topic, args.assets, steps, args.partitions)
        rates: dict[str, list[float]] = {s: [] for s in [*scorers, "river"]}
        ratios: dict[str, list[float]] = {s: [] for s in scorers}
        runs: dict[str, MonitorRun] = {}
        for round_ in range(args.repeat):
            river = river_reference(bootstrap, topic, total)
            rates["river"].append(river)
            say(f"round {round_ + 1}: River reference {river:,.0f} readings/s")
            for s in scorers:
                run = measure_monitor(
                    bootstrap, models[base[s]], topic, total, work, [*sets, *own[s]]
                )
                runs[s] = run
                rates[s].append(run.rate)
                ratios[s].append(run.rate / river)
                say(f"round {round_ + 1}: plantwatch {s} {run.rate:,.0f} readings/s")

        print(f"\n### Readings/s through the broker ({args.assets} assets, {total:,} readings)\n")
        print("| system | readings/s | ratio to River |")
        print("|---|---|---|")
        for s in scorers:
            print(f"| plantwatch, {s} | {spread(rates[s])} | {ratio_spread(ratios[s])} |")
        print(f"| River reference | {spread(rates['river'])} | 1.00x |")
        results["rates"], results["ratios"] = rates, ratios

        if args.latency_s > 0:
            fractions = [float(f) for f in args.latency_fractions.split(",") if f.strip()]
            print("\n### End-to-end latency at a fraction of the measured rate\n")
            columns = ("scorer", "settings", "of max", "readings/s sent", "windows", "mean batch")
            columns += ("behind", "p50 ms (bucket)", "p99 ms (bucket)")
            columns += ("checkpoints", "state / flush / commit ms (mean)")
            print(f"| {' | '.join(columns)} |")
            print("|---" * len(columns) + "|")
            results["latency"] = []
            for s in scorers:
                for fraction in fractions:
                    for extra in [[], *([args.latency_set] if args.latency_set else [])]:
                        lat = paced_latency(
                            bootstrap,
                            models[base[s]],
                            work,
                            args.assets,
                            statistics.median(rates[s]) * fraction,
                            args.latency_s,
                            args.partitions,
                            [*sets, *own[s], *extra],
                        )
                        shown = ", ".join(extra) or "defaults"
                        row = {"scorer": s, "settings": shown, "fraction": fraction, **lat}
                        results["latency"].append(row)
                        print(
                            f"| {s} | {shown} | {fraction:g} | {lat['sent_per_s']:,.0f} "
                            f"| {lat['windows']:,.0f} | {lat['mean_batch']:,.0f} "
                            f"| {lat['behind_at_end']:,.0f} "
                            f"| {lat['p50_ms']:.0f} {_bucket(lat['p50_bucket_ms'])} "
                            f"| {lat['p99_ms']:.0f} {_bucket(lat['p99_bucket_ms'])} "
                            f"| {lat['checkpoints']:.0f} | "
                            + " / ".join(
                                f"{lat.get(f'checkpoint_{ph}_ms', math.nan):.0f}"
                                for ph in ("state", "flush", "commit")
                            )
                            + " |",
                            flush=True,
                        )

        if args.memory_assets > 0:
            s = scorers[0]
            small_topic = f"e2e-small-{uuid.uuid4().hex[:8]}"
            small_total = fill_topic(bootstrap, small_topic, args.memory_assets, steps, 1)
            small = measure_monitor(
                bootstrap, models[base[s]], small_topic, small_total, work, [*sets, *own[s]]
            )
            big = runs[s]
            per_asset_kb = (big.rss_mb - small.rss_mb) * 1024 / (args.assets - args.memory_assets)
            results["memory"] = {
                "scorer": s,
                "small_assets": args.memory_assets,
                "small_rss_mb": small.rss_mb,
                "assets": args.assets,
                "rss_mb": big.rss_mb,
                "peak_rss_mb": big.peak_rss_mb,
                "per_asset_kb": per_asset_kb,
            }
            print(f"\n### Memory ({s}, RSS after the run)\n")
            print("| assets | RSS MB | peak RSS MB |")
            print("|---|---|---|")
            print(f"| {args.memory_assets} | {small.rss_mb:.0f} | {small.peak_rss_mb:.0f} |")
            print(f"| {args.assets} | {big.rss_mb:.0f} | {big.peak_rss_mb:.0f} |")
            print(f"\nabout {per_asset_kb:,.0f} KB per asset")

        if args.profile:
            prof = args.profile_out or work / "run.prof"
            profiled = measure_monitor(
                bootstrap,
                models[args.profile.split("@", 1)[0]],
                topic,
                total,
                work,
                [*sets, *[x for x in args.profile.partition("@")[2].split(";") if x]],
                profile=prof,
            )
            print(f"\n### Where the time goes ({args.profile}, cProfile of `plantwatch run`)\n")
            print(f"{profiled.rate:,.0f} readings/s under the profiler\n")
            table, stages = summarise_profile(prof, total)
            print(table)
            results["profile"] = {"scorer": args.profile, "rate": profiled.rate, **stages}

    cmd = " ".join(["bench/e2e_broker.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n`.venv/bin/python {cmd}` (torch threads {args.torch_threads}, window {args.window})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

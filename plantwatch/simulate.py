"""``plantwatch simulate``: options, their resolution into a :class:`SimConfig`, and the run."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from common.progress import Progress
from common.timestamps import parse_ts
from plantwatch.settings import Settings
from stream.simulator.config import ENDLESS_PLAN_HORIZON_S, FAULT_KINDS, SimConfig
from stream.simulator.file_sink import default_labels_path, file_format, write_file
from stream.simulator.generator import PlantSimulator
from stream.simulator.kafka_sink import DeliveryError, KafkaUnreachableError, produce

EPILOG = """\
examples:
  plantwatch simulate --assets 20 --rate 2000 --duration 30
  plantwatch simulate --assets 4 --duration 86400 --faults 0 --out history.parquet
  plantwatch simulate --assets 8 --control-assets 2 --faults 12 --duration 7200 \\
      --start 2026-01-01T00:00:00Z --out test.csv        # labels in test.csv.labels.csv
  plantwatch simulate --assets 4 --forever --labels-topic   # until Ctrl-C, labels to Kafka

Same --seed and --start give the same data. Without --start, a file run ends now and a
Kafka run starts now. An endless run (--forever) has its events planned over its first
hour. Fault kinds: """ + ", ".join(FAULT_KINDS)


def _duration_range(text: str) -> tuple[float, float]:
    parts = text.split(":")
    try:
        values = [float(x) for x in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX seconds, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX seconds, got {text!r}")
    return values[0], values[1]


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


def parse_start(text: str, *, now_ms: int) -> int:
    """``now``, RFC 3339 text, or epoch milliseconds, to epoch milliseconds."""
    text = text.strip()
    if text.lower() == "now":
        return now_ms
    try:
        return parse_ts(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise ValueError(
            f"--start {text!r}: use 'now', RFC 3339 (2026-01-01T00:00:00Z) or epoch "
            f"milliseconds ({exc})"
        ) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``plantwatch simulate`` options (``--config``/``--bootstrap-servers`` come from
    the caller)."""
    parser.epilog = EPILOG
    parser.description = "Simulate pumps with labelled injected faults, to Kafka or a file."
    g = parser.add_argument_group("plant and time")
    g.add_argument("--assets", type=int, default=4, metavar="N", help="pumps (default 4)")
    g.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="readings per second over all assets: each asset every N/R s (default 1 s)",
    )
    g.add_argument("--period-ms", type=int, metavar="MS", help="ms between an asset's readings")
    g.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="S",
        help="simulated seconds (default 60; 0 = until Ctrl-C)",
    )
    g.add_argument("--forever", action="store_true", help="run until Ctrl-C (= --duration 0)")
    g.add_argument(
        "--start",
        metavar="WHEN",
        help="first timestamp: now, RFC 3339 or epoch ms (default: Kafka now, file now−duration)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--plant-seed",
        type=int,
        default=None,
        help="seed of the plant's set-points and gains (default: --seed); keep it to simulate "
        "another day of the same plant",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="write .csv or .parquet instead of Kafka")
    o.add_argument("--topic", help="readings topic (default from settings: plantwatch.sensors)")
    o.add_argument(
        "--labels",
        metavar="PATH",
        help="labels CSV (default <out>.labels.csv for a file; none for Kafka)",
    )
    o.add_argument(
        "--labels-topic",
        nargs="?",
        const="",
        metavar="TOPIC",
        help="also send labels to Kafka (no value: the settings' labels topic)",
    )
    o.add_argument(
        "--no-pace",
        action="store_true",
        help="send to Kafka as fast as possible (the readings then end now)",
    )
    o.add_argument(
        "--quiet", action="store_true", help="no progress line (the summary is still printed)"
    )
    f = parser.add_argument_group("faults and normal changes")
    f.add_argument(
        "--faults",
        type=int,
        metavar="N",
        help="faults in total (default: one per non-control asset)",
    )
    f.add_argument(
        "--fault-kinds", type=_kinds, metavar="A,B", help="kinds to inject (default all)"
    )
    f.add_argument(
        "--fault-duration-s",
        type=_duration_range,
        metavar="MIN:MAX",
        help="fault length range (default 30:300, shrunk to fit short runs)",
    )
    f.add_argument(
        "--fault-magnitude",
        type=float,
        default=1.0,
        metavar="X",
        help="size scale; 1.0 = clearly detectable (default)",
    )
    f.add_argument(
        "--warmup-s",
        type=float,
        metavar="S",
        help="no events before this (default 60 s, or a fifth of a shorter run)",
    )
    f.add_argument(
        "--control-assets",
        type=int,
        default=0,
        metavar="K",
        help="the last K assets get no faults (false-alarm control)",
    )
    f.add_argument(
        "--regime-changes",
        type=int,
        default=0,
        metavar="N",
        help="normal set-point steps that stay (labelled is_fault=false)",
    )
    f.add_argument(
        "--sensor-drift",
        type=int,
        default=0,
        metavar="N",
        help="slow calibration drifts of one signal (labelled is_fault=false)",
    )


def config_from_args(args: argparse.Namespace, *, now_ms: int | None = None) -> SimConfig:
    """Resolve the options (rate to period, start, the defaults that shrink to fit)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    n_assets = int(args.assets)
    if n_assets < 1:
        raise ValueError(f"--assets must be at least 1, got {n_assets}")
    if args.period_ms is not None:
        period_ms = int(args.period_ms)
    elif args.rate is not None:
        if not args.rate > 0:
            raise ValueError(f"--rate must be positive, got {args.rate}")
        period_ms = round(1000.0 * n_assets / args.rate)
        if period_ms < 1:
            raise ValueError(
                f"--rate {args.rate:g} with {n_assets} assets means a reading per asset every "
                f"{1000.0 * n_assets / args.rate:.3f} ms; the shortest period is 1 ms: "
                "add assets or lower the rate"
            )
    else:
        period_ms = 1000
    duration_s: float | None = None if args.forever or args.duration == 0 else args.duration
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"--duration must be positive (or 0 for endless), got {duration_s}")
    if args.start is not None:
        start_ms = parse_start(args.start, now_ms=now_ms)
    elif duration_s is not None and (args.out is not None or args.no_pace):
        # A file, or Kafka as fast as possible: the readings end now, so none is stamped
        # ahead of the monitor's clock (it dead-letters those as future_timestamp).
        start_ms = now_ms - round(duration_s * 1000)
    else:
        start_ms = now_ms
    control = int(args.control_assets)
    faults = int(args.faults) if args.faults is not None else max(0, n_assets - control)
    horizon_s = duration_s if duration_s is not None else ENDLESS_PLAN_HORIZON_S
    warmup_s = (
        float(args.warmup_s)
        if args.warmup_s is not None
        else (min(60.0, horizon_s / 5.0) if duration_s is not None else 60.0)
    )
    if args.fault_duration_s is not None:
        fault_duration = tuple(args.fault_duration_s)
    else:
        per_asset = math.ceil(faults / max(1, n_assets - control)) if faults else 1
        slot_s = max(horizon_s - warmup_s, period_ms / 1000.0) / per_asset
        hi = min(300.0, slot_s / 2.0)
        fault_duration = (min(30.0, hi / 2.0), hi)
    return SimConfig(
        n_assets=n_assets,
        period_ms=period_ms,
        start_ms=start_ms,
        duration_s=duration_s,
        seed=int(args.seed),
        faults=faults,
        fault_kinds=tuple(args.fault_kinds) if args.fault_kinds else FAULT_KINDS,
        fault_duration_s=(float(fault_duration[0]), float(fault_duration[1])),
        fault_magnitude=float(args.fault_magnitude),
        warmup_s=warmup_s,
        control_assets=control,
        regime_changes=int(args.regime_changes),
        sensor_drifts=int(args.sensor_drift),
        plant_seed=None if args.plant_seed is None else int(args.plant_seed),
    )


def _install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop`` (a second Ctrl-C interrupts at once); returns undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def undo() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``plantwatch simulate``: 0 when done (or stopped by Ctrl-C), 1 on a delivery
    failure, 2 on bad options."""
    try:
        config = config_from_args(args)
        out = Path(args.out) if args.out else None
        if out is not None:
            file_format(out)
        sim = PlantSimulator(config)
    except ValueError as exc:
        print(f"plantwatch simulate: {exc}", file=sys.stderr)
        return 2
    if args.rate is not None and args.period_ms is None:
        actual = 1000.0 * config.n_assets / config.period_ms
        if abs(actual - args.rate) > 1e-6 * args.rate:
            print(
                f"plantwatch simulate: a {config.period_ms} ms period gives {actual:,.1f} "
                f"readings/s, not {args.rate:g}",
                file=sys.stderr,
            )
    total = None if config.n_steps is None else config.n_steps * config.n_assets
    progress = Progress("simulate", total=total, unit="readings", enabled=not args.quiet)
    stop = threading.Event()
    undo = _install_stop_handlers(stop)
    try:
        if out is not None:
            labels_path = Path(args.labels) if args.labels else default_labels_path(out)
            summary = write_file(sim, out, labels_path=labels_path, stop=stop, progress=progress)
        else:
            labels_topic = args.labels_topic
            if labels_topic == "":
                labels_topic = settings.topics.labels
            summary = produce(
                sim,
                settings.kafka.client_config(),
                args.topic or settings.topics.sensors,
                labels_topic=labels_topic,
                labels_path=Path(args.labels) if args.labels else None,
                pace=not args.no_pace,
                stop=stop,
                progress=progress,
                flush_timeout_s=settings.delivery.flush_timeout_s,
            )
    except (DeliveryError, KafkaUnreachableError) as exc:
        print(f"plantwatch simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        undo()
    print(summary.line(), file=sys.stderr)
    return 0

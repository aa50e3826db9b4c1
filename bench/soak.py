"""Soak: ``plantwatch run`` at a steady rate for an hour or more, memory growth and p99 drift.

Issue 10 asks for a run long enough to show what a short benchmark cannot: a leak (state
that grows with time rather than with assets), latency that creeps up as histograms,
alert history or allocator pools fill, a lag that builds slowly. A real local broker
(``KAFKA_BOOTSTRAP_SERVERS`` when set), a PCA model trained on the same simulated plant's
history, then ``--assets`` pumps at 1 Hz with labelled faults, stamped "now" and produced
at a steady rate for ``--minutes``; the monitor is the real ``plantwatch run`` (shipped
settings, its own group and topics, ``e2e_monitor.Monitor``).

Every ``--sample-s`` the script reads the monitor's resident memory (``/proc``), its own
``plantwatch_messages_total`` and the e2e latency histogram
(``plantwatch_e2e_latency_seconds``: a window's last reading to its score or alert
published). It reports, per ``--interval-min`` interval, RSS, p50/p99 latency (from the
histogram's growth in that interval) and readings behind; and over the run after
``--warmup-min``: memory growth per hour (least-squares slope of RSS on time), the p99 of
the last third against the first third, the most readings ever behind.

    .venv/bin/python bench/soak.py                        # 60 min, 300 assets at 1 Hz
    .venv/bin/python bench/soak.py --minutes 3 --warmup-min 1 --interval-min 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_broker import broker, train
from e2e_monitor import Monitor, create_topic, histogram_quantile, say

from stream.schema import encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig

#: The plant ``e2e_broker.train`` simulates (its history is this plant's day before).
PLANT_SEED = 5


@dataclass(frozen=True)
class Sample:
    """One reading of the monitor: seconds since production began, RSS, counts, histogram."""

    at_s: float
    rss_mb: float
    sent: int
    counted: float
    buckets: dict[float, float]


@dataclass(frozen=True)
class Interval:
    start_min: float
    end_min: float
    rss_mb: float
    p50_ms: float
    p99_ms: float
    windows: float
    behind: int


@dataclass(frozen=True)
class Summary:
    minutes: float
    readings_sent: int
    readings_counted: int
    rss_start_mb: float
    rss_end_mb: float
    growth_mb_per_h: float
    p99_first_third_ms: float
    p99_last_third_ms: float
    p99_drift: float
    max_behind: int
    behind_at_end: int


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per hour.

    >>> slope_per_hour([(0.0, 100.0), (1800.0, 105.0), (3600.0, 110.0)])
    10.0
    """
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx <= 0:
        return float("nan")
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 3600.0


def grown(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """The histogram of what was observed between two scrapes of its cumulative buckets."""
    return {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}


def intervals(samples: Sequence[Sample], every_s: float) -> list[Interval]:
    """Cut the samples into intervals of ``every_s``; latency from each one's histogram growth.

    >>> s = [Sample(t, 100.0 + t / 60, 10 * int(t), 10 * t, {0.1: t, float("inf"): t})
    ...      for t in (0.0, 60.0, 120.0)]
    >>> [(i.start_min, i.end_min, i.windows) for i in intervals(s, 60.0)]
    [(0.0, 1.0, 60.0), (1.0, 2.0, 60.0)]
    """
    out: list[Interval] = []
    if not samples:
        return out
    start = samples[0]
    for s in samples[1:]:
        if s.at_s - start.at_s + 1e-9 < every_s and s is not samples[-1]:
            continue
        g = grown(start.buckets, s.buckets)
        out.append(
            Interval(
                start_min=round(start.at_s / 60, 2),
                end_min=round(s.at_s / 60, 2),
                rss_mb=s.rss_mb,
                p50_ms=1000 * histogram_quantile(0.5, g),
                p99_ms=1000 * histogram_quantile(0.99, g),
                windows=g.get(float("inf"), 0.0),
                behind=int(s.sent - s.counted),
            )
        )
        start = s
    return out


def summarise(samples: Sequence[Sample], warmup_s: float) -> Summary:
    """Growth and drift over the samples after ``warmup_s`` (the first thirds vs the last)."""
    steady = [s for s in samples if s.at_s >= warmup_s] or list(samples)
    first, last = steady[0], steady[-1]
    third = max(1, len(steady) // 3)
    head = grown(steady[0].buckets, steady[third].buckets) if len(steady) > third else {}
    tail = grown(steady[-1 - third].buckets, last.buckets) if len(steady) > third else {}
    p99_head = 1000 * histogram_quantile(0.99, head)
    p99_tail = 1000 * histogram_quantile(0.99, tail)
    return Summary(
        minutes=round(samples[-1].at_s / 60, 1),
        readings_sent=samples[-1].sent,
        readings_counted=int(samples[-1].counted),
        rss_start_mb=round(first.rss_mb, 1),
        rss_end_mb=round(last.rss_mb, 1),
        growth_mb_per_h=round(slope_per_hour([(s.at_s, s.rss_mb) for s in steady]), 2),
        p99_first_third_ms=round(p99_head, 1),
        p99_last_third_ms=round(p99_tail, 1),
        p99_drift=round(p99_tail / p99_head, 3) if p99_head > 0 else float("nan"),
        max_behind=max(int(s.sent - s.counted) for s in samples),
        behind_at_end=int(samples[-1].sent - samples[-1].counted),
    )


class SteadyProducer:
    """Readings of the simulated plant stamped "now", one step of every asset per second."""

    def __init__(self, bootstrap: str, topic: str, sim: PlantSimulator) -> None:
        self.chunk = sim.generate()
        self.assets = list(sim.assets)
        self.keys = [a.encode() for a in self.assets]
        self.topic = topic
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": "true", "linger.ms": "20"}
        )
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        for step in range(self.chunk.n_steps):
            wait = started + step - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                break
            now_ms = int(time.time() * 1000)
            rows = self.chunk.values[step].tolist()
            for a, asset in enumerate(self.assets):
                value = encode_reading(asset, now_ms, dict(zip(SIGNALS, rows[a], strict=True)))
                self.producer.produce(self.topic, value, self.keys[a])
                self.sent += 1
            self.producer.poll(0)
        left = self.producer.flush(60)
        if left:
            say(f"producer: {left} readings undelivered")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def rss_of(mon: Monitor) -> float:
    return mon.rss_mb()[0]


def soak(args: argparse.Namespace, work: Path) -> tuple[list[Sample], Summary]:
    with broker(work) as bootstrap:
        model_dir = train("pca", args.assets, args.history_s, 32, 1, work / "models")
        topic = f"soak-{int(time.time())}"
        create_topic(bootstrap, topic, args.partitions)
        seconds = int(args.minutes * 60) + 5
        sim = PlantSimulator(
            SimConfig(
                n_assets=args.assets,
                period_ms=1000,
                start_ms=int(time.time() * 1000),
                duration_s=seconds,
                seed=args.seed,
                plant_seed=PLANT_SEED,
                faults=int(args.faults_per_hour * args.minutes / 60),
                control_assets=1,
                fault_duration_s=(60.0, 300.0),
            )
        )
        producer = SteadyProducer(bootstrap, topic, sim)
        say(f"{args.assets} assets at 1 Hz for {args.minutes:g} min on {topic}")
        mon = Monitor(bootstrap, model_dir, topic, work / "logs", sets=args.set)
        samples: list[Sample] = []
        try:
            mon.wait_assigned()
            producer.start()
            started = time.monotonic()
            next_report = started + args.interval_min * 60
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(
                    min(args.sample_s, max(0.0, args.minutes * 60 - (time.monotonic() - started)))
                )
                mon.check_alive()
                got = mon.scrape()
                if got is None:
                    continue
                samples.append(
                    Sample(
                        at_s=time.monotonic() - started,
                        rss_mb=rss_of(mon),
                        sent=producer.sent,
                        counted=got["messages"],
                        buckets=got["buckets"],
                    )
                )
                if time.monotonic() >= next_report:
                    s = samples[-1]
                    say(
                        f"{s.at_s / 60:5.1f} min: rss {s.rss_mb:.0f} MB, "
                        f"{s.sent:,} sent, {int(s.sent - s.counted):,} behind"
                    )
                    next_report += args.interval_min * 60
        finally:
            producer.close()
            mon.stop()
    if len(samples) < 3:
        raise RuntimeError(f"only {len(samples)} samples: the run was too short")
    return samples, summarise(samples, args.warmup_min * 60)


def markdown(rows: Sequence[Interval], summary: Summary) -> str:
    lines = [
        "| minutes | RSS MB | p50 ms | p99 ms | windows | readings behind |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.start_min:g}–{r.end_min:g} | {r.rss_mb:.0f} | {r.p50_ms:.0f} | "
            f"{r.p99_ms:.0f} | {r.windows:,.0f} | {r.behind:,} |"
        )
    s = summary
    lines += [
        "",
        f"{s.minutes:g} min, {s.readings_sent:,} readings sent, {s.readings_counted:,} counted; "
        f"RSS {s.rss_start_mb:g} → {s.rss_end_mb:g} MB after warm-up, growth "
        f"{s.growth_mb_per_h:g} MB/h (least squares); p99 {s.p99_first_third_ms:g} ms in the "
        f"first third, {s.p99_last_third_ms:g} ms in the last (×{s.p99_drift:g}); at most "
        f"{s.max_behind:,} readings behind, {s.behind_at_end:,} at the end.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="production time")
    parser.add_argument("--assets", type=int, default=300, help="pumps at 1 Hz (5 signals each)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--history-s", type=int, default=3600, help="training history per asset")
    parser.add_argument("--faults-per-hour", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-s", type=float, default=15.0)
    parser.add_argument("--interval-min", type=float, default=5.0)
    parser.add_argument("--warmup-min", type=float, default=5.0)
    parser.add_argument("--set", action="append", default=[], help="a monitor setting, repeatable")
    parser.add_argument("--out", type=Path, help="write samples and summary as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plantwatch-soak-") as tmp:
        work = Path(tmp)
        (work / "logs").mkdir()
        samples, summary = soak(args, work)
    rows = intervals(samples, args.interval_min * 60)
    print(markdown(rows, summary))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "summary": asdict(summary),
                    "intervals": [asdict(r) for r in rows],
                    "samples": [
                        {**asdict(s), "buckets": {str(k): v for k, v in s.buckets.items()}}
                        for s in samples
                    ],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

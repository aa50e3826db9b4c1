"""Chaos on a real broker: ``plantwatch run`` SIGKILLed at random, restarted, every alert checked.

For each delivery mode: the simulator's plant, with labelled faults and a fault-free control
asset, is produced to a fresh sensors topic at a steady rate; meanwhile a ``plantwatch run``
subprocess is started, SIGKILLed after a random time (during start-up, a state restore, a
batch, a transaction: wherever it happens to be) and started again, ``--kills`` times. A last
instance then runs until the group has committed every reading and is stopped with SIGTERM.

The reference is the same readings pushed through the same ``Monitor`` in-process, with the
same settings and no crash (``alert_id`` is derived from asset, model and start, so a replay
after a crash must give the same ids). Checks, on the alert topic read by a
``read_committed`` consumer:

* every expected ``alert_id`` and event is there (nothing lost), and no other (a duplicate
  under a new id, which a consumer could not drop, would show here);
* exactly-once: no event (``alert_id``, ``event``, ``window_at``) appears twice;
  at-least-once: the events a crash made it send again are counted, all under their ids;
* no instance exited by itself (no crash loop), and the last one stopped cleanly.

    .venv/bin/python bench/chaos.py                     # both modes, 20 kills each, ~8 min
    .venv/bin/python bench/chaos.py --kills 5 --produce-s 40 --modes exactly_once  # ~2 min
    .venv/bin/python bench/chaos.py --bootstrap-servers 127.0.0.1:9092 --json chaos.json

Without ``--bootstrap-servers`` a throwaway local broker (``plantwatch broker``'s, from the
cached jars) is started on free ports. Progress goes to stderr; the table, the exact command
and the runtime to stdout; the exit code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from alerts.events import SCHEMA, decode_event
from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import Settings, load_settings
from stream.schema import ReadingDecoder, SensorReading, encode_reading
from stream.simulator import SIGNALS, PlantSimulator, SimConfig
from stream.state import STATE_TOPIC_CONFIG, ensure_topics

PLANT_SEED = 21
#: Simulated time starts here (in the past: no reading is "in the future"); history before.
START_MS = 1_795_899_600_000
ROOT = Path(__file__).resolve().parent.parent
EventKey = tuple[str, str, str]


def say(message: str) -> None:
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


# -- the plant and the model ---------------------------------------------------------------


def simulator(args: argparse.Namespace) -> PlantSimulator:
    return PlantSimulator(
        SimConfig(
            n_assets=args.assets,
            period_ms=1000,
            start_ms=START_MS,
            duration_s=args.duration_s,
            seed=args.seed,
            plant_seed=PLANT_SEED,
            faults=args.faults,
            control_assets=1,
            fault_kinds=("level_shift", "cavitation", "bearing_wear"),
            fault_duration_s=(120.0, 300.0),
            warmup_s=300.0,
        )
    )


def train(n_assets: int, hours: float) -> TrainedModel:
    """A PCA model on fault-free history of the same plant (the day before)."""
    sim = PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=1000,
            start_ms=START_MS - int(hours * 3_600_000),
            duration_s=hours * 3600,
            seed=1,
            plant_seed=PLANT_SEED,
        )
    )
    values, segments = sim.generate().by_asset()
    return train_model(values, SIGNALS, segments=segments, scorer="pca", window=32)


def messages(sim: PlantSimulator) -> list[tuple[bytes, bytes]]:
    """Every reading of the run as (key, value), in time order."""
    chunk = sim.generate()
    out: list[tuple[bytes, bytes]] = []
    rows, stamps = chunk.values.tolist(), chunk.ts_ms.tolist()
    for t in range(chunk.n_steps):
        for a, asset in enumerate(sim.assets):
            values = dict(zip(SIGNALS, rows[t][a], strict=True))
            out.append((asset.encode(), encode_reading(asset, stamps[t][a], values)))
    return out


def reference_events(
    model: TrainedModel, settings: Settings, msgs: Sequence[tuple[bytes, bytes]]
) -> list[EventKey]:
    """The alert events of an undisturbed run: the same readings through the same Monitor."""
    decoder = ReadingDecoder(allowed_signals=model.signals)
    readings = [r for _, v in msgs if isinstance(r := decoder.decode(v), SensorReading)]
    monitor = Monitor.from_settings(model, settings)
    events: list[EventKey] = []
    batch = settings.consumer.batch_size
    for i in range(0, len(readings), batch):
        outcome = monitor.process(readings[i : i + batch], now_ms=int(time.time() * 1000))
        events.extend((e.alert_id, e.event, e.window_at) for e in outcome.events)
    return events


# -- Kafka -------------------------------------------------------------------------------


def produce_steadily(
    bootstrap: str, topic: str, msgs: Sequence[tuple[bytes, bytes]], seconds: float
) -> threading.Thread:
    """Send ``msgs`` evenly over ``seconds`` from a thread (key = asset, idempotent)."""

    def target() -> None:
        producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": "true", "linger.ms": "20"}
        )
        started = time.monotonic()
        per_s = len(msgs) / seconds
        for i, (key, value) in enumerate(msgs):
            wait = started + i / per_s - time.monotonic()
            if wait > 0.005:
                time.sleep(wait)
            producer.produce(topic, value, key)
            producer.poll(0)
        left = producer.flush(60)
        if left:
            say(f"producer: {left} readings undelivered")

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Readings of ``topic`` the group has not committed yet."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = consumer.committed(tps, timeout=10)
        total = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 10)
            total += high - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def read_events(bootstrap: str, topic: str, isolation: str) -> list[EventKey]:
    """Every alert event on ``topic`` as (alert_id, event, window_at), to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "isolation.level": isolation,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: list[EventKey] = []
    done: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(done) < len(meta.partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition() or 0)
                    continue
                if dict(msg.headers() or []).get("schema") == SCHEMA.encode():
                    e = decode_event(msg.value() or b"")
                    out.append((e.alert_id, e.event, e.window_at))
    finally:
        consumer.close()
    return out


# -- the monitor under SIGKILL -----------------------------------------------------------


@dataclass
class Life:
    """One ``plantwatch run`` instance: how long it lived and how it ended."""

    alive_s: float
    #: Seconds from start to its first partition assignment (None: killed before).
    assigned_after_s: float | None
    how: str  # "killed", "crashed rc=N", "stopped rc=N"


@dataclass
class ModeResult:
    mode: str
    kills: int
    kills_after_assignment: int
    unexpected_exits: int
    final_rc: int | None
    readings: int
    expected_alerts: int
    alerts_found: int
    missing_ids: list[str]
    extra_ids: list[str]
    events_expected: int
    events_found: int
    duplicate_events: int
    missing_events: int
    #: Distinct events the undisturbed run did not send (another id, time or kind).
    other_events: int
    aborted_seen_uncommitted: int
    longest_start_s: float
    wall_s: float
    lives: list[Life] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.missing_ids
            and not self.extra_ids
            and self.other_events == 0
            and self.unexpected_exits == 0
            and self.final_rc == 0
            and (self.mode != "exactly_once" or self.duplicate_events == 0)
        )


def spawn(sets: Sequence[str], model_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "plantwatch.cli", "run", "--model", str(model_dir)]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def watch(proc: subprocess.Popen[bytes], log_path: Path, seconds: float) -> float | None:
    """Wait up to ``seconds`` (or until it exits); when it was first assigned partitions."""
    started = time.monotonic()
    assigned: float | None = None
    while time.monotonic() - started < seconds and proc.poll() is None:
        if assigned is None and b"assigned partitions" in log_path.read_bytes():
            assigned = time.monotonic() - started
        time.sleep(0.1)
    if assigned is None and b"assigned partitions" in log_path.read_bytes():
        assigned = time.monotonic() - started
    return assigned


def run_mode(
    args: argparse.Namespace,
    bootstrap: str,
    mode: str,
    model: TrainedModel,
    model_dir: Path,
    msgs: Sequence[tuple[bytes, bytes]],
    work: Path,
) -> ModeResult:
    started = time.monotonic()
    rng = random.Random(args.seed)
    tag = f"chaos-{mode.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    topics = {p: f"{tag}.{p}" for p in ("sensors", "alerts", "dlq", "notices", "state")}
    ensure_topics(
        {"bootstrap.servers": bootstrap},
        {**{t: {} for p, t in topics.items() if p != "state"}, topics["state"]: STATE_TOPIC_CONFIG},
        partitions=args.partitions,
        partitioned_like={topics["state"]: topics["sensors"]},
    )
    sets = [
        f'kafka.bootstrap_servers="{bootstrap}"',
        f'kafka.group_id="{tag}"',
        *(f'topics.{p}="{t}"' for p, t in topics.items()),
        f'delivery.mode="{mode}"',
        # The shipped default (10 s): an at-least-once crash replays up to that much.
        f"delivery.checkpoint_interval_s={args.checkpoint_interval_s}",
        "consumer.batch_size=500",
        "consumer.batch_wait_ms=100",
        "metrics.enabled=false",
        # A killed member leaves the group when its session times out: 6 s, not 45 s, so
        # that the next instance's assignment does not wait most of a minute for it.
        f'kafka.properties={{"session.timeout.ms" = "{args.session_timeout_ms}"}}',
    ]
    settings = load_settings(env={}, sets=sets)
    expected = reference_events(model, settings, msgs)
    say(f"{mode}: reference run: {len(expected)} alert events ({time.monotonic() - started:.0f} s)")
    producer = produce_steadily(bootstrap, topics["sensors"], msgs, args.produce_s)

    lives: list[Life] = []
    kills = unexpected = 0
    lo, hi = args.kill_after_s
    while kills < args.kills:
        log_path = work / f"{tag}-{len(lives):02d}.log"
        proc = spawn(sets, model_dir, log_path)
        t0 = time.monotonic()
        assigned = watch(proc, log_path, rng.uniform(lo, hi))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            lives.append(Life(time.monotonic() - t0, assigned, "killed"))
        else:
            unexpected += 1
            lives.append(Life(time.monotonic() - t0, assigned, f"crashed rc={proc.returncode}"))
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            say(f"{mode}: an instance exited by itself (rc {proc.returncode}):")
            for line in tail:
                say("    " + line)
            if unexpected > args.kills:
                break
        say(f"{mode}: {kills}/{args.kills} kills ({lives[-1].alive_s:.1f} s, {lives[-1].how})")

    # The last instance: runs until every reading is committed, then a clean stop.
    log_path = work / f"{tag}-final.log"
    proc = spawn(sets, model_dir, log_path)
    t0 = time.monotonic()
    producer.join()
    deadline = time.monotonic() + args.settle_s
    assigned = None
    while time.monotonic() < deadline and proc.poll() is None:
        waited = watch(proc, log_path, 1.0)
        if assigned is None and waited is not None:
            assigned = time.monotonic() - t0
        # Assigned first: the killed instances may have committed everything already, and
        # a SIGTERM before the signal handlers are installed is a kill, not a stop.
        if assigned is not None and lag(bootstrap, tag, topics["sensors"], args.partitions) == 0:
            break
    final_rc: int | None = proc.poll()
    if final_rc is None:
        proc.send_signal(signal.SIGTERM)
        try:
            final_rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            final_rc = proc.wait()
    lives.append(Life(time.monotonic() - t0, assigned, f"stopped rc={final_rc}"))
    say(f"{mode}: last instance ran {lives[-1].alive_s:.0f} s and stopped with rc {final_rc}")
    if final_rc != 0:
        say(f"{mode}: the last instance ended with rc {final_rc}; log {log_path}")
    left = lag(bootstrap, tag, topics["sensors"], args.partitions)

    found = read_events(bootstrap, topics["alerts"], "read_committed")
    seen_uncommitted = read_events(bootstrap, topics["alerts"], "read_uncommitted")
    want_ids = {k[0] for k in expected}
    got_ids = {k[0] for k in found}
    copies = Counter(found)
    starts = [life.assigned_after_s for life in lives if life.assigned_after_s is not None]
    return ModeResult(
        mode=mode,
        kills=kills,
        kills_after_assignment=sum(
            1 for life in lives if life.how == "killed" and life.assigned_after_s is not None
        ),
        unexpected_exits=unexpected,
        final_rc=final_rc if left == 0 else -1,
        readings=len(msgs),
        expected_alerts=len(want_ids),
        alerts_found=len(got_ids & want_ids),
        missing_ids=sorted(want_ids - got_ids),
        extra_ids=sorted(got_ids - want_ids),
        events_expected=len(expected),
        events_found=len(found),
        duplicate_events=sum(n - 1 for n in copies.values() if n > 1),
        missing_events=len(set(expected) - set(found)),
        other_events=len(set(found) - set(expected)),
        aborted_seen_uncommitted=len(seen_uncommitted) - len(found),
        longest_start_s=max(starts, default=float("nan")),
        wall_s=time.monotonic() - started,
        lives=lives,
    )


# -- the report --------------------------------------------------------------------------


def table(results: Sequence[ModeResult]) -> str:
    head = (
        "| mode | kills (after assignment) | crashes | readings | alert ids expected | "
        "found | missing | extra ids | events expected / found | duplicate events | "
        "missing events | other events | aborted (read_uncommitted only) | "
        "longest start → assigned | wall | verdict |"
    )
    rows = [head, "|" + "---|" * 16]
    for r in results:
        rows.append(
            f"| {r.mode} | {r.kills} ({r.kills_after_assignment}) | {r.unexpected_exits} | "
            f"{r.readings} | {r.expected_alerts} | {r.alerts_found} | {len(r.missing_ids)} | "
            f"{len(r.extra_ids)} | {r.events_expected} / {r.events_found} | "
            f"{r.duplicate_events} | {r.missing_events} | {r.other_events} | "
            f"{r.aborted_seen_uncommitted} | "
            f"{r.longest_start_s:.1f} s | {r.wall_s:.0f} s | {'ok' if r.ok else 'FAILED'} |"
        )
    return "\n".join(rows)


def start_broker(stack_dir: Path) -> tuple[str, Any]:
    from stream.broker import LocalBroker, free_port

    broker = LocalBroker(port=free_port(), controller_port=free_port(), data_dir=stack_dir)
    bootstrap = broker.start(wait_s=180, progress=say)
    return bootstrap, broker


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--modes", default="at_least_once,exactly_once")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs per mode (default 20)")
    p.add_argument(
        "--kill-after-s",
        type=float,
        nargs=2,
        default=(3.0, 14.0),
        metavar=("MIN", "MAX"),
        help="each instance lives a uniform random time in this range (default 3 14)",
    )
    p.add_argument("--assets", type=int, default=6)
    p.add_argument("--faults", type=int, default=6)
    p.add_argument("--duration-s", type=float, default=2400.0, help="simulated seconds")
    p.add_argument(
        "--produce-s", type=float, default=150.0, help="wall seconds the readings take to send"
    )
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument(
        "--checkpoint-interval-s",
        type=float,
        default=10.0,
        help="the monitor's delivery.checkpoint_interval_s (default 10, as shipped)",
    )
    p.add_argument(
        "--session-timeout-ms",
        type=int,
        default=6000,
        help="the monitor's session.timeout.ms: how soon a killed member leaves the group",
    )
    p.add_argument("--history-h", type=float, default=4.0, help="training history, hours")
    p.add_argument("--settle-s", type=float, default=180.0, help="most the last instance gets")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--bootstrap-servers", help="use this broker instead of a throwaway one")
    p.add_argument("--json", help="write every figure and each instance's life here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plantwatch-chaos-") as tmp:
        work = Path(tmp)
        broker = None
        bootstrap = args.bootstrap_servers
        if not bootstrap:
            bootstrap, broker = start_broker(work / "broker")
        try:
            say("training the model")
            model = train(args.assets, args.history_h)
            model_dir = model.save(work / "model")
            sim = simulator(args)
            msgs = messages(sim)
            say(f"{len(msgs)} readings, {len(sim.faults)} faults on {args.assets} assets")
            results = [
                run_mode(args, bootstrap, mode.strip(), model, model_dir, msgs, work)
                for mode in args.modes.split(",")
                if mode.strip()
            ]
        finally:
            if broker is not None:
                broker.stop()
    print(table(results))
    for r in results:
        if r.missing_ids or r.extra_ids:
            print(f"\n{r.mode}: missing {r.missing_ids}, extra {r.extra_ids}")
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    print(f"\ncommand: .venv/bin/python bench/chaos.py {shlex.join(argv_shown)}".rstrip())
    print(f"runtime: {time.monotonic() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2) + "\n"
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

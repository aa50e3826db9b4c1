"""Broker bounces under load: a three-node KRaft cluster, each node stopped cleanly and killed.

As Kafka's own ``tests/kafkatest/tests/core/transactions_test.py`` does, but with
``plantwatch run`` as the transactional copier: a local cluster of three combined
broker+controller nodes (``stream.broker.LocalCluster``, the cached jars; replication factor
3, ``min.insync.replicas`` 2 for every topic, the offsets and transaction state included) is
started, and for each delivery mode:

* the simulator's plant, with labelled faults and a fault-free control asset, is produced to
  a fresh sensors topic at a steady rate by an idempotent producer (acks=all);
* one ``plantwatch run`` subprocess consumes it, bootstrap = all three nodes;
* each node in turn is bounced cleanly (SIGTERM: a controlled shutdown, leadership moved
  first), then each in turn hard (SIGKILL: its partitions have no leader until the
  controller fences it). Between two bounces the cluster waits until the bounced node has
  left the in-sync replicas (so the bounce is seen), then restarts it and waits until every
  partition has all three replicas in sync again, so that no bounce takes down the last
  in-sync copy;
* the monitor's ``plantwatch_messages_total`` is scraped every 0.5 s: the longest time it
  did not move while readings were waiting is each bounce's stall.

Checks, once the group has committed every reading and the monitor is stopped (SIGTERM):

* input: the sensors topic holds exactly the readings produced (as a multiset: nothing lost
  and nothing doubled by the producer's retries across leader changes), and the group's
  committed offsets reach the end of every partition (every reading consumed);
* output: on the alert topic, read by a ``read_committed`` consumer, every expected
  ``alert_id`` and event is there and no other (expected: the same readings through the same
  ``Monitor`` in-process, no bounce); exactly-once: no event twice;
* the monitor never exited by itself and stopped cleanly (rc 0).

    .venv/bin/python bench/cluster_chaos.py                      # both modes, ~12 min
    .venv/bin/python bench/cluster_chaos.py --modes exactly_once --bounces hard --nodes-to-bounce 1
    .venv/bin/python bench/cluster_chaos.py --json cluster.json

Progress goes to stderr; the tables, the exact command and the runtime to stdout; the exit
code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos import (
    lag,
    messages,
    produce_steadily,
    read_events,
    reference_events,
    simulator,
    spawn,
    train,
)

from models.artifact import TrainedModel
from plantwatch.settings import load_settings
from stream.broker import free_port
from stream.broker.cluster import LocalCluster
from stream.broker.probe import admin_client
from stream.state import STATE_TOPIC_CONFIG, ensure_topics

_MESSAGES = re.compile(r"^plantwatch_messages_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


def say(message: str) -> None:
    print(f"[cluster-chaos] {message}", file=sys.stderr, flush=True)


# -- the monitor's progress --------------------------------------------------------------


class Progress:
    """``plantwatch_messages_total`` (all results) scraped every ``period_s`` from a thread."""

    def __init__(self, port: int, period_s: float = 0.5) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    text = response.read().decode("utf-8", errors="replace")
            except OSError:
                continue  # not serving yet, or stopping
            self.samples.append((time.monotonic(), sum(float(v) for v in _MESSAGES.findall(text))))

    def start(self) -> Progress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time in [start, end] the count did not move (seconds).

        A stretch still flat at ``end`` counts up to ``end``: the scraper sees progress only
        every ``period_s``, so figures are that coarse.
        """
        last_move = start
        longest = 0.0
        previous: float | None = None
        for t, count in self.samples:
            if t < start:
                previous = count
                continue
            if t > end:
                break
            if previous is not None and count > previous:
                longest = max(longest, t - last_move)
                last_move = t
            previous = count
        return max(longest, min(end, self.samples[-1][0] if self.samples else end) - last_move)

    def count_at(self, t: float) -> float:
        before = [c for s, c in self.samples if s <= t]
        return before[-1] if before else 0.0


# -- bounces -----------------------------------------------------------------------------


@dataclass
class Bounce:
    node: int
    hard: bool
    #: Partitions the node led just before (all topics, the internal ones included).
    led: int
    down_s: float
    #: Stop → the node out of every ISR (the controller saw it go).
    isr_shrunk_s: float
    restart_s: float
    #: Restart → every partition with three in-sync replicas again.
    isr_full_s: float
    #: Partitions whose leadership went back to the restarted node (preferred election).
    leaders_moved_back: int
    #: The longest time the monitor made no progress from the stop to 10 s after the ISR
    #: was full again (NaN: the bounce came after the last reading was produced).
    stall_s: float
    started: float = 0.0
    ended: float = 0.0
    started_unix: float = 0.0


def leaders(admin: Any) -> Counter[int]:
    meta = admin.list_topics(timeout=10)
    return Counter(
        p.leader for t in meta.topics.values() if t.error is None for p in t.partitions.values()
    )


def wait_out_of_isr(admin: Any, node: int, timeout_s: float) -> float:
    """Seconds until ``node`` leads nothing and is in no ISR (capped at ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            meta = admin.list_topics(timeout=5)
        except Exception:
            time.sleep(0.5)
            continue
        if not any(
            p.leader == node or node in p.isrs
            for t in meta.topics.values()
            if t.error is None
            for p in t.partitions.values()
        ):
            return time.monotonic() - started
        time.sleep(0.25)
    say(f"node {node} still in an ISR after {timeout_s:.0f} s; restarting it anyway")
    return time.monotonic() - started


def bounce(cluster: LocalCluster, admin: Any, node: int, *, hard: bool) -> Bounce:
    led = leaders(admin)[node]
    started = time.monotonic()
    started_unix = time.time()
    down_s = cluster.stop_node(node, hard=hard)
    shrunk = wait_out_of_isr(admin, node, 60.0)
    restart_s = cluster.start_node(node, wait_s=180)
    full = cluster.wait_fully_replicated(timeout_s=180, admin=admin)
    # As a cluster does by itself within 5 minutes: the restarted node leads its share again.
    moved = cluster.elect_preferred_leaders(admin)
    return Bounce(
        node=node,
        hard=hard,
        led=led,
        down_s=down_s,
        isr_shrunk_s=shrunk,
        restart_s=restart_s,
        isr_full_s=full,
        leaders_moved_back=moved,
        stall_s=0.0,
        started=started,
        ended=time.monotonic(),
        started_unix=started_unix,
    )


# -- input and output --------------------------------------------------------------------


def read_values(bootstrap: str, topic: str) -> dict[bytes, list[tuple[int, int, int]]]:
    """Every value on ``topic`` (read_committed), to the end of each partition: where each
    one is, as (partition, offset, append timestamp ms)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cluster-chaos-input-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out: dict[bytes, list[tuple[int, int, int]]] = {}
    done: set[int] = set()
    deadline = time.monotonic() + 120
    try:
        while len(done) < len(meta.partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(msg.partition() or 0)
                    continue
                where = (msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1])
                out.setdefault(msg.value() or b"", []).append(where)
    finally:
        consumer.close()
    return out


@dataclass
class ModeResult:
    mode: str
    readings: int
    #: Readings produced and absent from the sensors topic (lost by the producer or broker).
    input_missing: int
    #: Extra copies of readings on the sensors topic: the input producer (librdkafka's
    #: idempotent producer) wrote them twice across a leader change. Not the monitor's to
    #: undo (another offset); reported, and the monitor must consume them like any other.
    input_extra: int
    on_topic: int
    #: Readings of the sensors topic the group had not committed at the end.
    lag_left: int
    #: The monitor's plantwatch_messages_total at the end (replays after an abort included).
    monitor_counted: int
    expected_alerts: int
    alerts_found: int
    missing_ids: list[str]
    extra_ids: list[str]
    events_expected: int
    events_found: int
    duplicate_events: int
    missing_events: int
    other_events: int
    aborted_seen_uncommitted: int
    exited_by_itself: bool
    final_rc: int | None
    longest_stall_s: float
    wall_s: float
    bounces: list[Bounce] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.input_missing == 0
            and self.lag_left == 0
            and self.monitor_counted >= self.on_topic
            and not self.missing_ids
            and not self.extra_ids
            and self.missing_events == 0
            and self.other_events == 0
            and not self.exited_by_itself
            and self.final_rc == 0
            and (self.mode != "exactly_once" or self.duplicate_events == 0)
        )


def wait_assigned(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if b"assigned partitions" in log_path.read_bytes():
            return True
        time.sleep(0.2)
    return False


def run_mode(
    args: argparse.Namespace,
    cluster: LocalCluster,
    mode: str,
    model: TrainedModel,
    model_dir: Path,
    msgs: Sequence[tuple[bytes, bytes]],
    work: Path,
) -> ModeResult:
    started = time.monotonic()
    bootstrap = cluster.bootstrap
    admin = admin_client(bootstrap)
    tag = f"cluster-chaos-{mode.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    topics = {p: f"{tag}.{p}" for p in ("sensors", "alerts", "dlq", "notices", "state")}
    # Replication factor -1: the cluster's default, 3; min.insync.replicas 2 likewise.
    ensure_topics(
        {"bootstrap.servers": bootstrap},
        {**{t: {} for p, t in topics.items() if p != "state"}, topics["state"]: STATE_TOPIC_CONFIG},
        partitions=args.partitions,
        partitioned_like={topics["state"]: topics["sensors"]},
    )
    metrics_port = free_port()
    sets = [
        f'kafka.bootstrap_servers="{bootstrap}"',
        f'kafka.group_id="{tag}"',
        *(f'topics.{p}="{t}"' for p, t in topics.items()),
        f'topics.commands="{tag}.commands"',
        f'delivery.mode="{mode}"',
        f"delivery.checkpoint_interval_s={args.checkpoint_interval_s}",
        "consumer.batch_size=500",
        "consumer.batch_wait_ms=100",
        "metrics.enabled=true",
        f"metrics.port={metrics_port}",
    ]
    settings = load_settings(env={}, sets=sets)
    expected = reference_events(model, settings, msgs)
    say(f"{mode}: reference run: {len(expected)} alert events")

    log_path = work / f"{tag}.log"
    proc = spawn(sets, model_dir, log_path)
    progress = Progress(metrics_port).start()
    if not wait_assigned(proc, log_path, 120):
        say(f"{mode}: the monitor was not assigned its partitions within 120 s; log {log_path}")
    producer = produce_steadily(bootstrap, topics["sensors"], msgs, args.produce_s)
    produce_began = time.monotonic()
    load_end = produce_began + args.produce_s
    time.sleep(args.first_bounce_after_s)

    bounces: list[Bounce] = []
    plan = [(node, kind == "hard") for kind in args.bounces for node in args.nodes_to_bounce]
    for node, hard in plan:
        if proc.poll() is not None:
            say(f"{mode}: the monitor exited (rc {proc.returncode}); no more bounces")
            break
        b = bounce(cluster, admin, node, hard=hard)
        bounces.append(b)
        say(
            f"{mode}: node {node} {'SIGKILL' if hard else 'SIGTERM'}: led {b.led}, "
            f"down {b.down_s:.1f} s, out of ISR {b.isr_shrunk_s:.1f} s, restarted "
            f"{b.restart_s:.1f} s, ISR full {b.isr_full_s:.1f} s, "
            f"{b.leaders_moved_back} leaders moved back"
        )
        time.sleep(args.between_s)
    if time.monotonic() > load_end:
        say(
            f"{mode}: the bounces outlasted production ({args.produce_s:.0f} s); "
            "give a longer --produce-s"
        )

    producer.join()
    produced_at = time.monotonic()
    deadline = produced_at + args.settle_s
    left = -1
    while time.monotonic() < deadline and proc.poll() is None:
        left = lag(bootstrap, tag, topics["sensors"], args.partitions)
        if left == 0:
            break
        time.sleep(1.0)
    exited = proc.poll() is not None
    final_rc: int | None = proc.returncode if exited else None
    if not exited:
        proc.send_signal(signal.SIGTERM)
        try:
            final_rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            final_rc = proc.wait()
    progress.stop()
    if exited or final_rc != 0:
        say(f"{mode}: the monitor ended with rc {final_rc}; log {log_path}")
        for line in log_path.read_text(errors="replace").splitlines()[-15:]:
            say("    " + line)
    left = lag(bootstrap, tag, topics["sensors"], args.partitions)
    for b in bounces:
        b.stall_s = (
            progress.longest_stall(b.started, min(b.ended + 10.0, load_end))
            if b.started < load_end
            else float("nan")
        )

    produced = Counter(value for _, value in msgs)
    places = read_values(bootstrap, topics["sensors"])
    on_topic = Counter({value: len(where) for value, where in places.items()})
    for value in on_topic - produced:
        # Written twice by the input producer: where, and when against the bounces.
        say(f"{mode}: a reading is on the sensors topic {on_topic[value]} times: {places[value]}")
        say(f"    bounces began at (unix ms): {[int(b.started_unix * 1000) for b in bounces]}")
    found = read_events(bootstrap, topics["alerts"], "read_committed")
    seen_uncommitted = read_events(bootstrap, topics["alerts"], "read_uncommitted")
    want_ids = {k[0] for k in expected}
    got_ids = {k[0] for k in found}
    copies = Counter(found)
    return ModeResult(
        mode=mode,
        readings=len(msgs),
        input_missing=sum((produced - on_topic).values()),
        input_extra=sum((on_topic - produced).values()),
        on_topic=sum(on_topic.values()),
        lag_left=left,
        monitor_counted=int(progress.samples[-1][1]) if progress.samples else 0,
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
        exited_by_itself=exited,
        final_rc=final_rc,
        longest_stall_s=progress.longest_stall(produce_began + 5.0, min(load_end, produced_at)),
        wall_s=time.monotonic() - started,
        bounces=bounces,
    )


# -- the report --------------------------------------------------------------------------


def tables(results: Sequence[ModeResult]) -> str:
    head = (
        "| mode | readings produced / missing / extra copies on the topic | lag left | "
        "monitor counted | alert ids expected / found | missing ids | extra ids | "
        "events expected / found | "
        "duplicate events | missing events | other events | aborted (read_uncommitted only) "
        "| longest stall | monitor exited by itself | final rc | wall | verdict |"
    )
    rows = [head, "|" + "---|" * 17]
    for r in results:
        rows.append(
            f"| {r.mode} | {r.readings} / {r.input_missing} / {r.input_extra} | {r.lag_left} | "
            f"{r.monitor_counted} | {r.expected_alerts} / {r.alerts_found} | "
            f"{len(r.missing_ids)} | {len(r.extra_ids)} | {r.events_expected} / "
            f"{r.events_found} | {r.duplicate_events} | {r.missing_events} | "
            f"{r.other_events} | {r.aborted_seen_uncommitted} | {r.longest_stall_s:.1f} s | "
            f"{'yes' if r.exited_by_itself else 'no'} | {r.final_rc} | {r.wall_s:.0f} s | "
            f"{'ok' if r.ok else 'FAILED'} |"
        )
    rows += [
        "",
        "| mode | node | bounce | partitions it led | stop took | out of every ISR after | "
        "restart took | ISR full after | leaders moved back | monitor's longest stall |",
        "|" + "---|" * 10,
    ]
    for r in results:
        for b in r.bounces:
            rows.append(
                f"| {r.mode} | {b.node} | {'hard (SIGKILL)' if b.hard else 'clean (SIGTERM)'} | "
                f"{b.led} | {b.down_s:.1f} s | {b.isr_shrunk_s:.1f} s | {b.restart_s:.1f} s | "
                f"{b.isr_full_s:.1f} s | {b.leaders_moved_back} | {b.stall_s:.1f} s |"
            )
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--modes", default="exactly_once,at_least_once")
    p.add_argument(
        "--bounces",
        default="clean,hard",
        type=lambda s: [k.strip() for k in s.split(",") if k.strip()],
        help="kinds of bounce, each applied to every node in turn (default clean,hard)",
    )
    p.add_argument(
        "--nodes-to-bounce",
        default="1,2,3",
        type=lambda s: [int(k) for k in s.split(",") if k.strip()],
        help="node ids, in order (default 1,2,3)",
    )
    p.add_argument("--assets", type=int, default=6)
    p.add_argument("--faults", type=int, default=6)
    p.add_argument("--duration-s", type=float, default=2400.0, help="simulated seconds")
    p.add_argument(
        "--produce-s", type=float, default=480.0, help="wall seconds the readings take to send"
    )
    p.add_argument("--first-bounce-after-s", type=float, default=15.0)
    p.add_argument("--between-s", type=float, default=5.0, help="pause after each bounce")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--checkpoint-interval-s", type=float, default=10.0)
    p.add_argument("--history-h", type=float, default=4.0, help="training history, hours")
    p.add_argument("--settle-s", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--json", help="write every figure here")
    p.add_argument(
        "--keep-dir",
        help="run the cluster and the monitors' logs in this folder and keep it "
        "(default: a temporary one, deleted)",
    )
    args = p.parse_args(argv)
    if any(k not in ("clean", "hard") for k in args.bounces):
        p.error(f"--bounces takes clean and/or hard, got {args.bounces}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    results: list[ModeResult] = []
    with contextlib.ExitStack() as stack:
        if args.keep_dir:
            work = Path(args.keep_dir).absolute()
            work.mkdir(parents=True, exist_ok=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="plantwatch-cluster-"))
            work = Path(tmp)
        cluster = LocalCluster(nodes=3, data_dir=work / "cluster")
        say("starting three KRaft nodes")
        cluster.start(wait_s=240, progress=say)
        try:
            say(f"cluster at {cluster.bootstrap} in {time.monotonic() - began:.0f} s")
            model = train(args.assets, args.history_h)
            model_dir = model.save(work / "model")
            sim = simulator(args)
            msgs = messages(sim)
            say(f"{len(msgs)} readings, {len(sim.faults)} faults on {args.assets} assets")
            for mode in (m.strip() for m in args.modes.split(",")):
                if mode:
                    results.append(run_mode(args, cluster, mode, model, model_dir, msgs, work))
        finally:
            cluster.stop()
    print(tables(results))
    for r in results:
        if r.missing_ids or r.extra_ids:
            print(f"\n{r.mode}: missing {r.missing_ids}, extra {r.extra_ids}")
    argv_shown = sys.argv[1:] if argv is None else list(argv)
    print(f"\ncommand: .venv/bin/python bench/cluster_chaos.py {shlex.join(argv_shown)}".rstrip())
    print(f"runtime: {time.monotonic() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2) + "\n"
        )
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

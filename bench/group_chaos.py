"""Chaos in a consumer group: several ``plantwatch run`` processes, one SIGKILLed or SIGSTOPped.

Three scenarios, on a real broker, built on ``chaos.py``'s plant, reference run and
readers (imported, not copied):

* ``group``: three processes in one group on a six-partition sensors topic, the
  simulator's faults arriving at a steady rate; one is SIGKILLed mid-stream. Its partitions
  must move to the others (the time until the group is stable without it, and until their
  committed offsets move again, is reported), no expected alert lost, none extra (an
  ``alert_id`` the undisturbed run did not raise, or a second ``opened`` of one id, is what
  lost state would look like), exactly-once: no event twice for a ``read_committed``
  reader; at-least-once: the replayed events counted, all copies of expected ones.
* ``sigstop``: two processes; one is SIGSTOPped for longer than ``max.poll.interval.ms``
  (10 s here; session 6 s), the other must take its partitions; then SIGCONT: the stale
  instance must drop what it held without writing it (its transaction, if one was open, is
  fenced by the group and aborted; at-least-once: no commit or checkpoint of a lost
  partition), publish nothing the undisturbed run did not, rejoin (be assigned partitions
  again), keep processing and not exit.
* ``throughput``: 1, 2, 3 processes in one group; once the group is stable, a pre-encoded
  burst of readings is produced and the readings/s of the group (the sum of the members'
  ``plantwatch_messages_total``) from the first counted reading to the last is reported,
  with the ratio to one process.

    .venv/bin/python bench/group_chaos.py                                  # all, ~10 min
    .venv/bin/python bench/group_chaos.py --scenarios group --modes exactly_once
    .venv/bin/python bench/group_chaos.py --bootstrap-servers 127.0.0.1:9092 --json g.json

Without ``--bootstrap-servers`` a throwaway local broker is started. Progress goes to
stderr; the tables, the command and the runtime to stdout; exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos import (
    EventKey,
    lag,
    messages,
    produce_steadily,
    read_events,
    reference_events,
    say,
    simulator,
    spawn,
    start_broker,
    train,
)
from e2e_monitor import scrape

from models.artifact import TrainedModel
from plantwatch.settings import load_settings
from stream.broker import free_port
from stream.state import STATE_TOPIC_CONFIG, ensure_topics

#: What the run loop logs when the group took its partitions without a revocation.
LOST_LINE = "lost (this member missed"


# -- a group of processes ----------------------------------------------------------------


@dataclass
class Member:
    """One ``plantwatch run`` process of the group (its client id names it in the group)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def messages(self) -> float | None:
        got = scrape(self.port)
        return None if got is None else float(got["messages"])

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM (a clean stop: checkpoint, commit, close); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


@dataclass
class Group:
    """Topics, settings and members of one scenario run."""

    bootstrap: str
    tag: str
    topics: dict[str, str]
    partitions: int
    sets: list[str]
    model_dir: Path
    work: Path
    members: list[Member] = field(default_factory=list)
    admin: AdminClient | None = None

    @classmethod
    def create(
        cls,
        bootstrap: str,
        prefix: str,
        mode: str,
        partitions: int,
        properties: dict[str, str],
        model_dir: Path,
        work: Path,
        extra: Sequence[str] = (),
    ) -> Group:
        tag = f"{prefix}-{mode.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
        names = ("sensors", "alerts", "dlq", "notices", "state", "commands")
        topics = {p: f"{tag}.{p}" for p in names}
        ensure_topics(
            {"bootstrap.servers": bootstrap},
            {
                **{t: {} for p, t in topics.items() if p != "state"},
                topics["state"]: STATE_TOPIC_CONFIG,
            },
            partitions=partitions,
            partitioned_like={topics["state"]: topics["sensors"]},
        )
        props = ", ".join(f'"{k}" = "{v}"' for k, v in properties.items())
        sets = [
            f'kafka.bootstrap_servers="{bootstrap}"',
            f'kafka.group_id="{tag}"',
            *(f'topics.{p}="{t}"' for p, t in topics.items()),
            f'delivery.mode="{mode}"',
            "consumer.batch_size=500",
            "consumer.batch_wait_ms=100",
            f"kafka.properties={{{props}}}",
            *extra,
        ]
        return cls(bootstrap, tag, topics, partitions, sets, model_dir, work)

    def settings(self) -> Any:
        return load_settings(env={}, sets=[*self.sets, "metrics.enabled=false"])

    def spawn(self) -> Member:
        """A new member: its own client id, transactional id (two exactly-once processes
        must not share one) and metrics port."""
        name = f"{self.tag}-m{len(self.members)}"
        port = free_port()
        sets = [
            *self.sets,
            f'kafka.client_id="{name}"',
            f'delivery.transactional_id="{name}"',
            "metrics.enabled=true",
            f"metrics.port={port}",
        ]
        log_path = self.work / f"{name}.log"
        member = Member(name, spawn(sets, self.model_dir, log_path), log_path, port)
        self.members.append(member)
        return member

    def assignment(self) -> dict[str, list[int]]:
        """client id → sensors partitions, of a stable group ({} while it rebalances)."""
        if self.admin is None:
            self.admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return members(self.admin, self.tag, self.topics["sensors"])

    def committed(self, partitions: Sequence[int]) -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.tag})
        try:
            tps = [TopicPartition(self.topics["sensors"], p) for p in partitions]
            return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        finally:
            consumer.close()

    def partitions_with_data(self) -> set[int]:
        """Sensors partitions with at least one reading so far."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.tag})
        try:
            return {
                p
                for p in range(self.partitions)
                if consumer.get_watermark_offsets(
                    TopicPartition(self.topics["sensors"], p), timeout=10
                )[1]
                > 0
            }
        finally:
            consumer.close()

    def lag(self) -> int:
        return lag(self.bootstrap, self.tag, self.topics["sensors"], self.partitions)

    def wait_stable(self, want: Callable[[dict[str, list[int]]], bool], timeout_s: float) -> float:
        """Seconds until the stable group's assignment satisfies ``want`` (raises on timeout
        or when a member that should run exited)."""
        started = time.monotonic()
        while True:
            got = self.assignment()
            if got and want(got):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"{self.tag}: group not as wanted in {timeout_s:.0f} s: {got}")
            time.sleep(0.25)

    def all_assigned(self, expected: Sequence[Member]) -> Callable[[dict[str, list[int]]], bool]:
        """Exactly ``expected`` in the group, each with partitions, all partitions held."""
        names = {m.name for m in expected}

        def want(got: dict[str, list[int]]) -> bool:
            held = sorted(p for parts in got.values() for p in parts)
            return set(got) == names and all(got.values()) and held == list(range(self.partitions))

        return want

    def stop_all(self) -> dict[str, int]:
        return {m.name: m.stop() for m in self.members if m.proc.returncode is None}


def members(admin: AdminClient, group: str, topic: str) -> dict[str, list[int]]:
    """client.id → assigned partitions of ``topic`` for each member of a stable group ({}
    otherwise; the members read the operator commands topic too)."""
    try:
        desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:  # the coordinator moving or loading: not stable, ask again
        return {}
    if str(desc.state).rsplit(".", 1)[-1] != "STABLE":
        return {}
    return {
        m.client_id: sorted(
            tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic
        )
        for m in desc.members
    }


def produce_burst(bootstrap: str, topic: str, msgs: Sequence[tuple[bytes, bytes]]) -> float:
    """Every message as fast as the client takes them; seconds it took."""
    started = time.monotonic()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": "50", "enable.idempotence": "true"}
    )
    for key, value in msgs:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("readings undelivered")
    return time.monotonic() - started


# -- what the alert topic says -------------------------------------------------------------


@dataclass
class Check:
    """The alert topic against the undisturbed run (``chaos.reference_events``)."""

    expected_alerts: int
    alerts_found: int
    missing_ids: list[str]
    extra_ids: list[str]
    #: Ids with more than one distinct ``opened`` event: a re-alert from lost state.
    reopened_ids: list[str]
    events_expected: int
    events_found: int
    duplicate_events: int
    missing_events: int
    other_events: int
    aborted_seen_uncommitted: int

    @classmethod
    def of(cls, bootstrap: str, topic: str, expected: Sequence[EventKey]) -> Check:
        found = read_events(bootstrap, topic, "read_committed")
        uncommitted = read_events(bootstrap, topic, "read_uncommitted")
        want_ids = {k[0] for k in expected}
        got_ids = {k[0] for k in found}
        opened = Counter(k[0] for k in set(found) if k[1] == "opened")
        copies = Counter(found)
        return cls(
            expected_alerts=len(want_ids),
            alerts_found=len(got_ids & want_ids),
            missing_ids=sorted(want_ids - got_ids),
            extra_ids=sorted(got_ids - want_ids),
            reopened_ids=sorted(i for i, n in opened.items() if n > 1),
            events_expected=len(expected),
            events_found=len(found),
            duplicate_events=sum(n - 1 for n in copies.values() if n > 1),
            missing_events=len(set(expected) - set(found)),
            other_events=len(set(found) - set(expected)),
            aborted_seen_uncommitted=len(uncommitted) - len(found),
        )

    def ok(self, mode: str) -> bool:
        return (
            not self.missing_ids
            and not self.extra_ids
            and not self.reopened_ids
            and self.other_events == 0
            and self.missing_events == 0
            and (mode != "exactly_once" or self.duplicate_events == 0)
        )


def drain(group: Group, readings: int, settle_s: float) -> int:
    """Wait until the group has committed every reading (or ``settle_s``); the lag left."""
    deadline = time.monotonic() + settle_s
    left = group.lag()
    while left and time.monotonic() < deadline:
        time.sleep(1.0)
        left = group.lag()
    return left


# -- group: one of three SIGKILLed -----------------------------------------------------------


@dataclass
class KillResult:
    mode: str
    processes: int
    partitions: int
    readings: int
    victim_partitions: list[int]
    #: Those of them with readings (the offsets timed for "resumed").
    victim_data_partitions: list[int]
    #: Seconds from the SIGKILL until the group is stable without the victim, and until
    #: every one of its partitions' committed offsets has moved past where they were.
    reassigned_s: float
    resumed_s: float
    lag_left: int
    #: Exit codes of the survivors after SIGTERM (0 each), and members that exited early.
    stop_rcs: list[int]
    unexpected_exits: int
    check: Check
    wall_s: float

    @property
    def ok(self) -> bool:
        return (
            self.check.ok(self.mode)
            and self.lag_left == 0
            and self.unexpected_exits == 0
            and all(rc == 0 for rc in self.stop_rcs)
        )


def run_group(
    args: argparse.Namespace,
    bootstrap: str,
    mode: str,
    model: TrainedModel,
    model_dir: Path,
    msgs: Sequence[tuple[bytes, bytes]],
    work: Path,
) -> KillResult:
    started = time.monotonic()
    group = Group.create(
        bootstrap,
        "group",
        mode,
        args.partitions,
        kafka_properties(args),
        model_dir,
        work,
        [f"delivery.checkpoint_interval_s={args.checkpoint_interval_s}"],
    )
    expected = reference_events(model, group.settings(), msgs)
    say(f"group {mode}: reference run: {len(expected)} alert events")
    try:
        for _ in range(args.processes):
            group.spawn()
        group.wait_stable(group.all_assigned(group.members), args.start_s)
        say(f"group {mode}: {args.processes} members stable: {group.assignment()}")
        producer = produce_steadily(bootstrap, group.topics["sensors"], msgs, args.produce_s)
        time.sleep(args.kill_at_s)
        # The victim: a member holding a partition that has readings (assets are spread
        # by their keys' hash, so a partition may have none); "resumed" is timed on those.
        held = group.assignment()
        busy = group.partitions_with_data()
        victim = next(
            (m for m in group.members if set(held.get(m.name, [])) & busy), group.members[0]
        )
        victim_parts = held.get(victim.name) or []
        timed = sorted(set(victim_parts) & busy)
        before = group.committed(timed)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed = time.monotonic()
        survivors = [m for m in group.members if m is not victim]
        say(f"group {mode}: SIGKILLed {victim.name} holding {victim_parts}")
        reassigned = group.wait_stable(group.all_assigned(survivors), args.settle_s)
        say(f"group {mode}: its partitions reassigned {reassigned:.1f} s after the kill")
        resumed = float("nan")
        while time.monotonic() - killed < args.settle_s:
            now = group.committed(timed)
            if timed and all(now[p] > before[p] for p in timed):
                resumed = time.monotonic() - killed
                break
            time.sleep(0.5)
        say(f"group {mode}: their committed offsets moved {resumed:.1f} s after the kill")
        producer.join()
        left = drain(group, len(msgs), args.settle_s)
        unexpected = sum(1 for m in survivors if not m.alive())
        rcs = [m.stop() for m in survivors]
    finally:
        group.stop_all()
    for m in survivors:
        if m.proc.returncode != 0:
            say(f"group {mode}: {m.name} ended rc {m.proc.returncode}; log {m.log_path}")
    check = Check.of(bootstrap, group.topics["alerts"], expected)
    return KillResult(
        mode=mode,
        processes=args.processes,
        partitions=args.partitions,
        readings=len(msgs),
        victim_partitions=victim_parts,
        victim_data_partitions=timed,
        reassigned_s=reassigned,
        resumed_s=resumed,
        lag_left=left,
        stop_rcs=rcs,
        unexpected_exits=unexpected,
        check=check,
        wall_s=time.monotonic() - started,
    )


# -- sigstop: one of two stopped past max.poll.interval.ms -----------------------------------


@dataclass
class StopResult:
    mode: str
    readings: int
    stopped_s: float
    victim_partitions: list[int]
    #: Seconds from the SIGSTOP until the other member held every partition.
    taken_over_s: float
    #: Seconds from the SIGCONT until the stale member said its partitions were lost, and
    #: until the group was stable again with both members holding partitions.
    lost_logged_s: float
    rejoined_s: float
    #: Readings the stale member counted after it rejoined (it keeps processing).
    processed_after_rejoin: float
    #: Transactions the stale member aborted after SIGCONT (exactly-once).
    aborted_after_resume: int
    lag_left: int
    stop_rcs: list[int]
    unexpected_exits: int
    check: Check
    wall_s: float

    @property
    def ok(self) -> bool:
        return (
            self.check.ok(self.mode)
            and self.lag_left == 0
            and self.unexpected_exits == 0
            and all(rc == 0 for rc in self.stop_rcs)
            and self.processed_after_rejoin > 0
            and self.lost_logged_s == self.lost_logged_s  # not NaN: the loss was seen
        )


def run_sigstop(
    args: argparse.Namespace,
    bootstrap: str,
    mode: str,
    model: TrainedModel,
    model_dir: Path,
    msgs: Sequence[tuple[bytes, bytes]],
    work: Path,
) -> StopResult:
    started = time.monotonic()
    props = kafka_properties(args)
    props["max.poll.interval.ms"] = str(args.max_poll_interval_ms)
    group = Group.create(
        bootstrap,
        "sigstop",
        mode,
        args.partitions,
        props,
        model_dir,
        work,
        [f"delivery.checkpoint_interval_s={args.checkpoint_interval_s}"],
    )
    expected = reference_events(model, group.settings(), msgs)
    say(f"sigstop {mode}: reference run: {len(expected)} alert events")
    try:
        stale, other = group.spawn(), group.spawn()
        group.wait_stable(group.all_assigned(group.members), args.start_s)
        say(f"sigstop {mode}: 2 members stable: {group.assignment()}")
        producer = produce_steadily(bootstrap, group.topics["sensors"], msgs, args.produce_s)
        time.sleep(args.stop_at_s)
        held = group.assignment()
        if not set(held.get(stale.name, [])) & group.partitions_with_data():
            stale, other = other, stale  # stop the one with readings to lose
        victim_parts = held.get(stale.name) or []
        stale.proc.send_signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        say(f"sigstop {mode}: SIGSTOPped {stale.name} holding {victim_parts}")
        taken = group.wait_stable(
            lambda got: (
                set(got) == {other.name} and got[other.name] == list(range(group.partitions))
            ),
            args.settle_s,
        )
        say(f"sigstop {mode}: {other.name} holds every partition {taken:.1f} s after SIGSTOP")
        time.sleep(max(0.0, args.stop_s - (time.monotonic() - t_stop)))
        stopped = time.monotonic() - t_stop
        log_at_cont = len(stale.log())
        stale.proc.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        say(f"sigstop {mode}: SIGCONT after {stopped:.1f} s")
        lost = float("nan")
        while time.monotonic() - t_cont < args.settle_s and stale.alive():
            if LOST_LINE in stale.log()[log_at_cont:]:
                lost = time.monotonic() - t_cont
                break
            time.sleep(0.1)
        group.wait_stable(group.all_assigned(group.members), args.settle_s)
        rejoined = time.monotonic() - t_cont
        say(f"sigstop {mode}: loss logged {lost:.1f} s, rejoined {rejoined:.1f} s after SIGCONT")
        count_at_rejoin = stale.messages() or 0.0
        producer.join()
        left = drain(group, len(msgs), args.settle_s)
        after = (stale.messages() or 0.0) - count_at_rejoin
        unexpected = sum(1 for m in group.members if not m.alive())
        rcs = [m.stop() for m in group.members]
    finally:
        group.stop_all()
    resumed_log = stale.log()[log_at_cont:]
    check = Check.of(bootstrap, group.topics["alerts"], expected)
    return StopResult(
        mode=mode,
        readings=len(msgs),
        stopped_s=stopped,
        victim_partitions=victim_parts,
        taken_over_s=taken,
        lost_logged_s=lost,
        rejoined_s=rejoined,
        processed_after_rejoin=after,
        aborted_after_resume=resumed_log.count("transaction aborted"),
        lag_left=left,
        stop_rcs=rcs,
        unexpected_exits=unexpected,
        check=check,
        wall_s=time.monotonic() - started,
    )


# -- throughput with 1, 2, 3 processes -------------------------------------------------------


@dataclass
class Throughput:
    processes: int
    readings: int
    rate: float
    ratio: float
    produce_s: float


def run_throughput(
    args: argparse.Namespace,
    bootstrap: str,
    model_dir: Path,
    msgs: Sequence[tuple[bytes, bytes]],
    work: Path,
) -> list[Throughput]:
    out: list[Throughput] = []
    for n in range(1, args.max_processes + 1):
        group = Group.create(
            bootstrap,
            f"tput{n}",
            args.throughput_mode,
            args.partitions,
            kafka_properties(args),
            model_dir,
            work,
        )
        try:
            for _ in range(n):
                group.spawn()
            group.wait_stable(group.all_assigned(group.members), args.start_s)
            produced = produce_burst(bootstrap, group.topics["sensors"], msgs)
            rate = group_rate(group, len(msgs))
        finally:
            rcs = group.stop_all()
        if any(rc != 0 for rc in rcs.values()):
            raise RuntimeError(f"throughput run with {n}: exit codes {rcs}")
        base = out[0].rate if out else rate
        out.append(Throughput(n, len(msgs), rate, rate / base, produced))
        say(f"throughput: {n} process(es): {rate:,.0f} readings/s ({rate / base:.2f}x)")
    return out


def group_rate(group: Group, expected: int, stall_s: float = 90.0) -> float:
    """Readings/s of all members together, from the first counted reading to the last."""
    changes: list[tuple[float, float]] = []
    last_change = time.monotonic()
    while True:
        counts = [m.messages() for m in group.members]
        for m in group.members:
            if not m.alive():
                raise RuntimeError(f"{m.name} exited {m.proc.returncode}; log {m.log_path}")
        now = time.monotonic()
        if all(c is not None for c in counts):
            total = sum(c for c in counts if c is not None)
            if not changes or total != changes[-1][1]:
                changes.append((now, total))
                last_change = now
                if total >= expected:
                    break
        if now - last_change > stall_s:
            raise RuntimeError(f"{group.tag}: stuck at {changes[-1:]} of {expected}")
        time.sleep(0.05)
    (t0, n0), (t1, n1) = changes[0], changes[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


# -- the report ------------------------------------------------------------------------------


def kafka_properties(args: argparse.Namespace) -> dict[str, str]:
    props = {"session.timeout.ms": str(args.session_timeout_ms)}
    if args.transaction_timeout_ms:
        props["transaction.timeout.ms"] = str(args.transaction_timeout_ms)
    return props


def check_cells(c: Check) -> str:
    return (
        f"{c.expected_alerts} | {c.alerts_found} | {len(c.missing_ids)} | {len(c.extra_ids)} | "
        f"{len(c.reopened_ids)} | {c.events_expected} / {c.events_found} | "
        f"{c.duplicate_events} | {c.other_events} | {c.aborted_seen_uncommitted}"
    )


CHECK_HEAD = (
    "alert ids expected | found | missing | extra | reopened | events expected / found | "
    "duplicates | other events | aborted (read_uncommitted only)"
)


def report(
    kills: Sequence[KillResult], stops: Sequence[StopResult], tput: Sequence[Throughput]
) -> str:
    out: list[str] = []
    if kills:
        out += [
            "| mode | processes | partitions | readings | killed one holding | reassigned | "
            f"offsets moving again | {CHECK_HEAD} | lag left | verdict |",
            "|" + "---|" * 17,
        ]
        for k in kills:
            out.append(
                f"| {k.mode} | {k.processes} | {k.partitions} | {k.readings} | "
                f"{k.victim_partitions} ({k.victim_data_partitions} with data) | "
                f"{k.reassigned_s:.1f} s | {k.resumed_s:.1f} s | "
                f"{check_cells(k.check)} | {k.lag_left} | {'ok' if k.ok else 'FAILED'} |"
            )
        out.append("")
    if stops:
        out += [
            "| mode | readings | stopped | it held | other holds all | loss logged after "
            "SIGCONT | rejoined after SIGCONT | readings after rejoin | aborted after "
            f"SIGCONT | {CHECK_HEAD} | lag left | verdict |",
            "|" + "---|" * 20,
        ]
        for s in stops:
            out.append(
                f"| {s.mode} | {s.readings} | {s.stopped_s:.1f} s | {s.victim_partitions} | "
                f"{s.taken_over_s:.1f} s | {s.lost_logged_s:.1f} s | {s.rejoined_s:.1f} s | "
                f"{s.processed_after_rejoin:.0f} | {s.aborted_after_resume} | "
                f"{check_cells(s.check)} | {s.lag_left} | {'ok' if s.ok else 'FAILED'} |"
            )
        out.append("")
    if tput:
        out += ["| processes | readings | readings/s | ratio to 1 |", "|---|---|---|---|"]
        for t in tput:
            out.append(f"| {t.processes} | {t.readings} | {t.rate:,.0f} | {t.ratio:.2f} |")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scenarios", default="group,sigstop,throughput")
    p.add_argument("--modes", default="at_least_once,exactly_once")
    p.add_argument("--processes", type=int, default=3, help="group: members (default 3)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--assets", type=int, default=12)
    p.add_argument("--faults", type=int, default=8)
    p.add_argument("--duration-s", type=float, default=1800.0, help="simulated seconds")
    p.add_argument("--produce-s", type=float, default=90.0, help="wall seconds of sending")
    p.add_argument("--kill-at-s", type=float, default=30.0, help="group: kill after this")
    p.add_argument("--stop-at-s", type=float, default=25.0, help="sigstop: stop after this")
    p.add_argument("--stop-s", type=float, default=20.0, help="sigstop: stopped this long")
    p.add_argument("--max-poll-interval-ms", type=int, default=10_000)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument(
        "--transaction-timeout-ms",
        type=int,
        default=0,
        help="the producers' transaction.timeout.ms (0: librdkafka's 60 s): how long a new "
        "owner waits for a killed member's open transaction",
    )
    p.add_argument("--checkpoint-interval-s", type=float, default=10.0)
    p.add_argument("--history-h", type=float, default=2.0, help="training history, hours")
    p.add_argument("--start-s", type=float, default=240.0, help="most the group gets to form")
    p.add_argument("--settle-s", type=float, default=180.0)
    p.add_argument("--max-processes", type=int, default=3, help="throughput: 1..this")
    p.add_argument("--throughput-mode", default="at_least_once")
    p.add_argument(
        "--throughput-duration-s",
        type=float,
        default=10_000.0,
        help="throughput: simulated seconds of the burst (x assets readings)",
    )
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--bootstrap-servers", help="use this broker instead of a throwaway one")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--workdir", help="keep the members' logs here (default: a temporary one)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    kills: list[KillResult] = []
    stops: list[StopResult] = []
    tput: list[Throughput] = []
    with tempfile.TemporaryDirectory(prefix="plantwatch-group-chaos-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
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
            for mode in modes:
                if "group" in scenarios:
                    kills.append(run_group(args, bootstrap, mode, model, model_dir, msgs, work))
                if "sigstop" in scenarios:
                    stops.append(run_sigstop(args, bootstrap, mode, model, model_dir, msgs, work))
            if "throughput" in scenarios:
                burst = copy.copy(args)
                burst.duration_s, burst.faults = args.throughput_duration_s, 0
                tput = run_throughput(args, bootstrap, model_dir, messages(simulator(burst)), work)
        finally:
            if broker is not None:
                broker.stop()
    print(report(kills, stops, tput))
    results: list[KillResult | StopResult] = [*kills, *stops]
    for r in results:
        c = r.check
        if c.missing_ids or c.extra_ids or c.reopened_ids:
            print(
                f"\n{r.mode}: missing {c.missing_ids}, extra {c.extra_ids}, "
                f"reopened {c.reopened_ids}"
            )
    shown = sys.argv[1:] if argv is None else list(argv)
    print(f"\ncommand: .venv/bin/python bench/group_chaos.py {shlex.join(shown)}".rstrip())
    print(f"runtime: {time.monotonic() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "group": [asdict(k) | {"ok": k.ok} for k in kills],
                    "sigstop": [asdict(s) | {"ok": s.ok} for s in stops],
                    "throughput": [asdict(t) for t in tput],
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-asset state checkpoints on a compacted Kafka topic (like Kafka Streams' changelogs).

Each record is keyed by asset and holds that asset's whole state as JSON (window,
threshold, alert state; see ``Monitor.snapshot_asset``). Compaction keeps the newest record
per asset, so a process that takes over an asset (restart or rebalance) reads the topic to
its end and continues where the previous owner committed.

The state topic is partitioned like the sensors topic, and the run loop writes an asset's
state to the partition numbered like the sensors partition its readings came from (chosen
explicitly, as Kafka Streams does for its changelogs, not by the partitioner: a Java
producer's murmur2 and librdkafka's default CRC32 put one key on different partitions). A
process assigned sensors partitions 0 and 2 therefore reads only state partitions 0 and 2.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()


def ensure_topics(
    client_config: Mapping[str, str],
    topics: Mapping[str, Mapping[str, str]],
    *,
    partitions: int = 3,
    partitioned_like: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, int]:
    """Create missing topics (name → topic configs); return each topic's partition count.

    ``partitioned_like`` maps a topic to the one it must be partitioned like (the state
    topic → the sensors topic): created, it gets that topic's partition count (``partitions``
    when both are new). One that exists with another count is left alone with a warning
    that says what it costs and how to fix it: the run loop then reads the whole state
    topic on every assignment (correct, only slower), so a mismatch is no reason to stop a
    running plant's monitor.

    A broker that refuses (no create rights in a managed cluster) is logged, not fatal:
    the operator may have created the topics already under another policy. A topic whose
    count is unknown (not created, not found) is missing from the result.
    """
    like = dict(partitioned_like or {})
    admin = AdminClient(dict(client_config))
    existing = {
        name: len(t.partitions)
        for name, t in admin.list_topics(timeout=timeout_s).topics.items()
        if t.error is None and t.partitions
    }
    counts: dict[str, int] = {}
    for name in sorted(topics, key=lambda n: n in like):  # the references first
        ref = like.get(name)
        want = partitions if ref is None else counts.get(ref, existing.get(ref, partitions))
        counts[name] = existing.get(name, want)
    wanted = [
        NewTopic(name, num_partitions=counts[name], replication_factor=-1, config=dict(cfg))
        for name, cfg in topics.items()
        if name not in existing
    ]
    if wanted:
        _create(admin, wanted, counts, timeout_s)
    for name, ref in like.items():
        if name in counts and ref in counts and counts[name] != counts[ref]:
            log.warning(
                "topic %s has %d partitions but %s has %d: an asset's state cannot be kept on "
                "the partition numbered like its readings', so every assignment reads all of "
                "%s (slower restores and rebalances; the state restored is still right). To "
                "restore only the assigned partitions, create a state topic with %d "
                "partitions and point topics.state at it (each asset then starts afresh once)",
                name,
                counts[name],
                ref,
                counts[ref],
                name,
                counts[ref],
            )
    return counts


def _create(
    admin: AdminClient, wanted: list[NewTopic], counts: dict[str, int], timeout_s: float
) -> None:
    """Create ``wanted``; a topic another process created meanwhile gets its real count."""
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            log.info("created topic %s with %d partitions", name, counts[name])
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                # Another process created it meanwhile, maybe with another count.
                found = admin.list_topics(topic=name, timeout=timeout_s).topics.get(name)
                if found is not None and found.error is None and found.partitions:
                    counts[name] = len(found.partitions)
                    continue
            counts.pop(name, None)
            log.warning("could not create topic %s: %s", name, exc)


#: Topic configuration of the state changelog: compacted, so only the newest state per
#: asset is kept however long the monitor runs.
STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


def encode_state(snapshot: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(snapshot)


#: Errors of a watermark query that pass by themselves: a partition just created (its
#: leader not serving yet) or one whose leadership is moving.
_PASSING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def _watermarks(probe: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """``get_watermark_offsets``, asked again while the partition's leader is not serving
    yet (a state topic created a moment before, a leader moving) for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            low, high = probe.get_watermark_offsets(tp, timeout=max(0.5, min(5.0, left)))
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError) or err.code() not in _PASSING or left <= 0:
                raise
            log.debug("state partition %s [%d] not served yet: %s", tp.topic, tp.partition, err)
            time.sleep(0.1)


def load_states(
    consumer_config: Mapping[str, str],
    topic: str,
    *,
    partitions: Collection[int] | None = None,
    timeout_s: float = 30.0,
    decide_timeout_s: float = 90.0,
) -> dict[str, dict[str, Any]]:
    """Read the state topic from the start to its current end: newest snapshot per asset.

    ``partitions``: only these partitions of the state topic (the ones numbered like the
    sensors partitions this process was assigned); ``None``: all of them. Uses a throwaway
    consumer with manual assignment (no group, nothing committed). A record with an empty
    value is a tombstone (the asset was retired); one that is not a JSON object is skipped
    with a warning. Should one asset's records sit on two partitions (the state topic was
    written before its partition count changed), the newer record by timestamp wins.

    A partition is read when the consumer itself reports its end (``enable.partition.eof``),
    not when a record at ``high - 1`` arrives: the offsets of a partition written in
    transactions end in commit markers that no consumer ever receives, so waiting for that
    record never ended (it made every exactly-once restart crash). The deadline is on
    progress, so it scales with the amount to read: ``timeout_s`` without a record or an
    end-of-partition fails, however long a large state topic takes in all.

    The end is the partition's high watermark when the read starts, and a
    ``read_committed`` reader reaches it only once every transaction before it is decided.
    A producer's commit returns when the coordinator has decided, before the markers are
    written: stopping at the last stable offset then would restore state one transaction
    older than the offsets the group fetches (stable ones, which include it). So a reader
    short of the end waits: for markers a few milliseconds, for the transaction of a
    producer that died until the broker aborts it (``transaction.timeout.ms``, 60 s by
    default; the group's offset fetch waits for the same). ``decide_timeout_s`` without
    progress while waiting fails, naming the undecided offsets.
    """
    conf = {k: v for k, v in consumer_config.items() if k != "group.id"}
    conf.update(
        {
            "group.id": f"plantwatch-state-loader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": "true",
        }
    )
    consumer = Consumer(conf)
    # A read_committed consumer's watermark query answers the last stable offset; the end
    # to reach is the high watermark, which a read_uncommitted one answers.
    probe = Consumer({**conf, "isolation.level": "read_uncommitted"})
    states: dict[str, dict[str, Any]] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            return states
        assign: list[TopicPartition] = []
        end: dict[int, int] = {}
        for p in sorted(tmeta.partitions):
            if partitions is not None and p not in partitions:
                continue
            low, high = _watermarks(probe, TopicPartition(topic, p), timeout_s)
            if high > low:
                assign.append(TopicPartition(topic, p, low))
                end[p] = high
        if not assign:
            return states
        consumer.assign(assign)
        progress_s = time.monotonic()
        done: set[int] = set()
        #: Partitions whose reader stopped short of the end: offset where it stopped.
        undecided: dict[int, int] = {}
        newest: dict[str, tuple[int, int]] = {}
        while len(done) < len(assign):
            unread = len(assign) - len(done)
            _check_deadline(topic, progress_s, timeout_s, decide_timeout_s, undecided, end, unread)
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                progress_s = time.monotonic()
                err = msg.error()
                part = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and part is not None:
                        # At the end, past every record and marker, or short of it at the
                        # last stable offset (a transaction not decided yet).
                        stopped = msg.offset()
                        if stopped is None or stopped >= end[part]:
                            done.add(part)
                            undecided.pop(part, None)
                        else:
                            undecided[part] = stopped
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                _keep_record(states, newest, msg)
    finally:
        consumer.close()
        probe.close()
    return states


def _check_deadline(
    topic: str,
    progress_s: float,
    timeout_s: float,
    decide_timeout_s: float,
    undecided: Mapping[int, int],
    end: Mapping[int, int],
    unread: int,
) -> None:
    """Raise when nothing happened for too long: ``timeout_s``, or while waiting for
    transactions to be decided ``decide_timeout_s``."""
    quiet = time.monotonic() - progress_s
    if undecided and quiet > max(timeout_s, decide_timeout_s):
        spans = ", ".join(f"partition {p} offsets {o}..{end[p] - 1}" for p, o in undecided.items())
        raise TimeoutError(
            f"reading state topic {topic}: a transaction is still undecided after "
            f"{quiet:.0f} s ({spans}); its producer may be gone and the broker aborts it "
            "after transaction.timeout.ms. Restart once it has"
        )
    if not undecided and quiet > timeout_s:
        raise TimeoutError(
            f"reading state topic {topic}: nothing new for {timeout_s:g} s with {unread} of "
            f"{len(end)} partitions not read to their end; is the broker reachable?"
        )


def _keep_record(
    states: dict[str, dict[str, Any]], newest: dict[str, tuple[int, int]], msg: Message
) -> None:
    """One state record into ``states``: the newest per asset, a tombstone removes it.

    ``newest`` holds the partition and timestamp of the record kept per asset: within a
    partition a later record always wins (offset order is the writers' order); across
    partitions the later timestamp does.
    """
    key, value = msg.key(), msg.value()
    if key is None:
        return
    asset = key.decode("utf-8", errors="replace")
    part = msg.partition()
    part = -1 if part is None else part
    _, ts = msg.timestamp()
    seen = newest.get(asset)
    if seen is not None and seen[0] != part and ts < seen[1]:
        return  # an older record left on another partition
    newest[asset] = (part, ts)
    if not value:
        states.pop(asset, None)
        return
    try:
        state = msgspec.json.decode(value)
    except msgspec.DecodeError:
        log.warning("state record for %s is not JSON; ignored", asset)
        return
    if not isinstance(state, dict):
        log.warning("state record for %s is JSON but not an object; ignored", asset)
        return
    states[asset] = state

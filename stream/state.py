"""Per-asset state checkpoints on a compacted Kafka topic (like Kafka Streams' changelogs).

Each record is keyed by asset and holds that asset's whole state as JSON (window,
threshold, alert state; see ``Monitor.snapshot_asset``). Compaction keeps the newest record
per asset, so a process that takes over an asset (restart or rebalance) reads the topic to
its end and continues where the previous owner committed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

log = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()


def ensure_topics(
    client_config: Mapping[str, str],
    topics: Mapping[str, Mapping[str, str]],
    *,
    partitions: int = 3,
    timeout_s: float = 30.0,
) -> None:
    """Create missing topics (name → topic configs); existing ones are left alone.

    A broker that refuses (no create rights in a managed cluster) is logged, not fatal:
    the operator may have created the topics already under another policy.
    """
    admin = AdminClient(dict(client_config))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(name, num_partitions=partitions, replication_factor=-1, config=dict(cfg))
        for name, cfg in topics.items()
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            log.info("created topic %s", name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            log.warning("could not create topic %s: %s", name, exc)


#: Topic configuration of the state changelog: compacted, so only the newest state per
#: asset is kept however long the monitor runs.
STATE_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


def encode_state(snapshot: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(snapshot)


def load_states(
    consumer_config: Mapping[str, str], topic: str, *, timeout_s: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Read the state topic from the start to its current end: newest snapshot per asset.

    Uses a throwaway consumer with manual assignment (no group, nothing committed). A
    record with an empty value is a tombstone (the asset was retired); one that is not a
    JSON object is skipped with a warning.

    A partition is read when the consumer itself reports its end (``enable.partition.eof``),
    not when a record at ``high - 1`` arrives: the offsets of a partition written in
    transactions end in commit markers that no consumer ever receives, so waiting for that
    record never ended (it made every exactly-once restart crash). The
    deadline is on progress, not the whole read: ``timeout_s`` without a record or an
    end-of-partition, so a large state topic takes as long as it needs.
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
    states: dict[str, dict[str, Any]] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            return states
        assign: list[TopicPartition] = []
        for p in tmeta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                assign.append(TopicPartition(topic, p, low))
        if not assign:
            return states
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        while len(done) < len(assign):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading state topic {topic}: nothing new for {timeout_s:g} s with "
                    f"{len(assign) - len(done)} of {len(assign)} partitions still unread; "
                    "is the broker reachable?"
                )
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                deadline = time.monotonic() + timeout_s
                err = msg.error()
                part = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # Nothing more to read: past every record and marker (a
                        # read_committed consumer stops at the last stable offset: records
                        # of a transaction still open are not state to restore).
                        if part is not None:
                            done.add(part)
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                _keep_record(states, msg.key(), msg.value())
    finally:
        consumer.close()
    return states


def _keep_record(states: dict[str, dict[str, Any]], key: bytes | None, value: bytes | None) -> None:
    """One state record into ``states``: the newest per asset, a tombstone removes it."""
    if key is None:
        return
    asset = key.decode("utf-8", errors="replace")
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

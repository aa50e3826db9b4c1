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
    record with an empty value is a tombstone (the asset was retired).
    """
    conf = {k: v for k, v in consumer_config.items() if k != "group.id"}
    conf.update(
        {
            "group.id": f"plantwatch-state-loader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": "false",
        }
    )
    consumer = Consumer(conf)
    states: dict[str, dict[str, Any]] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            return states
        ends: dict[int, int] = {}
        assign: list[TopicPartition] = []
        for p in tmeta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
                assign.append(TopicPartition(topic, p, low))
        if not assign:
            return states
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading state topic {topic} took over {timeout_s:g} s; "
                    "is the broker reachable?"
                )
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                part, offset = msg.partition(), msg.offset()
                key = msg.key()
                if key is not None:
                    asset = key.decode("utf-8", errors="replace")
                    value = msg.value()
                    if value:
                        try:
                            states[asset] = msgspec.json.decode(value)
                        except msgspec.DecodeError:
                            log.warning("state record for %s is not JSON; ignored", asset)
                    else:
                        states.pop(asset, None)
                if part is not None and offset is not None and offset + 1 >= ends.get(part, 0):
                    done.add(part)
    finally:
        consumer.close()
    return states

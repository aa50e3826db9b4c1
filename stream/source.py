"""Kafka edge of the ingest: consume sensor messages in batches, decode, route bad ones.

The consumer never auto-commits: the run loop commits the offsets a batch returns only
after everything the batch caused has been delivered (DESIGN, Delivery). A message that
cannot be used becomes a :class:`Rejected` value bound for the dead-letter topic, with the
reason and its source topic/partition/offset in headers, and its bytes unchanged.

Two checks need the Kafka record itself, so they live here and not in the decoder (a file
replay has neither a key nor a wall clock that means anything):

* ``key_mismatch``: the record key must be the reading's ``asset``. The key chooses the
  partition, and the partition chooses the one process that keeps the asset's state and
  open alerts; a reading under another key (or none: the producer then spreads an asset
  over partitions) would give one asset two owners. A keyless reading is refused too.
* ``future_timestamp``: a reading stamped more than ``consumer.max_future_ms`` ahead of now
  (the consumer's clock, or the broker's where the topic uses ``LogAppendTime`` and that is
  later). Accepted, it would become its asset's newest time, and every later reading would
  be dropped as late until the clock caught up — checkpointed, across restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from common.reasons import Reason
from common.timestamps import format_ts
from stream.config import ConsumerSettings, KafkaSettings
from stream.lab import LabDecoder, LabResult
from stream.operator import CommandDecoder, OperatorCommand
from stream.schema import ReadingDecoder, Rejection, SensorReading

log = logging.getLogger(__name__)

#: Header names on dead-lettered messages (original headers are kept before them).
DLQ_REASON = "plantwatch.reason"
DLQ_DETAIL = "plantwatch.detail"
DLQ_TOPIC = "plantwatch.source.topic"
DLQ_PARTITION = "plantwatch.source.partition"
DLQ_OFFSET = "plantwatch.source.offset"
DLQ_TIMESTAMP = "plantwatch.source.timestamp"

Headers = list[tuple[str, bytes]]
#: produce(topic, key, value, headers): the delivery-checked producer of the run loop.
ProduceFn = Callable[[str, bytes | None, bytes | None, Headers], None]
#: A decoded message the record checks apply to (a reading or a lab result).
_Record = TypeVar("_Record", SensorReading, LabResult)


@dataclass(frozen=True)
class Rejected:
    """A consumed message that cannot be used, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None
    rejection: Rejection

    def dlq_headers(self) -> Headers:
        return [
            *self.headers,
            (DLQ_REASON, self.rejection.reason.value.encode()),
            (DLQ_DETAIL, self.rejection.detail.encode("utf-8", errors="replace")),
            (DLQ_TOPIC, self.topic.encode()),
            (DLQ_PARTITION, str(self.partition).encode()),
            (DLQ_OFFSET, str(self.offset).encode()),
            (
                DLQ_TIMESTAMP,
                str(self.timestamp_ms if self.timestamp_ms is not None else "").encode(),
            ),
        ]


@dataclass(frozen=True)
class CommandRecord:
    """A decoded operator command and the record it came in, so that a command the monitor
    cannot apply (an unknown alert) still reaches the dead-letter topic unchanged."""

    command: OperatorCommand
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None

    def reject(self, rejection: Rejection) -> Rejected:
        return Rejected(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            key=self.key,
            value=self.value,
            headers=self.headers,
            timestamp_ms=self.timestamp_ms,
            rejection=rejection,
        )


@dataclass
class Batch:
    """One consumed batch: readings in arrival order, rejects, and the offsets to commit."""

    readings: list[SensorReading] = field(default_factory=list)
    #: Partition of each reading (parallel to ``readings``), for per-asset ownership.
    partitions: list[int] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Lab results (from the lab topic, when it is consumed beside the readings).
    lab_results: list[LabResult] = field(default_factory=list)
    #: Operator commands (from the commands topic, consumed beside the readings).
    commands: list[CommandRecord] = field(default_factory=list)
    #: Next offset to consume per (topic, partition): what a commit stores.
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0

    def commit_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in sorted(self.next_offsets.items())]


def decode_messages(
    messages: Sequence[Message],
    decoder: ReadingDecoder,
    *,
    now_ms: int | None = None,
    max_future_ms: int | None = None,
    lab_topic: str | None = None,
    lab_decoder: LabDecoder | None = None,
    commands_topic: str | None = None,
    command_decoder: CommandDecoder | None = None,
) -> Batch:
    """Pure part of the ingest: classify every message of a consumed batch.

    ``now_ms`` is the consumer's clock when the batch arrived; with ``max_future_ms`` a
    reading stamped further ahead than that (of ``now_ms`` or of the broker's append time,
    whichever is later) is rejected as ``future_timestamp``. Either ``None``: no such check.
    Messages of ``lab_topic`` are lab results, decoded by ``lab_decoder`` (the same key and
    future-time checks; a bad one is rejected like a bad reading). Messages of
    ``commands_topic`` are operator commands, decoded by ``command_decoder`` (the key check
    only: a command's times are the operator's, ahead of now when they schedule).
    """
    batch = Batch()
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error (will retry): %s", err)
            continue
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            continue  # only error events lack these, and those were handled above
        batch.messages += 1
        batch.next_offsets[(topic, partition)] = offset + 1
        value = msg.value()
        decoded: SensorReading | LabResult | OperatorCommand | Rejection
        _, record_ts = msg.timestamp()
        record_ts_ms = record_ts if record_ts and record_ts > 0 else None
        if commands_topic is not None and topic == commands_topic:
            decoded = (command_decoder or CommandDecoder()).decode(value, record_ts_ms)
            if isinstance(decoded, OperatorCommand):
                decoded = _check_key(decoded.asset, msg) or decoded
        elif lab_topic is not None and topic == lab_topic:
            decoded = (lab_decoder or LabDecoder()).decode(value)
            if isinstance(decoded, LabResult):
                decoded = _check_record(decoded, msg, now_ms, max_future_ms)
        else:
            decoded = decoder.decode(value)
            if isinstance(decoded, SensorReading):
                decoded = _check_record(decoded, msg, now_ms, max_future_ms)
        if isinstance(decoded, OperatorCommand):
            batch.commands.append(
                CommandRecord(
                    command=decoded,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    key=msg.key(),
                    value=value,
                    headers=_plain_headers(msg),
                    timestamp_ms=record_ts_ms,
                )
            )
        elif isinstance(decoded, LabResult):
            batch.lab_results.append(decoded)
        elif isinstance(decoded, SensorReading):
            batch.readings.append(decoded)
            batch.partitions.append(partition)
        else:
            batch.rejected.append(
                Rejected(
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    key=msg.key(),
                    value=value,
                    headers=_plain_headers(msg),
                    timestamp_ms=record_ts_ms,
                    rejection=decoded,
                )
            )
    return batch


def _check_record(
    reading: _Record, msg: Message, now_ms: int | None, max_future_ms: int | None
) -> _Record | Rejection:
    """The checks that need the record: its key is the asset; its time is not far ahead."""
    wrong_key = _check_key(reading.asset, msg)
    if wrong_key is not None:
        return wrong_key
    if now_ms is not None and max_future_ms is not None:
        reference = now_ms
        kind, ts = msg.timestamp()
        if kind == TIMESTAMP_LOG_APPEND_TIME and ts > reference:
            reference = ts  # the broker's clock, when the topic stamps append time
        ahead = reading.ts_ms - reference
        if ahead > max_future_ms:
            return Rejection(
                Reason.FUTURE_TIMESTAMP,
                f"ts {format_ts(reading.ts_ms)} is {ahead / 1000:.1f} s ahead of "
                f"{format_ts(reference)}; the limit is consumer.max_future_ms = {max_future_ms}",
            )
    return reading


def _check_key(asset: str, msg: Message) -> Rejection | None:
    """The refusal of a record not keyed by its asset, else ``None``."""
    key = msg.key()
    if key is None:
        return Rejection(
            Reason.KEY_MISMATCH,
            f"no record key; records must be keyed by asset ({asset!r}) so that one "
            "process owns each asset",
        )
    if key != asset.encode():
        shown = key[:100].decode("utf-8", errors="replace")
        return Rejection(Reason.KEY_MISMATCH, f"record key {shown!r} is not the asset {asset!r}")
    return None


def _plain_headers(msg: Message) -> Headers:
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    out: Headers = []
    for name, value in items:
        if value is None:
            out.append((name, b""))
        else:
            out.append((name, value.encode() if isinstance(value, str) else bytes(value)))
    return out


class SensorSource:
    """A consumer-group member reading ``plantwatch.sensors`` in batches.

    ``on_revoke`` / ``on_assign`` are called from inside :meth:`poll_batch` when the group
    rebalances; the run loop uses them to checkpoint and restore per-asset state.
    ``on_lost`` is called instead of ``on_revoke`` when the partitions were already taken
    away (this member missed ``session.timeout.ms`` or ``max.poll.interval.ms``): another
    member may own them by now, so nothing of theirs may be checkpointed or committed.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        consumer: ConsumerSettings,
        topics: Sequence[str],
        decoder: ReadingDecoder,
        *,
        on_assign: Callable[[list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_lost: Callable[[list[TopicPartition]], None] | None = None,
        stats_cb: Callable[[str], None] | None = None,
        lab_topic: str | None = None,
        commands_topic: str | None = None,
    ) -> None:
        self.consumer_settings = consumer
        self.decoder = decoder
        #: Lab results are read from this topic (one of ``topics``) by the same consumer.
        self.lab_topic = lab_topic
        self._lab_decoder = LabDecoder(max_message_bytes=consumer.max_message_bytes)
        #: Operator commands are read from this topic (one of ``topics``) too.
        self.commands_topic = commands_topic
        self._command_decoder = CommandDecoder(max_message_bytes=consumer.max_message_bytes)
        conf: dict[str, Any] = dict(kafka.consumer_config())
        # Set, not defaulted: kafka.properties may not name these (stream.config's
        # MANAGED_PROPERTIES, refused on loading), and the delivery guarantees rest on them.
        conf["enable.auto.commit"] = "false"
        conf["enable.auto.offset.store"] = "false"
        conf["isolation.level"] = "read_committed"
        # A rebalance must never hand one asset to two processes mid-batch; the default
        # eager protocol revokes everything first, which is what our checkpointing assumes.
        conf["partition.assignment.strategy"] = "range"
        conf.setdefault("auto.offset.reset", consumer.auto_offset_reset)
        conf.setdefault("enable.partition.eof", "false")
        if stats_cb is not None:
            conf.setdefault("statistics.interval.ms", "5000")
            conf["stats_cb"] = stats_cb
        #: Set when the client lost every broker (an outage); cleared by whoever acts on it.
        self.outage_seen = False
        conf["error_cb"] = self._on_error
        self._consumer = Consumer(conf)
        self._topics = list(topics)
        callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = {}
        if on_assign is not None:
            callbacks["on_assign"] = lambda _c, parts: on_assign(parts)
        if on_revoke is not None:
            callbacks["on_revoke"] = lambda _c, parts: on_revoke(parts)
        if on_lost is not None:
            # Without it the client calls on_revoke for lost partitions too.
            callbacks["on_lost"] = lambda _c, parts: on_lost(parts)
        self._consumer.subscribe(self._topics, **callbacks)

    def poll_batch(self) -> Batch:
        """Up to ``batch_size`` messages, waiting at most ``batch_wait_ms`` for them."""
        cfg = self.consumer_settings
        messages = self._consumer.consume(
            num_messages=cfg.batch_size, timeout=cfg.batch_wait_ms / 1000.0
        )
        return decode_messages(
            messages,
            self.decoder,
            now_ms=int(time.time() * 1000),
            max_future_ms=cfg.max_future_ms,
            lab_topic=self.lab_topic,
            lab_decoder=self._lab_decoder,
            commands_topic=self.commands_topic,
            command_decoder=self._command_decoder,
        )

    def commit(self, batch: Batch) -> None:
        """Synchronously commit the batch's offsets (raises if the broker refuses)."""
        offsets = batch.commit_offsets()
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def store(self, batch: Batch) -> None:
        """Record locally how far processing got (for lag statistics; commits nothing)."""
        offsets = batch.commit_offsets()
        if offsets:
            self._consumer.store_offsets(offsets=offsets)

    def group_metadata(self) -> Any:
        """For exactly-once: the consumer's group metadata to send with a transaction."""
        return self._consumer.consumer_group_metadata()

    def assignment(self) -> list[TopicPartition]:
        return list(self._consumer.assignment())

    def close(self) -> None:
        self._consumer.close()

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors (served from consume): logged; losing every
        broker is remembered in ``outage_seen``."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.outage_seen = True
            log.warning("Kafka consumer error: %s (%s)", err.str(), err.name())
        else:
            log.debug("Kafka consumer error: %s (%s)", err.str(), err.name())


def route_rejected(rejected: Sequence[Rejected], dlq_topic: str, produce: ProduceFn) -> None:
    """Send every rejected message, unchanged, to the dead-letter topic with its reason."""
    for item in rejected:
        produce(dlq_topic, item.key, item.value, item.dlq_headers())

"""Publishes alert events (and any other output message) with every delivery accounted for.

One idempotent producer (``enable.idempotence=true``, ``acks=all``) carries everything a
consumed batch causes: alerts, quality predictions, dead letters. :meth:`AlertPublisher.flush`
waits for every delivery report since the previous flush and raises :class:`DeliveryError`
if any message failed or is still undelivered, because the run loop must never commit
offsets past an output that did not reach the broker.

Optionally transactional (``transactional_id`` given): the run loop then calls
:meth:`~AlertPublisher.init_transactions` once, and per batch :meth:`begin_transaction`,
produce, :meth:`send_offsets_to_transaction`, :meth:`commit_transaction` (or
:meth:`abort_transaction` on an error whose ``txn_requires_abort()`` is true).

The accounting itself (bounded wait on a full queue, delivery reports, flush) is
:class:`common.delivery.TrackedProducer`, the one delivery loop the simulator uses too; this
module adds the durability settings, the alert topic and transactions. The producer
configuration is never logged or put in an error message: it may hold SASL passwords or
key material.

Not thread-safe: one thread produces, flushes and handles transactions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import TopicPartition

from alerts.events import SCHEMA, AlertEvent, encode_event
from common import delivery
from common.delivery import DeliveryFailure, DeliveryReport, Headers, TrackedProducer

__all__ = ["AlertPublisher", "DeliveryError", "DeliveryFailure", "DeliveryReport"]

_TRUE = {"true", "1", "yes", "on"}


class DeliveryError(delivery.DeliveryError):
    """Some output of the batch did not reach the broker: do not commit offsets.

    ``failures`` lists every failed message; ``undelivered`` counts those with no delivery
    report yet when the flush timed out; ``delivered`` counts the successful ones.
    """

    fatal_advice = "restart the monitor (it resumes from the last committed offsets)"
    consequence = "Offsets for this batch must not be committed."


class AlertPublisher:
    """Idempotent producer for ``plantwatch.alerts`` and whatever else a batch emits.

    >>> publisher = AlertPublisher({"bootstrap.servers": "127.0.0.1:9092"}, "plantwatch.alerts")
    >>> publisher.topic, publisher.pending
    ('plantwatch.alerts', 0)
    >>> publisher.close(timeout_s=0)
    """

    def __init__(
        self,
        producer_config: Mapping[str, str],
        topic: str,
        *,
        transactional_id: str | None = None,
        queue_full_timeout_s: float = 30.0,
    ) -> None:
        if not topic:
            raise ValueError("the alert topic name is empty; set topics.alerts in the config")
        config: dict[str, Any] = dict(producer_config)
        _require_durable(config)
        config["enable.idempotence"] = "true"
        config["acks"] = "all"
        if transactional_id is not None:
            if not transactional_id:
                raise ValueError("transactional_id is empty; give a stable id per process")
            config["transactional.id"] = transactional_id
        self.topic = topic
        self.transactional = transactional_id is not None
        self._out = TrackedProducer(
            config, queue_full_timeout_s=queue_full_timeout_s, error_type=DeliveryError
        )

    # -- producing ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages produced whose delivery report has not arrived yet."""
        return self._out.pending

    def publish(self, events: Iterable[AlertEvent]) -> int:
        """Produce each event to the alert topic, keyed by asset; returns how many."""
        count = 0
        for event in events:
            self.produce(
                self.topic,
                event.asset,
                encode_event(event),
                [("schema", SCHEMA), ("event", event.event)],
            )
            count += 1
        return count

    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Produce one message with delivery accounting; failures surface at :meth:`flush`.

        ``partition`` chooses the partition (``None``: the partitioner's choice by key).

        A message refused at once (too large, unknown topic name, fatal producer state) is
        recorded as failed rather than raised, so a batch is either fully produced or its
        flush names every failure together. A full local queue is waited out (serving
        delivery reports) for up to ``queue_full_timeout_s``, for all messages together
        until one gets in.
        """
        self._out.produce(
            topic, key, value, headers, timestamp_ms=timestamp_ms, partition=partition
        )
        self._out.poll(0)

    def flush(self, timeout_s: float = 30.0) -> DeliveryReport:
        """Wait for every delivery report since the last flush; raise if any is missing or bad.

        Accounting restarts after each call, raised or not. Messages still undelivered at a
        timeout stay in flight: their eventual reports count toward the next flush.
        """
        return self._out.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Give in-flight messages up to ``timeout_s`` to be delivered, then close the client.

        Does not raise for undelivered messages: shutdown happens after the last commit, and
        anything produced since is reprocessed from the uncommitted offsets on restart.
        """
        self._out.close(timeout_s)

    def __enter__(self) -> AlertPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        """Register the transactional id with the coordinator (once, before the first batch)."""
        self._require_transactional("init_transactions")
        self._out.producer.init_transactions(timeout_s)

    def begin_transaction(self) -> None:
        self._require_transactional("begin_transaction")
        self._out.producer.begin_transaction()

    def send_offsets_to_transaction(
        self, positions: Sequence[TopicPartition], group_metadata: object, timeout_s: float = 30.0
    ) -> None:
        """Make the consumer's positions (next offsets to read) part of this transaction."""
        self._require_transactional("send_offsets_to_transaction")
        self._out.producer.send_offsets_to_transaction(list(positions), group_metadata, timeout_s)

    def commit_transaction(self, timeout_s: float = 30.0) -> DeliveryReport:
        """Check every delivery (raising :class:`DeliveryError`), then commit the transaction.

        On ``DeliveryError``, or a ``KafkaException`` whose ``txn_requires_abort()`` is true,
        call :meth:`abort_transaction` and reprocess the batch.
        """
        self._require_transactional("commit_transaction")
        report = self.flush(timeout_s)
        self._out.producer.commit_transaction(timeout_s)
        return report

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        """Abort: outputs of the transaction are discarded and accounting starts afresh."""
        self._require_transactional("abort_transaction")
        self._out.producer.abort_transaction(timeout_s)
        self._out.discard()

    def _require_transactional(self, method: str) -> None:
        if not self.transactional:
            raise RuntimeError(
                f"{method}() needs a transactional publisher; create AlertPublisher with "
                "transactional_id=... (exactly-once mode)"
            )


def _require_durable(config: Mapping[str, Any]) -> None:
    """Refuse settings that would weaken at-least-once delivery rather than override them."""
    idempotence = config.get("enable.idempotence")
    if idempotence is not None and str(idempotence).strip().lower() not in _TRUE:
        raise ValueError(
            "enable.idempotence is set to false, but alerts need an idempotent producer "
            "(no duplicates or reordering on retry); remove that setting"
        )
    acks = config.get("acks", config.get("request.required.acks"))
    if acks is not None and str(acks).strip().lower() not in {"all", "-1"}:
        raise ValueError(
            f"acks={acks} would let the broker lose acknowledged alerts; plantwatch needs "
            "acks=all; remove that setting"
        )

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

The producer configuration is never logged or put in an error message: it may hold
SASL passwords or key material.

Not thread-safe: one thread produces, flushes and handles transactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from alerts.events import SCHEMA, AlertEvent, encode_event

logger = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes", "on"}
#: How many failures a DeliveryError's message spells out (all are in ``.failures``).
_LISTED_FAILURES = 5

Headers = Sequence[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class DeliveryFailure:
    """A message the broker did not take: where it was going and librdkafka's reason."""

    topic: str
    partition: int | None
    key: str | None
    error: str
    code: str
    retriable: bool
    fatal: bool

    def describe(self) -> str:
        where = self.topic if self.partition is None else f"{self.topic}[{self.partition}]"
        key = f" key {self.key!r}" if self.key is not None else ""
        return f"{where}{key}: {self.error} ({self.code})"


@dataclass(frozen=True)
class DeliveryReport:
    """Messages confirmed by the broker since the previous flush, in all and per topic."""

    delivered: int
    by_topic: Mapping[str, int]


class DeliveryError(RuntimeError):
    """Some output of the batch did not reach the broker: do not commit offsets.

    ``failures`` lists every failed message; ``undelivered`` counts those with no delivery
    report yet when the flush timed out; ``delivered`` counts the successful ones.
    """

    def __init__(
        self,
        failures: Sequence[DeliveryFailure],
        *,
        undelivered: int,
        delivered: int,
        fatal_error: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.failures = tuple(failures)
        self.undelivered = undelivered
        self.delivered = delivered
        self.fatal_error = fatal_error
        parts: list[str] = []
        if fatal_error is not None:
            parts.append(
                f"the producer hit a fatal error ({fatal_error}) and cannot continue; "
                "restart the monitor (it resumes from the last committed offsets)"
            )
        if self.failures:
            listed = "; ".join(f.describe() for f in self.failures[:_LISTED_FAILURES])
            more = len(self.failures) - _LISTED_FAILURES
            suffix = f"; and {more} more" if more > 0 else ""
            parts.append(f"{len(self.failures)} message(s) failed: {listed}{suffix}")
        if undelivered:
            waited = f" after {timeout_s:g} s" if timeout_s is not None else ""
            parts.append(
                f"{undelivered} message(s) still undelivered{waited} "
                "(is the broker reachable? see the client's connection errors)"
            )
        total = len(self.failures) + undelivered + delivered
        super().__init__(
            f"{len(self.failures) + undelivered} of {total} produced message(s) not delivered: "
            + "; ".join(parts)
            + ". Offsets for this batch must not be committed."
        )


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
        config["error_cb"] = self._on_error
        self.topic = topic
        self.transactional = transactional_id is not None
        self._queue_full_timeout_s = queue_full_timeout_s
        self._producer = Producer(config)
        self._pending = 0
        self._delivered: dict[str, int] = {}
        self._failures: list[DeliveryFailure] = []
        self._fatal_error: str | None = None

    # -- producing ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages produced whose delivery report has not arrived yet."""
        return self._pending

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
    ) -> None:
        """Produce one message with delivery accounting; failures surface at :meth:`flush`.

        A message refused at once (too large, unknown topic name, fatal producer state) is
        recorded as failed rather than raised, so a batch is either fully produced or its
        flush names every failure together. A full local queue is waited out (serving
        delivery reports) for up to ``queue_full_timeout_s``.
        """
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = list(headers)
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        deadline = time.monotonic() + self._queue_full_timeout_s
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
            except BufferError:
                if time.monotonic() >= deadline:
                    self._failures.append(
                        _failure(
                            topic,
                            None,
                            key,
                            f"local producer queue stayed full for {self._queue_full_timeout_s:g}"
                            " s (queue.buffering.max.messages); the broker is not keeping up",
                            "_QUEUE_FULL",
                        )
                    )
                    return
                self._producer.poll(0.1)
                continue
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None:
                    self._failures.append(_from_kafka_error(topic, None, key, err))
                else:
                    self._failures.append(_failure(topic, None, key, str(exc), "UNKNOWN"))
                return
            break
        self._pending += 1
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> DeliveryReport:
        """Wait for every delivery report since the last flush; raise if any is missing or bad.

        Accounting restarts after each call, raised or not. Messages still undelivered at a
        timeout stay in flight: their eventual reports count toward the next flush.
        """
        self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        delivered, self._delivered = self._delivered, {}
        if failures or self._pending or self._fatal_error is not None:
            raise DeliveryError(
                failures,
                undelivered=self._pending,
                delivered=sum(delivered.values()),
                fatal_error=self._fatal_error,
                timeout_s=timeout_s,
            )
        return DeliveryReport(delivered=sum(delivered.values()), by_topic=delivered)

    def close(self, timeout_s: float = 10.0) -> None:
        """Give in-flight messages up to ``timeout_s`` to be delivered, then close the client.

        Does not raise for undelivered messages: shutdown happens after the last commit, and
        anything produced since is reprocessed from the uncommitted offsets on restart.
        """
        self._producer.flush(timeout_s)
        # Producer.close() exists only in newer confluent-kafka; older ones close on release.
        close = getattr(self._producer, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> AlertPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        """Register the transactional id with the coordinator (once, before the first batch)."""
        self._require_transactional("init_transactions")
        self._producer.init_transactions(timeout_s)

    def begin_transaction(self) -> None:
        self._require_transactional("begin_transaction")
        self._producer.begin_transaction()

    def send_offsets_to_transaction(
        self, positions: Sequence[TopicPartition], group_metadata: object, timeout_s: float = 30.0
    ) -> None:
        """Make the consumer's positions (next offsets to read) part of this transaction."""
        self._require_transactional("send_offsets_to_transaction")
        self._producer.send_offsets_to_transaction(list(positions), group_metadata, timeout_s)

    def commit_transaction(self, timeout_s: float = 30.0) -> DeliveryReport:
        """Check every delivery (raising :class:`DeliveryError`), then commit the transaction.

        On ``DeliveryError``, or a ``KafkaException`` whose ``txn_requires_abort()`` is true,
        call :meth:`abort_transaction` and reprocess the batch.
        """
        self._require_transactional("commit_transaction")
        report = self.flush(timeout_s)
        self._producer.commit_transaction(timeout_s)
        return report

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        """Abort: outputs of the transaction are discarded and accounting starts afresh."""
        self._require_transactional("abort_transaction")
        self._producer.abort_transaction(timeout_s)
        self._producer.poll(0)
        self._pending = 0
        self._failures = []
        self._delivered = {}

    def _require_transactional(self, method: str) -> None:
        if not self.transactional:
            raise RuntimeError(
                f"{method}() needs a transactional publisher; create AlertPublisher with "
                "transactional_id=... (exactly-once mode)"
            )

    # -- librdkafka callbacks (served from poll/flush on the producing thread) -------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._pending -= 1
        topic = msg.topic() or "?"
        if err is None:
            self._delivered[topic] = self._delivered.get(topic, 0) + 1
        else:
            partition = msg.partition()
            known = partition if isinstance(partition, int) and partition >= 0 else None
            self._failures.append(_from_kafka_error(topic, known, msg.key(), err))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal_error = f"{err.str()} ({err.name()})"
            logger.error("Kafka producer fatal error: %s (%s)", err.str(), err.name())
        else:
            logger.warning("Kafka producer error: %s (%s)", err.str(), err.name())


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


def _key_text(key: str | bytes | None) -> str | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return key


def _failure(
    topic: str, partition: int | None, key: str | bytes | None, error: str, code: str
) -> DeliveryFailure:
    return DeliveryFailure(topic, partition, _key_text(key), error, code, False, False)


def _from_kafka_error(
    topic: str, partition: int | None, key: str | bytes | None, err: KafkaError
) -> DeliveryFailure:
    return DeliveryFailure(
        topic=topic,
        partition=partition,
        key=_key_text(key),
        error=err.str(),
        code=err.name(),
        retriable=bool(err.retriable()),
        fatal=bool(err.fatal()),
    )

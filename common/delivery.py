"""Producing to Kafka with every delivery accounted for: the one delivery loop we have.

:class:`TrackedProducer` wraps a confluent-kafka ``Producer``:

* :meth:`~TrackedProducer.produce` never loses a message silently. A full local queue is
  waited out (serving delivery reports) for at most ``queue_full_timeout_s`` without
  progress, not per message (a checkpoint of N records would otherwise block N times that
  when the broker is gone): the wait ends that long after the first message met the full
  queue, and every later message that meets it fails at once, until a message gets in
  again or the next flush; a message
  refused at once (too large, a bad topic name, a fatal producer state) is recorded as a
  failure rather than raised, so a batch is either fully produced or its flush names every
  failure together.
* Delivery reports count successes per topic and keep every failure with its reason; a
  fatal producer error (idempotence broken, fenced transactional id) is kept too.
* :meth:`~TrackedProducer.flush` waits for every report since the previous flush and raises
  :class:`DeliveryError` (or the subclass the owner chose, which words the advice for its
  reader) if any message failed or is still undelivered, or the producer hit a fatal error.

The producer configuration is never logged or put in an error message: it may hold SASL
passwords or key material. Not thread-safe: one thread produces and flushes.

>>> out = TrackedProducer({"bootstrap.servers": "127.0.0.1:1"})
>>> out.pending, out.flush(timeout_s=0).delivered
(0, 0)
>>> out.close(timeout_s=0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer

logger = logging.getLogger(__name__)

#: How many failures a DeliveryError's message spells out (all are in ``.failures``).
_LISTED_FAILURES = 5
#: How long one wait for room in a full local queue serves delivery reports.
_QUEUE_FULL_POLL_S = 0.05

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
    """Some produced messages did not reach the broker.

    ``failures`` lists every failed message; ``undelivered`` counts those with no delivery
    report yet when the flush timed out; ``delivered`` counts the successful ones;
    ``fatal_error`` is the producer's fatal error, if it hit one. A subclass says what its
    reader should do: ``fatal_advice`` after a fatal error, ``consequence`` at the end.
    """

    fatal_advice: ClassVar[str] = "create a new producer and send again"
    consequence: ClassVar[str] = ""

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
                + self.fatal_advice
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
        consequence = f" {self.consequence}" if self.consequence else ""
        super().__init__(
            f"{len(self.failures) + undelivered} of {total} produced message(s) not delivered: "
            + "; ".join(parts)
            + "."
            + consequence
        )


class TrackedProducer:
    """A confluent-kafka ``Producer`` whose every message is accounted for until a flush.

    ``producer`` is the client itself, for what needs no accounting (transactions,
    metadata). Failures surface at :meth:`flush` as ``error_type``.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        queue_full_timeout_s: float = 30.0,
        error_type: type[DeliveryError] = DeliveryError,
    ) -> None:
        conf = dict(config)
        conf["error_cb"] = self._on_error
        self.queue_full_timeout_s = queue_full_timeout_s
        self.error_type = error_type
        self.producer = Producer(conf)
        #: What every produce call passes (built once: the simulator's hot path).
        self._plain: dict[str, Any] = {"on_delivery": self._on_delivery}
        self._pending = 0
        self._delivered: dict[str, int] = {}
        self._failures: list[DeliveryFailure] = []
        self._fatal_error: str | None = None
        #: When the wait for room in a full queue ends, for every message until one gets in
        #: or the next flush: set by the first message that meets a full queue.
        self._queue_full_deadline: float | None = None

    @property
    def pending(self) -> int:
        """Messages produced whose delivery report has not arrived yet."""
        return self._pending

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
        """Queue one message; a refusal is recorded as a failure for :meth:`flush`.

        ``partition`` chooses the partition; ``None`` leaves it to the partitioner (by key).

        Delivery reports are served by :meth:`poll` (or while waiting for room in a full
        local queue), so a caller producing many messages polls once per group of them.
        The wait for room is ``queue_full_timeout_s`` for all messages together until
        one gets in (a slow broker makes room, a gone one does not) or the next flush.
        """
        kwargs = self._plain
        if headers or timestamp_ms is not None or partition is not None:
            kwargs = dict(kwargs)
            if headers:
                kwargs["headers"] = list(headers)
            if timestamp_ms is not None:
                kwargs["timestamp"] = timestamp_ms
            if partition is not None:
                kwargs["partition"] = partition
        served = False
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
            except BufferError:
                now = time.monotonic()  # the clock is read only once the queue is full
                if self._queue_full_deadline is None:
                    self._queue_full_deadline = now + self.queue_full_timeout_s
                if now >= self._queue_full_deadline and not served:
                    # Past the wait: one more try once the reports waiting are served.
                    served = True
                    self.producer.poll(0)
                    continue
                if now >= self._queue_full_deadline:
                    self._failures.append(
                        _failure(
                            topic,
                            key,
                            f"local producer queue stayed full for {self.queue_full_timeout_s:g}"
                            " s since the last flush (queue.buffering.max.messages); the "
                            "broker is not keeping up",
                            "_QUEUE_FULL",
                        )
                    )
                    return
                self.producer.poll(_QUEUE_FULL_POLL_S)
                continue
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None:
                    self._failures.append(_from_kafka_error(topic, None, key, err))
                else:
                    self._failures.append(_failure(topic, key, str(exc), "UNKNOWN"))
                return
            self._pending += 1
            self._queue_full_deadline = None  # room was made: the next full queue waits anew
            return

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports (and client callbacks); returns how many were served."""
        served: int = self.producer.poll(timeout_s)
        return served

    def flush(self, timeout_s: float = 30.0) -> DeliveryReport:
        """Wait for every delivery report since the last flush; raise if any is missing or bad.

        Accounting restarts after each call, raised or not. Messages still undelivered at a
        timeout stay in flight: their eventual reports count toward the next flush.
        """
        self.producer.flush(timeout_s)
        self._queue_full_deadline = None
        failures, self._failures = self._failures, []
        delivered, self._delivered = self._delivered, {}
        if failures or self._pending or self._fatal_error is not None:
            raise self.error_type(
                failures,
                undelivered=self._pending,
                delivered=sum(delivered.values()),
                fatal_error=self._fatal_error,
                timeout_s=timeout_s,
            )
        return DeliveryReport(delivered=sum(delivered.values()), by_topic=delivered)

    def discard(self) -> None:
        """Forget every message since the last flush (a transaction abort threw them away)."""
        self.producer.poll(0)
        self._pending = 0
        self._queue_full_deadline = None
        self._failures = []
        self._delivered = {}

    def close(self, timeout_s: float = 10.0) -> None:
        """Give in-flight messages up to ``timeout_s`` to be delivered, then close the client.

        Never raises for undelivered messages: call :meth:`flush` first where they matter.
        Those still undelivered are purged, because librdkafka would otherwise hold the
        close (or the client's garbage collection) until ``message.timeout.ms`` passes.
        """
        self.producer.flush(timeout_s)
        if self._pending:
            self.producer.purge(in_queue=True, in_flight=True, blocking=True)
            self.producer.poll(0)
        # Producer.close() exists only in newer confluent-kafka; older ones close on release.
        close = getattr(self.producer, "close", None)
        if close is not None:
            close()

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


def _key_text(key: str | bytes | None) -> str | None:
    if key is None:
        return None
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="replace")
    return key


def _failure(topic: str, key: str | bytes | None, error: str, code: str) -> DeliveryFailure:
    """A failure found before the message reached librdkafka (so no partition yet)."""
    return DeliveryFailure(topic, None, _key_text(key), error, code, False, False)


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

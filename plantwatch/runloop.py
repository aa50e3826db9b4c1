"""The monitor's run loop: consume → decode → window → score → threshold → alert → publish → commit.

The order of a checkpoint is fixed and written down (STYLE 7):

1. every batch: dead letters, alert events and quality predictions are produced (the
   quality side is ``plantwatch/quality_service.py``), then ``flush`` waits for every
   delivery report and raises if any failed — nothing after it runs for that batch;
2. every ``checkpoint_interval_s`` (and on shutdown or rebalance): the state of each asset
   that changed is written to the compacted state topic and flushed the same way;
3. only then are the consumer offsets of all batches since the last checkpoint committed.

So offsets never pass an undelivered alert, and the committed offsets always match the
committed state: after a crash the monitor replays from the last checkpoint with the state
of that checkpoint, and re-sends the same alerts with the same ``alert_id`` (at-least-once;
a consumer drops duplicates by id).

A batch that fails anywhere (a delivery, the model, a checkpoint) poisons the loop: its
per-asset state has advanced past alerts that were never delivered, so nothing is
checkpointed or committed after it, not even by the revocation that closing the consumer
runs; the process exits and the restart replays as after a crash.

With ``delivery.mode = "exactly_once"`` each batch is one Kafka transaction instead: dead
letters, alert events, the state of the batch's assets and the consumer offsets commit
together or not at all, so a ``read_committed`` consumer sees every alert exactly once.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from alerts.metrics import Metrics
from alerts.notices import NOTICE_SCHEMA, Notice, encode_notice
from alerts.predictions import PREDICTION_SCHEMA, encode_prediction
from alerts.publisher import AlertPublisher, DeliveryError
from common.timestamps import format_ts
from models.artifact import TrainedModel
from models.quality.artifact import QualityModel
from plantwatch.monitor import Monitor, Outcome
from plantwatch.quality_service import (
    QualityService,
    check_copartitioned,
    export_spec_limits,
    observe_quality,
)
from plantwatch.settings import Settings
from stream.connect import check_connection
from stream.schema import ReadingDecoder, Rejection
from stream.source import Batch, SensorSource, route_rejected
from stream.state import STATE_TOPIC_CONFIG, encode_state, ensure_topics, load_states

log = logging.getLogger(__name__)

#: Commit errors that say the broker or the group coordinator is out of reach for now
#: (an outage, a broker restarting, a coordinator moving), not that the commit is wrong.
_RETRIABLE_COMMIT = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._WAIT_COORD,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
    }
)
_COMMIT_RETRY_S = 1.0
#: Errors by which the group coordinator refuses a member's offsets because the group has
#: moved on without it (it missed ``session.timeout.ms`` or ``max.poll.interval.ms``: a
#: stall, a SIGSTOP, a long GC pause). Its partitions are lost, not its process.
_GROUP_FENCED = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
    }
)


def _group_fenced(exc: BaseException) -> bool:
    """True when ``exc`` says this member's group generation is gone (see above)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and err.code() in _GROUP_FENCED and not err.fatal()


@dataclass
class LoopStats:
    """Running totals, for the log line and the demo's live view."""

    batches: int = 0
    messages: int = 0
    readings: int = 0
    rejected: int = 0
    windows: int = 0
    events: int = 0
    checkpoints: int = 0
    #: Times the group took the partitions away without a revocation (a stall).
    partitions_lost: int = 0
    #: Exactly-once transactions aborted because the group had moved on (a stall).
    transactions_fenced: int = 0
    #: Quality predictions published, and lab results joined to one.
    predictions: int = 0
    lab_joins: int = 0
    #: Operator commands applied (or found done already), readings not alerted on
    #: (maintenance, stopped, start-up), and updates withheld from shelved alerts.
    commands: int = 0
    suppressed: int = 0
    withheld: int = 0
    started_s: float = field(default_factory=time.monotonic)


class RunLoop:
    """One consumer-group member running the monitor until :meth:`stop` (or a signal)."""

    def __init__(
        self,
        settings: Settings,
        model: TrainedModel,
        metrics: Metrics,
        *,
        on_batch: Callable[[Outcome, LoopStats], None] | None = None,
        quality_models: Sequence[QualityModel] = (),
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.on_batch = on_batch
        self.stats = LoopStats()
        self.monitor = Monitor.from_settings(model, settings)
        #: Quality models served beside the anomaly model (plantwatch/quality_service.py).
        self.quality = (
            QualityService.from_settings(quality_models, settings) if quality_models else None
        )
        self._stop = threading.Event()
        self._dirty: set[str] = set()
        #: The sensors partition each asset's readings come from: its state is written to
        #: the state partition of the same number (``stream/state.py``).
        self._partition_of: dict[str, int] = {}
        #: The state topic's partition count when it is the sensors topic's, else ``None``:
        #: state is then written by key, and every assignment reads all of the state topic.
        self._state_partitions: int | None = None
        self._uncommitted = Batch()
        self._last_checkpoint_s = time.monotonic()
        self._publisher: AlertPublisher | None = None
        self._source: SensorSource | None = None
        #: Set when a batch or checkpoint raised: the in-memory state is then ahead of what
        #: was delivered, and must never be checkpointed (see the module docstring).
        self._failed = False
        #: A member whose loop stood still longer than this (a stall, a SIGSTOP) may have
        #: been dropped by the group without knowing it yet: librdkafka says so (the lost
        #: callback) only at a poll after its next heartbeat. Checkpoints wait that long,
        #: so that no state of a partition someone else owns now is written.
        props = {k.strip().lower(): v for k, v in settings.kafka.properties.items()}
        self._stall_limit_s = (
            min(
                float(props.get("session.timeout.ms", 45_000)),
                float(props.get("max.poll.interval.ms", 300_000)),
            )
            / 1000.0
        )
        self._stall_hold_s = 2 * float(props.get("heartbeat.interval.ms", 3000)) / 1000.0
        self._last_poll_s = time.monotonic()
        self._hold_checkpoint_until = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the current batch, checkpoint, commit and close."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the batch, then stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        s = self.settings
        # A refused password or certificate is said at once, not after a metadata timeout.
        check_connection(s.kafka.client_config())
        counts = ensure_topics(
            s.kafka.client_config(),
            {
                s.topics.sensors: {},
                s.topics.alerts: {},
                s.topics.dlq: {},
                s.topics.notices: {},
                s.topics.state: STATE_TOPIC_CONFIG,
                **({s.topics.quality: {}, s.topics.lab: {}} if self.quality else {}),
            },
            partitioned_like={s.topics.state: s.topics.sensors},
        )
        # Operator commands are keyed by asset and read by the same consumer: created with
        # the sensors topic's partition count, so that an asset's commands reach the
        # process holding its alerts (co-partitioning, as for lab results).
        counts.update(
            ensure_topics(
                s.kafka.client_config(),
                {s.topics.commands: {}},
                partitions=counts.get(s.topics.sensors, 3),
            )
        )
        check_copartitioned(
            s.kafka.client_config(),
            s.topics.sensors,
            s.topics.commands,
            consequence="a command reaches the process holding its asset's alerts only where "
            "both topics put the asset in the same partition (others go to the dead-letter "
            "topic as unknown_alert)",
        )
        n_state = counts.get(s.topics.state)
        if n_state is not None and n_state == counts.get(s.topics.sensors):
            self._state_partitions = n_state
        self.metrics.set_model(self.monitor.model.name, self.monitor.model.version)
        self._publisher = self._new_publisher()
        signals = list(self.model.signals)
        if self.quality is not None:
            # The quality models' inputs are readings too (the anomaly model ignores them).
            signals += [x for x in self.quality.signals if x not in signals]
            export_spec_limits(self.metrics, self.quality)
            check_copartitioned(s.kafka.client_config(), s.topics.sensors, s.topics.lab)
        # The operating-mode signal may be no model input (a run flag, a speed).
        signals += [x for x in s.operating_mode.signals if x not in signals]
        decoder = ReadingDecoder(
            allowed_signals=signals, max_message_bytes=s.consumer.max_message_bytes
        )
        self._source = SensorSource(
            s.kafka,
            s.consumer,
            # Lab results by the same consumer: co-partitioned by asset, so each arrives at
            # the process holding its asset's predictions, and its offset commits with the
            # readings' (in the same transaction in exactly-once mode). Operator commands
            # likewise, for the same reasons.
            [s.topics.sensors, s.topics.commands, *([s.topics.lab] if self.quality else [])],
            decoder,
            lab_topic=s.topics.lab if self.quality else None,
            commands_topic=s.topics.commands,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            stats_cb=lambda stats: self.metrics.observe_kafka_stats(stats, topic=s.topics.sensors),
        )
        log.info(
            "monitoring %s with model %s %s (%d signals, window %d); metrics: %s",
            s.topics.sensors,
            self.model.name,
            self.model.version,
            len(self.model.signals),
            self.model.window,
            f"http://{s.metrics.host}:{s.metrics.port}/metrics" if s.metrics.enabled else "off",
        )
        # What start-up built (the interpreter's modules, torch, the model) lives as long as
        # the process: frozen, the collector's full passes skip it. Unfrozen, each full pass
        # walked it all, 90-170 ms with the loop stopped, every few seconds of a live stream:
        # much of the end-to-end p99 (docs/BENCHMARKS.md, "Garbage collection").
        gc.collect()
        gc.freeze()
        self._last_poll_s = time.monotonic()  # start-up is no stall
        try:
            while not self._stop.is_set():
                self.step()
            self.checkpoint()
        except BaseException:
            self._failed = True  # closing the consumer below must not checkpoint
            raise
        finally:
            gc.unfreeze()  # a caller living on (a test, an embedding) collects as before
            if self.monitor.learner is not None:
                self.monitor.learner.close()
            self._source.close()
            self._publisher.close()
            log.info(
                "stopped after %d batches: %d readings, %d rejected, %d windows, %d alert events",
                self.stats.batches,
                self.stats.readings,
                self.stats.rejected,
                self.stats.windows,
                self.stats.events,
            )

    # -- one batch ------------------------------------------------------------------------

    @property
    def exactly_once(self) -> bool:
        return self.settings.delivery.mode == "exactly_once"

    def _transactional_id(self) -> str:
        """Stable across restarts of this process, unique among the group's processes."""
        configured = self.settings.delivery.transactional_id
        if configured:
            return configured
        return f"plantwatch-{self.settings.kafka.group_id}-{socket.gethostname()}"

    def step(self) -> None:
        if self._source is None or self._publisher is None:
            raise RuntimeError("RunLoop.step() called before run()")
        try:
            self._step()
        except BaseException:
            self._failed = True
            raise

    def _step(self) -> None:
        if self._source is None or self._publisher is None:
            return
        polled = time.monotonic()
        batch = self._source.poll_batch()
        self._note_stall(polled)
        if self.exactly_once:
            if batch.messages:
                self._step_transaction(batch)
        elif batch.messages:
            outcome = self._process(batch)
            self._flush()
            self._note_swap(outcome)
            self._observe(batch, outcome)
            self._dirty.update(self._note_partitions(batch))
            self._uncommitted.next_offsets.update(batch.next_offsets)
            self._source.store(batch)
            if self.on_batch is not None:
                self.on_batch(outcome, self.stats)
        if (
            time.monotonic() - self._last_checkpoint_s
            >= self.settings.delivery.checkpoint_interval_s
            and time.monotonic() >= self._hold_checkpoint_until
        ):
            self.checkpoint()

    def _note_stall(self, polled: float) -> None:
        """Hold checkpoints for a while after the loop stood still past the group's limits
        (between two polls, or inside one: a SIGSTOP stops the clock of neither)."""
        now = time.monotonic()
        wait_s = self.settings.consumer.batch_wait_ms / 1000.0
        stood = max(polled - self._last_poll_s, now - polled - wait_s)
        self._last_poll_s = now
        if stood > self._stall_limit_s:
            self._hold_checkpoint_until = now + self._stall_hold_s
            log.warning(
                "the loop stood still %.0f s (over %.0f s): no checkpoint for %.0f s, until "
                "the group has said whether this member still holds its partitions",
                stood,
                self._stall_limit_s,
                self._stall_hold_s,
            )

    def _new_publisher(self) -> AlertPublisher:
        s = self.settings
        publisher = AlertPublisher(
            s.kafka.client_config(),
            s.topics.alerts,
            transactional_id=self._transactional_id() if self.exactly_once else None,
        )
        if self.exactly_once:
            publisher.init_transactions(s.delivery.flush_timeout_s)
        return publisher

    def _step_transaction(self, batch: Batch) -> None:
        """Exactly-once: dead letters, alerts, state and offsets commit together, or not at all."""
        if self._source is None or self._publisher is None:
            return
        if self._source.outage_seen:
            # After every broker was lost, librdkafka's transactional producer can hang in
            # send_offsets_to_transaction on the group coordinator it cached
            # (confluentinc/librdkafka#5456, #5511): a fresh producer with the same
            # transactional id finds it anew (and fences the old one). No transaction is
            # open between batches, so nothing is lost.
            self._source.outage_seen = False
            log.warning("the brokers were unreachable: starting a fresh transactional producer")
            self._publisher.close()
            self._publisher = self._new_publisher()
        publisher = self._publisher
        publisher.begin_transaction()
        try:
            outcome = self._process(batch)
            for asset in sorted(set(self._note_partitions(batch))):
                snap = self._snapshot(asset)
                if snap is not None:
                    self._produce_state(asset, snap)
            publisher.send_offsets_to_transaction(
                batch.commit_offsets(),
                self._source.group_metadata(),
                self.settings.delivery.flush_timeout_s,
            )
            report = publisher.commit_transaction(self.settings.delivery.flush_timeout_s)
        except Exception as exc:
            # Nothing of this batch is visible to read_committed consumers; the process
            # exits and a restart replays the batch from the committed state and offsets.
            publisher.abort_transaction(self.settings.delivery.flush_timeout_s)
            self.metrics.commits.labels(result="error").inc()
            if not _group_fenced(exc):
                raise
            # The group moved on while this batch was processed (this member stalled past
            # max.poll.interval.ms or its session): the coordinator refused its offsets,
            # the transaction is aborted (the zombie's writes never reach read_committed
            # readers) and the partitions are someone else's now. No reason to exit: drop
            # everything the batch advanced, as for lost partitions, and let the consumer
            # rejoin; the next owner (perhaps this process again) replays the batch.
            self.stats.transactions_fenced += 1
            log.warning(
                "transaction aborted: the group moved on without this member (%s); "
                "dropping the batch's state and rejoining",
                exc,
            )
            self._drop_partitions()
            return
        self.metrics.count_deliveries(report.delivered)
        self.metrics.commits.labels(result="ok").inc()
        self._source.store(batch)
        self._note_swap(outcome)
        self._observe(batch, outcome)
        if self.on_batch is not None:
            self.on_batch(outcome, self.stats)

    def _process(self, batch: Batch) -> Outcome:
        """One batch through the monitor and out: dead letters, alert events, notices,
        quality predictions (produced; the caller flushes or commits the transaction)."""
        if self._publisher is None:
            raise RuntimeError("RunLoop._process() called before run()")
        dlq = self.settings.topics.dlq
        route_rejected(batch.rejected, dlq, self._publisher.produce)
        outcome = self.monitor.process(
            batch.readings, now_ms=_now_ms(), commands=[c.command for c in batch.commands]
        )
        _log_not_restored(outcome)
        refused = [
            record.reject(result)
            for record, result in zip(batch.commands, outcome.commands, strict=True)
            if isinstance(result, Rejection)
        ]
        for item in refused:
            log.warning("operator command to the dead-letter topic: %s", item.rejection.detail)
        route_rejected(refused, dlq, self._publisher.produce)
        self._publisher.publish(outcome.events)
        self._publish_notices(outcome)
        self._serve_quality(batch, outcome)
        return outcome

    def _note_partitions(self, batch: Batch) -> list[str]:
        """The batch's assets (one per reading, then one per command), their sensors
        partitions noted (a command's partition where no reading said)."""
        assets = [r.asset for r in batch.readings]
        self._partition_of.update(zip(assets, batch.partitions, strict=True))
        for record in batch.commands:
            self._partition_of.setdefault(record.command.asset, record.partition)
        # A lab result changes its asset's quality state: checkpointed with the batch that
        # commits its offset (an asset this process holds, its partition known).
        lab = [r.asset for r in batch.lab_results if r.asset in self._partition_of]
        return assets + [record.command.asset for record in batch.commands] + lab

    def _snapshot(self, asset: str) -> dict[str, Any] | None:
        """The asset's state record: the monitor's snapshot with the quality service's
        streams under ``quality`` (restored beside it on assignment)."""
        snap = self.monitor.snapshot_asset(asset)
        if snap is not None and self.quality is not None:
            quality = self.quality.snapshot_asset(asset)
            if quality is not None:
                snap = {**snap, "quality": quality}
        return snap

    def _produce_state(self, asset: str, snap: dict[str, Any]) -> None:
        """An asset's snapshot to the state partition numbered like its sensors partition.

        Chosen explicitly rather than by the partitioner: the plant's producers may hash
        keys differently (a Java client's murmur2, librdkafka's CRC32). Without a matching
        partition count (or a partition added to the sensors topic since the start) the
        key decides, and every assignment reads the whole state topic.
        """
        if self._publisher is None:
            return
        part = self._partition_of.get(asset)
        n = self._state_partitions
        self._publisher.produce(
            self.settings.topics.state,
            asset.encode(),
            encode_state(snap),
            partition=part if n is not None and part is not None and part < n else None,
        )

    def _publish_notices(self, outcome: Outcome) -> None:
        """Drift and re-baselining go to the notices topic (the alert topic: alerts only)."""
        if self._publisher is None:
            return
        notices = list(outcome.notices)
        for asset, ts_ms, ev in outcome.drift:
            notices.append(
                Notice(
                    notice="drift",
                    asset=asset,
                    at=format_ts(ts_ms),
                    detail={
                        "kind": ev.kind,
                        "signal": ev.signal,
                        "direction": ev.direction,
                        "is_drift": ev.is_drift,
                        "anomalous_fraction": ev.anomalous_fraction,
                        "reference_mean": ev.reference_mean,
                        "mean_since_reference": ev.mean_since_reference,
                        "model": {
                            "name": self.monitor.model.name,
                            "version": self.monitor.model.version,
                        },
                    },
                )
            )
            self.metrics.drift_events.labels(kind=ev.kind if ev.is_drift else "anomaly").inc()
            log.info(
                "%s on %s%s (%s), anomalous fraction %.2f",
                "drift" if ev.is_drift else "change during an anomaly",
                asset,
                f" signal {ev.signal}" if ev.signal else " score",
                ev.direction,
                ev.anomalous_fraction,
            )
        for notice in notices:
            self._publisher.produce(
                self.settings.topics.notices,
                notice.asset.encode(),
                encode_notice(notice),
                [("schema", NOTICE_SCHEMA.encode())],
            )
            if notice.notice == "rebaselined":
                log.warning("%s re-baselined at %s: %s", notice.asset, notice.at, notice.detail)
            elif notice.notice in ("maintenance_started", "maintenance_ended", "operating_mode"):
                log.info("%s: %s at %s %s", notice.asset, notice.notice, notice.at, notice.detail)

    def _serve_quality(self, batch: Batch, outcome: Outcome) -> None:
        """Quality predictions ─► the quality topic, quality alerts ─► the alert topic.

        Only the readings the monitor processed (none of an asset not alerted on): nothing
        is predicted or learned during a maintenance window or a stop either."""
        if self.quality is None or self._publisher is None:
            return
        q = self.quality.process(
            outcome.kept, batch.lab_results, self.monitor.policy, now_ms=_now_ms()
        )
        events, withheld = self.monitor.policy.screen(q.events)
        q.events = events
        outcome.withheld += withheld
        self._publisher.publish(q.events)
        for p in q.predictions:
            self._publisher.produce(
                self.settings.topics.quality,
                p.asset.encode(),
                encode_prediction(p),
                [("schema", PREDICTION_SCHEMA.encode())],
            )
        observe_quality(self.metrics, q)
        self.stats.events += len(q.events)
        self.stats.predictions += len(q.predictions)
        self.stats.lab_joins += len(q.joins)

    def _note_swap(self, outcome: Outcome) -> None:
        swap = outcome.swap
        if swap is None:
            return
        self.metrics.set_model(swap.model.name, swap.model.version)
        log.warning(
            "online learning %s: now serving %s %s (was %s): %s",
            "swapped the model" if swap.kind == "swap" else "rolled back",
            swap.model.name,
            swap.model.version,
            swap.previous_version,
            swap.reason,
        )

    def _flush(self) -> None:
        """Wait for every delivery report; raise if a message failed.

        Messages still in flight at ``flush_timeout_s`` (none refused, no fatal error) mean
        the broker is unreachable or slow: librdkafka keeps retrying them, so the flush is
        waited out again, each time logged and counted (``deliveries_total{result=
        "stalled"}``), for up to ``delivery.outage_wait_s`` in all. A broker back within it
        gets them in order and the loop carries on as if nothing happened.
        """
        if self._publisher is None:
            return
        delivery = self.settings.delivery
        started = time.monotonic()
        delivered = 0
        while True:
            try:
                report = self._publisher.flush(delivery.flush_timeout_s)
            except DeliveryError as exc:
                delivered += exc.delivered
                waited = time.monotonic() - started
                stalled = not exc.failures and exc.fatal_error is None and exc.undelivered > 0
                if stalled and waited < delivery.outage_wait_s:
                    self.metrics.deliveries.labels(result="stalled").inc(exc.undelivered)
                    log.warning(
                        "%d message(s) still undelivered after %.0f s: waiting for the broker "
                        "(nothing is committed meanwhile; giving up after %.0f s)",
                        exc.undelivered,
                        waited,
                        delivery.outage_wait_s,
                    )
                    continue
                self.metrics.count_deliveries(delivered, len(exc.failures) + exc.undelivered)
                # Nothing of this batch is committed; the process exits and a restart
                # replays from the last checkpoint, re-sending under the same alert ids.
                raise
            self.metrics.count_deliveries(delivered + report.delivered)
            if time.monotonic() - started >= delivery.flush_timeout_s:
                log.info("delivered after %.0f s: the broker is back", time.monotonic() - started)
            return

    def _commit(self) -> None:
        """Commit the offsets processed so far, retrying a commit refused for a retriable
        reason (broker or coordinator unreachable) for up to ``delivery.outage_wait_s``."""
        if self._source is None:
            return
        started = time.monotonic()
        while True:
            try:
                self._source.commit(self._uncommitted)
            except KafkaException as exc:
                self.metrics.commits.labels(result="error").inc()
                if _group_fenced(exc):
                    # The group moved on without this member: the partitions are lost (the
                    # callback says so at the next poll). Not committing is what losing
                    # them means; the next owner replays from the last commit.
                    log.warning("offset commit refused, the group moved on: %s", exc)
                    self._drop_partitions()
                    return
                err = exc.args[0] if exc.args else None
                waited = time.monotonic() - started
                if (
                    isinstance(err, KafkaError)
                    and err.code() in _RETRIABLE_COMMIT
                    and waited < self.settings.delivery.outage_wait_s
                ):
                    log.warning(
                        "offset commit failed (%s) after %.0f s: retrying", err.name(), waited
                    )
                    time.sleep(_COMMIT_RETRY_S)
                    continue
                raise
            except Exception:
                self.metrics.commits.labels(result="error").inc()
                raise
            self.metrics.commits.labels(result="ok").inc()
            return

    def checkpoint(self) -> None:
        """Write the state of changed assets, flush, then commit offsets (in this order).

        In exactly-once mode every batch's transaction already did all three.
        """
        if self._source is None or self._publisher is None:
            return
        if self._failed:
            raise RuntimeError(
                "not checkpointing: a batch failed, so the per-asset state is ahead of what "
                "was delivered; restart to replay from the last checkpoint"
            )
        # Idle assets leave memory; a changed one is still written below (from its parked
        # snapshot), so what is evicted is always checkpointed first.
        for asset in self.monitor.evict_idle():
            self.metrics.remove_asset(asset)
            if self.quality is not None:
                self.quality.evict([asset])
        if self.exactly_once:
            # Every transaction already wrote its assets' state and offsets.
            self._last_checkpoint_s = time.monotonic()
            return
        timed = self.metrics.checkpoint_seconds
        started = time.perf_counter()
        for asset in sorted(self._dirty):
            snap = self._snapshot(asset)
            if snap is not None:
                self._produce_state(asset, snap)
        produced = time.perf_counter()
        timed.labels(phase="state").observe(produced - started)
        self._flush()
        flushed = time.perf_counter()
        timed.labels(phase="flush").observe(flushed - produced)
        self._dirty.clear()
        if self._uncommitted.next_offsets:
            self._commit()
            self._uncommitted = Batch()
            timed.labels(phase="commit").observe(time.perf_counter() - flushed)
        self.stats.checkpoints += 1
        self._last_checkpoint_s = time.monotonic()

    # -- rebalance ------------------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Restore the state of the assigned partitions' assets (parked until they speak).

        Only the state partitions numbered like the assigned sensors partitions are read,
        when the two topics' partition counts match; otherwise all of them.
        """
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))
        # The sensors topic's partitions (the lab topic's, when subscribed, share numbers).
        mine = sorted({p.partition for p in partitions if p.topic == self.settings.topics.sensors})
        n = self._state_partitions
        only = mine if n is not None and all(p < n for p in mine) else None
        states = load_states(
            self.settings.kafka.consumer_config(), self.settings.topics.state, partitions=only
        )
        for asset, snap in states.items():
            self.monitor.park(asset, snap)
            if self.quality is not None and snap.get("quality") is not None:
                try:
                    self.quality.park(asset, snap["quality"])
                except ValueError as exc:
                    log.warning("%s; its quality state starts afresh", exc)
        if states:
            log.info(
                "found checkpointed state for %d assets in %s",
                len(states),
                "all state partitions" if only is None else f"state partitions {only}",
            )

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        revoked = sorted(p.partition for p in partitions)
        if self._failed:
            # Closing after a failed batch: the next owner (this process, restarted, or
            # another) replays from the last checkpoint, re-sending under the same alert ids.
            log.warning("partitions revoked %s after a failed batch: not checkpointing", revoked)
        else:
            log.info("partitions revoked %s: checkpointing", revoked)
            self.checkpoint()
        self._forget_quality()
        for asset in self.monitor.assets:
            self.metrics.remove_asset(asset)
        self.monitor.forget_all()
        self._partition_of.clear()

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a revocation: another member may own them already.

        Their state is not checkpointed (it would overwrite what the new owner writes) and
        the offsets since the last checkpoint are not committed (the group refuses a commit
        from a member that left it): the new owner replays those batches from the last
        checkpoint, re-sending their alerts under the same ids. Everything in memory is
        dropped; on the next assignment the state is read back from the state topic.
        """
        self.stats.partitions_lost += 1
        log.warning(
            "partitions %s lost (this member missed session.timeout.ms or "
            "max.poll.interval.ms): dropping their state and %d uncommitted offset(s) "
            "without a checkpoint; the group replays them from the last checkpoint",
            sorted(p.partition for p in partitions),
            len(self._uncommitted.next_offsets),
        )
        self._drop_partitions()

    def _drop_partitions(self) -> None:
        """Forget every asset and every offset since the last checkpoint, writing nothing."""
        self._dirty.clear()
        self._uncommitted = Batch()
        self._forget_quality()
        for asset in self.monitor.assets:
            self.metrics.remove_asset(asset)
        self.monitor.forget_all()
        self._partition_of.clear()

    def _forget_quality(self) -> None:
        if self.quality is not None:
            for asset in self.quality.assets:
                self.metrics.remove_asset(asset)
            self.quality.forget_all()

    # -- metrics --------------------------------------------------------------------------

    def _observe(self, batch: Batch, outcome: Outcome) -> None:
        m = self.metrics
        stats = self.stats
        late = outcome.pushes.get("late", 0)
        m.messages.labels(result="ok").inc(len(batch.readings) - late)
        if late:
            m.messages.labels(result="late").inc(late)
        for item in batch.rejected:
            m.messages.labels(result=item.rejection.reason.value).inc()
        for reason in ("stale", "missing"):
            if outcome.pushes.get(reason):
                m.windows_skipped.labels(reason=reason).inc(outcome.pushes[reason])
        m.batch_size.observe(batch.messages)
        scored = outcome.scored
        if len(scored):
            m.windows_scored.labels(model=self.model.name).inc(len(scored))
            m.score_seconds.observe(outcome.score_seconds)
            now_s = time.time()
            for ts in scored.ts_ms.tolist():
                m.e2e_latency_seconds.observe(max(0.0, now_s - ts / 1000.0))
            last: dict[str, int] = {}
            for j, asset in enumerate(scored.assets):
                last[asset] = j
            for asset, j in last.items():
                m.set_asset_score(asset, float(scored.scores[j]), float(scored.thresholds[j]))
        m.count_alerts(outcome.events)
        m.set_open_alerts(self.monitor.policy.open_by_severity())
        commands_topic = self.settings.topics.commands
        m.count_commands(
            [
                (record.command.command, r if isinstance(r, str) else r.reason.value)
                for record, r in zip(batch.commands, outcome.commands, strict=True)
            ],
            invalid=sum(1 for item in batch.rejected if item.topic == commands_topic),
        )
        m.count_suppressed(outcome.suppressed, withheld=outcome.withheld)
        acknowledged, shelved = self.monitor.policy.operator_counts()
        m.set_lifecycle(acknowledged, shelved, self.monitor.lifecycle.suppressed_counts())
        stats.commands += len(batch.commands)
        stats.suppressed += sum(outcome.suppressed.values())
        stats.withheld += outcome.withheld
        stats.batches += 1
        stats.messages += batch.messages
        stats.readings += len(batch.readings)
        stats.rejected += len(batch.rejected)
        stats.windows += len(scored)
        stats.events += len(outcome.events)


def _log_not_restored(outcome: Outcome) -> None:
    for asset, why in outcome.not_restored:
        # A damaged snapshot, or one of another model version: says what starts afresh.
        log.warning("state of %s not (fully) restored: %s", asset, why)


def _now_ms() -> int:
    return int(time.time() * 1000)

"""Every Prometheus metric plantwatch exports, declared once as a typed bundle.

Names follow DESIGN (prefix ``plantwatch_``, units in the name). The registry is injected
so that tests use a fresh ``CollectorRegistry`` and two monitors in one process never clash.
Label sets stay bounded: per-asset series exist only for the first ``max_asset_series``
assets seen (the rest are counted in ``plantwatch_assets_unexported``), consumer lag has one
series per assigned partition, and ``result``/``reason``/``kind`` labels take values from
small fixed vocabularies. Quality series are per asset (under the same cap) and ``target``
(one per quality model served).

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> metrics = Metrics.create(CollectorRegistry(), max_asset_series=1)
>>> metrics.set_asset_score("pump-1", 3.5, 4.0)
True
>>> metrics.set_asset_score("pump-2", 9.0, 4.0)
False
>>> b'plantwatch_anomaly_score{asset="pump-1"} 3.5' in generate_latest(metrics.registry)
True
>>> metrics.registry.get_sample_value("plantwatch_assets_unexported")
1.0
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _prometheus_http_server

from alerts.events import AlertEvent
from common.config import Config
from common.reasons import Reason

#: Model time per scored batch: 100 µs .. 5 s.
SCORE_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip
#: Reading time to alert/score published: 1 ms .. 60 s, finer around 100 ms (the latency a
#: live plant expects, where a p99 between 100 and 250 ms was otherwise one bucket).
E2E_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
#: Readings per consumed batch.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)

DEFAULT_PORT = 9108
#: The ``result`` values of ``plantwatch_quality_lab_results_total``.
LAB_RESULTS = ("joined", "unmatched", "duplicate", "unknown_target")

#: ``plantwatch_drift_events_total{kind}``: a drift test's kind (``score``, ``signal``), or
#: ``anomaly`` for a change detected during an alert episode (the run loop's vocabulary).
DRIFT_KINDS = ("score", "signal", "anomaly")
#: ``plantwatch_windows_skipped_total{reason}``: why a ready window was not scored.
SKIP_REASONS = ("stale", "missing")
#: ``plantwatch_commands_total{command,result}``: the operator commands (``invalid``: one
#: that did not decode) and what became of them (``rejected``: to the dead-letter topic).
COMMANDS = ("ack", "shelve", "unshelve", "maintenance_start", "maintenance_end", "invalid")
COMMAND_RESULTS = ("applied", "duplicate", "unknown_alert", "rejected")
#: Why an asset is not alerted on (``plantwatch_assets_suppressed{reason}``,
#: ``plantwatch_readings_suppressed_total{reason}``).
SUPPRESSION_REASONS = ("maintenance", "stopped", "startup")


class MetricsSettings(Config, frozen=True, kw_only=True):
    """Where ``/metrics`` is served, and how many assets get their own series."""

    enabled: bool = True
    #: Loopback by default: exposing metrics beyond this host is a deliberate choice.
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = DEFAULT_PORT
    #: Assets with their own ``plantwatch_anomaly_score``/``plantwatch_threshold`` series.
    max_asset_series: Annotated[int, msgspec.Meta(ge=0)] = 50


@dataclass(frozen=True)
class Metrics:
    """The metric bundle; create it with :meth:`create`, pass it to whatever records."""

    registry: CollectorRegistry
    max_asset_series: int
    #: ``result``: ``ok`` or a ``stream.schema.Reason`` value, or the run loop's own
    #: outcomes such as ``late``/``stale`` (keep to a fixed vocabulary).
    messages: Counter
    windows_scored: Counter
    alerts: Counter
    score_seconds: Histogram
    e2e_latency_seconds: Histogram
    alerts_open: Gauge
    alerts_open_by_severity: Gauge
    consumer_lag: Gauge
    anomaly_score: Gauge
    threshold: Gauge
    model_info: Gauge
    assets_unexported: Gauge
    drift_events: Counter
    commits: Counter
    deliveries: Counter
    batch_size: Histogram
    #: ``phase``: ``state`` (the changed assets' snapshots encoded and produced),
    #: ``flush`` (everything produced acknowledged), ``commit`` (the consumer offsets).
    checkpoint_seconds: Histogram
    windows_skipped: Counter
    quality_predicted: Gauge
    quality_lower: Gauge
    quality_upper: Gauge
    quality_spec_limit: Gauge
    quality_rmse: Gauge
    quality_mae: Gauge
    quality_bias: Gauge
    quality_coverage: Gauge
    quality_predictions: Counter
    quality_lab_results: Counter
    commands: Counter
    readings_suppressed: Counter
    alert_events_shelved: Counter
    alerts_acknowledged: Gauge
    alerts_shelved: Gauge
    assets_suppressed: Gauge
    _state: _SeriesState = field(repr=False)

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, *, max_asset_series: int = 50
    ) -> Metrics:
        """Declare every metric in ``registry`` (a fresh private one when ``None``)."""
        if max_asset_series < 0:
            raise ValueError(f"max_asset_series must be >= 0, got {max_asset_series}")
        reg = registry if registry is not None else CollectorRegistry()
        metrics = cls(
            registry=reg,
            max_asset_series=max_asset_series,
            messages=Counter(
                "plantwatch_messages",
                "Sensor messages consumed, by outcome (ok, or why they were not used).",
                ["result"],
                registry=reg,
            ),
            windows_scored=Counter(
                "plantwatch_windows_scored",
                "Windows scored, by model name.",
                ["model"],
                registry=reg,
            ),
            alerts=Counter(
                "plantwatch_alerts",
                "Alert events published, by severity and event (opened/updated/resolved).",
                ["severity", "event"],
                registry=reg,
            ),
            score_seconds=Histogram(
                "plantwatch_score_seconds",
                "Model time to score one batch of windows.",
                buckets=SCORE_BUCKETS_S,
                registry=reg,
            ),
            e2e_latency_seconds=Histogram(
                "plantwatch_e2e_latency_seconds",
                "From a window's last reading time to its score or alert being published.",
                buckets=E2E_BUCKETS_S,
                registry=reg,
            ),
            alerts_open=Gauge(
                "plantwatch_alerts_open",
                "Alerts currently open in this process.",
                registry=reg,
            ),
            alerts_open_by_severity=Gauge(
                "plantwatch_alerts_open_by_severity",
                "Alerts currently open in this process, by severity (an escalated alert counts "
                "as critical).",
                ["severity"],
                registry=reg,
            ),
            consumer_lag=Gauge(
                "plantwatch_consumer_lag",
                "Messages between the consumer's position and the partition end, "
                "from librdkafka statistics.",
                ["partition"],
                registry=reg,
            ),
            anomaly_score=Gauge(
                "plantwatch_anomaly_score",
                "Latest anomaly score per asset (first max_asset_series assets only).",
                ["asset"],
                registry=reg,
            ),
            threshold=Gauge(
                "plantwatch_threshold",
                "Latest adapted threshold per asset (first max_asset_series assets only).",
                ["asset"],
                registry=reg,
            ),
            model_info=Gauge(
                "plantwatch_model_info",
                "The model being served (value 1).",
                ["name", "version"],
                registry=reg,
            ),
            assets_unexported=Gauge(
                "plantwatch_assets_unexported",
                "Assets seen without per-asset series because of the series cap.",
                registry=reg,
            ),
            drift_events=Counter(
                "plantwatch_drift_events",
                "Data or score drift detections, by kind.",
                ["kind"],
                registry=reg,
            ),
            commits=Counter(
                "plantwatch_commit",
                "Consumer offset commits, by result (ok/error).",
                ["result"],
                registry=reg,
            ),
            deliveries=Counter(
                "plantwatch_deliveries",
                "Messages produced (alerts, predictions, dead letters), by delivery result "
                "(stalled: still in flight when a flush timed out, then waited for again).",
                ["result"],
                registry=reg,
            ),
            batch_size=Histogram(
                "plantwatch_batch_size",
                "Sensor messages per consumed batch.",
                buckets=BATCH_SIZE_BUCKETS,
                registry=reg,
            ),
            checkpoint_seconds=Histogram(
                "plantwatch_checkpoint_seconds",
                "Wall time of each phase of an at-least-once checkpoint, on the run loop's "
                "thread: no reading is consumed meanwhile.",
                ["phase"],
                buckets=SCORE_BUCKETS_S,
                registry=reg,
            ),
            windows_skipped=Counter(
                "plantwatch_windows_skipped",
                "Windows not scored, by reason (e.g. too many missing values).",
                ["reason"],
                registry=reg,
            ),
            quality_predicted=Gauge(
                "plantwatch_quality_predicted",
                "Latest quality prediction (bias-corrected) per asset and target.",
                ["asset", "target"],
                registry=reg,
            ),
            quality_lower=Gauge(
                "plantwatch_quality_lower",
                "Lower bound of the latest prediction's conformal interval (NaN: unbounded).",
                ["asset", "target"],
                registry=reg,
            ),
            quality_upper=Gauge(
                "plantwatch_quality_upper",
                "Upper bound of the latest prediction's conformal interval (NaN: unbounded).",
                ["asset", "target"],
                registry=reg,
            ),
            quality_spec_limit=Gauge(
                "plantwatch_quality_spec_limit",
                "Spec limits of each quality target (limit: lsl or usl).",
                ["target", "limit"],
                registry=reg,
            ),
            quality_rmse=Gauge(
                "plantwatch_quality_rmse",
                "RMSE of the predictions against lab results, over the recent lab joins.",
                ["asset", "target"],
                registry=reg,
            ),
            quality_mae=Gauge(
                "plantwatch_quality_mae",
                "Mean absolute error against lab results, over the recent lab joins.",
                ["asset", "target"],
                registry=reg,
            ),
            quality_bias=Gauge(
                "plantwatch_quality_bias",
                "Mean of prediction minus lab value, over the recent lab joins.",
                ["asset", "target"],
                registry=reg,
            ),
            quality_coverage=Gauge(
                "plantwatch_quality_coverage",
                "Share of recent lab values inside their prediction's interval.",
                ["asset", "target"],
                registry=reg,
            ),
            quality_predictions=Counter(
                "plantwatch_quality_predictions",
                "Quality predictions published, by target.",
                ["target"],
                registry=reg,
            ),
            quality_lab_results=Counter(
                "plantwatch_quality_lab_results",
                "Lab results consumed, by result (joined, unmatched, duplicate, unknown_target).",
                ["result"],
                registry=reg,
            ),
            commands=Counter(
                "plantwatch_commands",
                "Operator commands consumed, by command and result (applied, duplicate: done "
                "already, unknown_alert and rejected: sent to the dead-letter topic).",
                ["command", "result"],
                registry=reg,
            ),
            readings_suppressed=Counter(
                "plantwatch_readings_suppressed",
                "Readings not processed (not scored, not alerted on, nothing learned) because "
                "their asset was in maintenance, stopped or starting up, by reason.",
                ["reason"],
                registry=reg,
            ),
            alert_events_shelved=Counter(
                "plantwatch_alert_events_shelved",
                "Alert updates withheld because their alert was shelved by an operator.",
                registry=reg,
            ),
            alerts_acknowledged=Gauge(
                "plantwatch_alerts_acknowledged",
                "Open alerts an operator has acknowledged.",
                registry=reg,
            ),
            alerts_shelved=Gauge(
                "plantwatch_alerts_shelved",
                "Open alerts an operator has shelved.",
                registry=reg,
            ),
            assets_suppressed=Gauge(
                "plantwatch_assets_suppressed",
                "Assets not alerted on now, by reason (maintenance, stopped, startup).",
                ["reason"],
                registry=reg,
            ),
            _state=_SeriesState(),
        )
        for result in LAB_RESULTS:
            metrics.quality_lab_results.labels(result=result)
        # Series that exist from the start, so rate() and the alert rules see zeros rather
        # than nothing before the first event of each kind.
        for result in ("ok", *(r.value for r in Reason)):
            metrics.messages.labels(result=result)
        for severity in ("warning", "critical"):
            metrics.alerts_open_by_severity.labels(severity=severity)
            for event in ("opened", "updated", "resolved"):
                metrics.alerts.labels(severity=severity, event=event)
        for result in ("ok", "error"):
            metrics.commits.labels(result=result)
        for result in ("delivered", "failed", "stalled"):
            metrics.deliveries.labels(result=result)
        # Without these the drift and skipped-window panels say "No data" rather than 0 and
        # the drift rule has nothing to compare until the first event (found by a real
        # Prometheus in tests/test_prometheus_server.py).
        for kind in DRIFT_KINDS:
            metrics.drift_events.labels(kind=kind)
        for reason in SKIP_REASONS:
            metrics.windows_skipped.labels(reason=reason)
        for command in COMMANDS:
            for result in COMMAND_RESULTS:
                metrics.commands.labels(command=command, result=result)
        for reason in SUPPRESSION_REASONS:
            metrics.readings_suppressed.labels(reason=reason)
            metrics.assets_suppressed.labels(reason=reason)
        return metrics

    # -- per-asset series, capped ----------------------------------------------------------

    def set_asset_score(self, asset: str, score: float, threshold: float) -> bool:
        """Set the asset's score and threshold gauges; ``False`` if the asset is over the cap.

        The first ``max_asset_series`` assets seen get series; later ones are counted in
        ``plantwatch_assets_unexported`` (their alerts still go to Kafka as usual).
        """
        state = self._state
        with state.lock:
            if not self._admit(asset):
                return False
            state.scored.add(asset)
            self.anomaly_score.labels(asset=asset).set(score)
            self.threshold.labels(asset=asset).set(threshold)
        return True

    def _admit(self, asset: str) -> bool:
        """Whether ``asset`` has (or now gets) per-asset series under the cap (lock held)."""
        state = self._state
        if asset not in state.exported:
            if len(state.exported) >= self.max_asset_series:
                if asset not in state.unexported:
                    state.unexported.add(asset)
                    self.assets_unexported.set(len(state.unexported))
                return False
            state.exported.add(asset)
            if asset in state.unexported:  # a slot was freed by remove_asset
                state.unexported.discard(asset)
                self.assets_unexported.set(len(state.unexported))
        return True

    def set_quality(
        self, asset: str, target: str, predicted: float, lower: float, upper: float
    ) -> bool:
        """Set the asset's latest prediction and interval of ``target`` (an infinite bound,
        an interval that cannot promise its coverage yet, as NaN); ``False`` over the cap."""
        with self._state.lock:
            if not self._admit(asset):
                return False
            self._state.quality.setdefault(asset, set()).add(target)
            self.quality_predicted.labels(asset=asset, target=target).set(predicted)
            for gauge, bound in ((self.quality_lower, lower), (self.quality_upper, upper)):
                gauge.labels(asset=asset, target=target).set(
                    bound if math.isfinite(bound) else math.nan
                )
        return True

    def set_quality_errors(
        self, asset: str, target: str, *, rmse: float, mae: float, bias: float, coverage: float
    ) -> bool:
        """Set the rolling lab-join metrics of the asset's ``target``; ``False`` over the cap."""
        with self._state.lock:
            if not self._admit(asset):
                return False
            self._state.quality.setdefault(asset, set()).add(target)
            self._state.quality_errors.setdefault(asset, set()).add(target)
            self.quality_rmse.labels(asset=asset, target=target).set(rmse)
            self.quality_mae.labels(asset=asset, target=target).set(mae)
            self.quality_bias.labels(asset=asset, target=target).set(bias)
            self.quality_coverage.labels(asset=asset, target=target).set(coverage)
        return True

    def set_spec_limits(self, target: str, lsl: float | None, usl: float | None) -> None:
        """Export a target's spec limits (a side without a limit has no series)."""
        with self._state.lock:
            for name, value in (("lsl", lsl), ("usl", usl)):
                if value is None:
                    with contextlib.suppress(KeyError):  # never set: nothing to remove
                        self.quality_spec_limit.remove(target, name)
                else:
                    self.quality_spec_limit.labels(target=target, limit=name).set(value)

    def remove_asset(self, asset: str) -> None:
        """Drop an asset's series (it moved to another process); frees its slot under the cap."""
        state = self._state
        with state.lock:
            if asset in state.exported:
                state.exported.discard(asset)
                if asset in state.scored:
                    state.scored.discard(asset)
                    self.anomaly_score.remove(asset)
                    self.threshold.remove(asset)
                quality = (self.quality_predicted, self.quality_lower, self.quality_upper)
                for target in state.quality.pop(asset, set()):
                    for gauge in quality:
                        gauge.remove(asset, target)
                errors = (self.quality_rmse, self.quality_mae, self.quality_bias)
                for target in state.quality_errors.pop(asset, set()):
                    for gauge in (*errors, self.quality_coverage):
                        gauge.remove(asset, target)
            elif asset in state.unexported:
                state.unexported.discard(asset)
                self.assets_unexported.set(len(state.unexported))

    # -- model, alerts, deliveries ---------------------------------------------------------

    def set_model(self, name: str, version: str) -> None:
        """Mark the served model; a swap removes the previous label set."""
        with self._state.lock:
            self.model_info.clear()
            self.model_info.labels(name=name, version=version).set(1)

    def count_alerts(self, events: Iterable[AlertEvent]) -> None:
        """Count published alert events by severity and event."""
        for event in events:
            self.alerts.labels(severity=event.severity, event=event.event).inc()

    def count_commands(self, results: Iterable[tuple[str, str]], *, invalid: int = 0) -> None:
        """Count operator commands: (command, result) each, ``result`` ``applied``,
        ``duplicate`` or a dead-letter reason (``unknown_alert``: counted so; any other:
        ``rejected``); ``invalid`` commands did not decode (dead-lettered)."""
        for command, result in results:
            label = result if result in COMMAND_RESULTS else "rejected"
            self.commands.labels(command=command, result=label).inc()
        if invalid:
            self.commands.labels(command="invalid", result="rejected").inc(invalid)

    def count_suppressed(self, readings: Mapping[str, int], *, withheld: int = 0) -> None:
        """Count readings not processed, by suppression reason, and updates withheld."""
        for reason, n in readings.items():
            if n:
                self.readings_suppressed.labels(reason=reason).inc(n)
        if withheld:
            self.alert_events_shelved.inc(withheld)

    def set_open_alerts(self, by_severity: Mapping[str, int]) -> None:
        """Set ``plantwatch_alerts_open`` and its split by severity."""
        self.alerts_open.set(sum(by_severity.values()))
        for severity, count in by_severity.items():
            self.alerts_open_by_severity.labels(severity=severity).set(count)

    def set_lifecycle(self, acknowledged: int, shelved: int, suppressed: Mapping[str, int]) -> None:
        """Set the acknowledged and shelved alert gauges and the suppressed assets by reason."""
        self.alerts_acknowledged.set(acknowledged)
        self.alerts_shelved.set(shelved)
        for reason in SUPPRESSION_REASONS:
            self.assets_suppressed.labels(reason=reason).set(suppressed.get(reason, 0))

    def count_deliveries(self, delivered: int, failed: int = 0) -> None:
        """Count delivery reports (from ``AlertPublisher.flush`` or a ``DeliveryError``)."""
        if delivered:
            self.deliveries.labels(result="delivered").inc(delivered)
        if failed:
            self.deliveries.labels(result="failed").inc(failed)

    # -- consumer lag from librdkafka statistics -------------------------------------------

    def observe_kafka_stats(self, stats_json: str, *, topic: str | None = None) -> None:
        """Set ``plantwatch_consumer_lag`` from a librdkafka statistics JSON document.

        Wire it as the consumer's ``stats_cb`` (with ``statistics.interval.ms`` set). Only the
        given ``topic`` is read when named; otherwise every topic's partitions are summed per
        partition number. Partition -1 (librdkafka's internal one) and unknown lag (-1) are
        skipped, and partitions no longer reported with a lag lose their series, so a revoked
        partition does not keep showing its last lag.
        """
        try:
            stats: Any = json.loads(stats_json)
        except ValueError as exc:
            raise ValueError(f"librdkafka statistics are not JSON: {exc}") from exc
        lags: dict[str, int] = {}
        topics = stats.get("topics", {}) if isinstance(stats, dict) else {}
        for name, topic_stats in topics.items():
            if topic is not None and name != topic:
                continue
            partitions = topic_stats.get("partitions", {}) if isinstance(topic_stats, dict) else {}
            for key, part in partitions.items():
                if not isinstance(part, dict):
                    continue
                # The lag behind what the monitor has processed (offsets it stored after
                # each batch); committed offsets trail it by up to a checkpoint interval,
                # and in exactly-once mode librdkafka never sees the transactional commits.
                lag = part.get("consumer_lag_stored", -1)
                if not isinstance(lag, int) or lag < 0:
                    lag = part.get("consumer_lag", -1)
                partition = part.get("partition", key)
                if str(partition) == "-1" or not isinstance(lag, int) or lag < 0:
                    continue
                lags[str(partition)] = lags.get(str(partition), 0) + lag
        state = self._state
        with state.lock:
            for partition in state.lag_partitions - lags.keys():
                self.consumer_lag.remove(partition)
            for partition, lag in lags.items():
                self.consumer_lag.labels(partition=partition).set(lag)
            state.lag_partitions = set(lags)


@dataclass
class _SeriesState:
    """Which label sets exist, so caps and removals are exact (guarded: scrape threads read)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    exported: set[str] = field(default_factory=set)
    unexported: set[str] = field(default_factory=set)
    #: Exported assets with score/threshold series (a quality-only asset has none).
    scored: set[str] = field(default_factory=set)
    #: Targets with prediction series, and with lab-join series, per exported asset.
    quality: dict[str, set[str]] = field(default_factory=dict)
    quality_errors: dict[str, set[str]] = field(default_factory=dict)
    lag_partitions: set[str] = field(default_factory=set)


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; :meth:`close` stops it and frees the port."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0 for an ephemeral one)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_http_server(
    metrics: Metrics, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> MetricsServer:
    """Serve ``metrics`` in the Prometheus text format at ``http://host:port/metrics``.

    Loopback by default: exposing it (``0.0.0.0`` in a container) is an explicit choice.
    """
    try:
        server, thread = _prometheus_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}. Pick another port "
            "(metrics port setting) or stop whatever is listening there."
        ) from exc
    return MetricsServer(server, thread)

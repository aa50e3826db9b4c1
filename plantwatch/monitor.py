"""The pure core of the monitor: readings in, scored windows and alert events out.

:class:`Monitor` is the one implementation of window → score → threshold → alert, used by
``plantwatch run`` (fed from Kafka) and ``plantwatch backtest`` (fed from a file). It does
no I/O and reads no clock: the caller passes ``now_ms``, so a test pushes a list through it.

One ``process`` call = one consumed batch: every window that becomes ready in the batch,
across all assets, is scored by a single ``score_batch`` call.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from alerts.events import AlertEvent
from alerts.notices import Notice
from alerts.policy import AlertConfig, AlertPolicy, Decision
from common.reasons import Reason
from models.artifact import TrainedModel
from models.drift import DriftConfig, DriftEvent, DriftMonitor, update_runs
from models.health import SensorHealthConfig
from models.online import ModelSwap, OnlineConfig, OnlineLearner
from models.protocol import Streaming, WindowStream
from models.rebaseline import RebaselineConfig
from models.thresholds import Threshold, ThresholdConfig, make_threshold
from models.thresholds import restore as restore_threshold
from plantwatch.baselines import Baselines
from plantwatch.batches import window_columns, window_each
from plantwatch.lifecycle import Lifecycle, MaintenanceConfig, OperatingModeConfig, Screened
from plantwatch.sensors import SensorWatch
from plantwatch.settings import Settings
from stream.config import WindowSettings
from stream.operator import OperatorCommand
from stream.schema import Rejection, SensorReading
from stream.window import AssetWindow

SNAPSHOT_VERSION = 1
#: Carried model states held at most (a pool that grows as assets arrive; beyond it the
#: least recently scored asset's state is dropped and primed again from its next window).
_STREAM_ASSETS = 1_000_000
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class Scored:
    """Columnar results for the windows scored in one batch, grouped by asset, in time order."""

    assets: list[str]
    ts_ms: npt.NDArray[np.int64]
    #: Position in the batch's input of the reading that completed each window.
    source_index: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    anomalous: npt.NDArray[np.bool_]
    severity: npt.NDArray[np.int8]
    contributions: npt.NDArray[np.float32]
    #: Whether the asset's alert is open after this window was judged.
    alert_open: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.assets)

    @classmethod
    def concat(cls, parts: Sequence[Scored], n_signals: int) -> Scored:
        """The parts' windows one after the other (each part grouped by asset)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(n_signals)
        if len(parts) == 1:
            return parts[0]
        return cls(
            assets=[a for p in parts for a in p.assets],
            ts_ms=np.concatenate([p.ts_ms for p in parts]),
            source_index=np.concatenate([p.source_index for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            thresholds=np.concatenate([p.thresholds for p in parts]),
            anomalous=np.concatenate([p.anomalous for p in parts]),
            severity=np.concatenate([p.severity for p in parts]),
            contributions=np.concatenate([p.contributions for p in parts]),
            alert_open=np.concatenate([p.alert_open for p in parts]),
        )

    @classmethod
    def empty(cls, n_signals: int) -> Scored:
        return cls(
            assets=[],
            ts_ms=np.zeros(0, np.int64),
            source_index=np.zeros(0, np.int64),
            scores=np.zeros(0, np.float64),
            thresholds=np.zeros(0, np.float64),
            anomalous=np.zeros(0, np.bool_),
            severity=np.zeros(0, np.int8),
            contributions=np.zeros((0, n_signals), np.float32),
            alert_open=np.zeros(0, np.bool_),
        )


@dataclass
class Outcome:
    """What one batch caused."""

    scored: Scored
    events: list[AlertEvent]
    #: How each reading landed in its window (``ready``, ``warming_up``, ``late``, …).
    pushes: Counter[str] = field(default_factory=Counter)
    #: Readings that arrived out of time order within the batch and were put back in order.
    reordered: int = 0
    #: Seconds spent in the model (``plantwatch_score_seconds``).
    score_seconds: float = 0.0
    #: Sustained changes in an asset's scores or inputs: (asset, reading time, event).
    drift: list[tuple[str, int, DriftEvent]] = field(default_factory=list)
    #: A model swap or rollback by online learning that takes effect from the next batch.
    swap: ModelSwap | None = None
    #: What the monitor noticed about assets (re-baselining), for ``plantwatch.notices``.
    notices: list[Notice] = field(default_factory=list)
    #: Parked snapshots not restored, or restored only in part (another model version: the
    #: alert state only): (asset, what happened).
    not_restored: list[tuple[str, str]] = field(default_factory=list)
    #: Per operator command given, in order: ``applied``, ``duplicate``, or the rejection
    #: that sends it to the dead-letter topic (an unknown alert).
    commands: list[str | Rejection] = field(default_factory=list)
    #: Readings not processed because their asset was not alerted on, by reason
    #: (``maintenance``, ``stopped``, ``startup``).
    suppressed: Counter[str] = field(default_factory=Counter)
    #: ``updated`` events withheld because their alert is shelved.
    withheld: int = 0
    #: The readings that were processed (the batch less the suppressed ones): what the
    #: quality service is given, so that it learns nothing during a suppression either.
    kept: Sequence[SensorReading] = ()


class Monitor:
    """Per-asset windows, one model, per-asset thresholds and the alert policy.

    >>> import numpy as np
    >>> from models.training import train_model
    >>> from stream.schema import SensorReading
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 1))
    >>> history = np.hstack([x, 2 * x]) + rng.normal(0, 0.05, (2000, 2))
    >>> monitor = Monitor(train_model(history, ("a", "b"), window=8, scorer="pca"))
    >>> t0 = 1795899600000
    >>> readings = [SensorReading("pump-1", t0 + i * 1000, {"a": v, "b": 2 * v})
    ...             for i, v in enumerate(rng.normal(size=50).tolist())]
    >>> outcome = monitor.process(readings, now_ms=t0 + 50_000)
    >>> len(outcome.scored)  # a window per reading once the first 8 filled it
    43
    >>> outcome.events  # AlertEvents to publish: none for normal readings
    []
    """

    def __init__(
        self,
        model: TrainedModel,
        *,
        window: WindowSettings | None = None,
        threshold: ThresholdConfig | None = None,
        alert: AlertConfig | None = None,
        drift: DriftConfig | None = None,
        online: OnlineConfig | None = None,
        online_guard_ms: int = 600_000,
        rebaseline: RebaselineConfig | None = None,
        sensor_health: SensorHealthConfig | None = None,
        maintenance: MaintenanceConfig | None = None,
        operating_mode: OperatingModeConfig | None = None,
        columnar: bool = True,
        stream: bool = True,
    ) -> None:
        self.model = model
        #: Serve a model that can stream (``models.protocol.Streaming``) from state carried
        #: per asset, one step per window (``model.stream``); ``None`` re-runs each window.
        self.streaming = stream
        self._stream = self._new_stream()
        #: The columnar fast path (arrays per batch, each asset's run at once); ``False``
        #: takes the per-reading path it is proven identical to (``tests/test_columnar.py``).
        self.columnar = columnar
        #: In the columnar path, every asset's run in one pass of arrays (``push_runs``);
        #: ``False`` pushes each asset's run on its own (same results; for benchmarks).
        self.one_pass = True
        #: Every asset's drift tests stepped side by side (``models.drift.update_runs``);
        #: ``False`` one ``DriftMonitor.update`` per asset run (same results; benchmarks).
        self.drift_side_by_side = True
        self.sensors = SensorWatch(model, sensor_health or SensorHealthConfig())
        self.baselines = Baselines(model, rebaseline or RebaselineConfig())
        self.window_settings = window or WindowSettings()
        self.threshold_config = threshold or ThresholdConfig()
        self.drift_config = drift or DriftConfig()
        self.policy = AlertPolicy(alert or AlertConfig())
        #: Maintenance windows and operating mode: which readings are not alerted on.
        self.lifecycle = Lifecycle(
            maintenance or MaintenanceConfig(), operating_mode or OperatingModeConfig()
        )
        self._windows: dict[str, AssetWindow] = {}
        self._thresholds: dict[str, Threshold] = {}
        self._drift: dict[str, DriftMonitor] = {}
        #: Reading time of each asset's latest abnormal window (anomalous or alert not idle).
        self._last_abnormal_ms: dict[str, int] = {}
        #: Snapshots (encoded) of assets not in memory: evicted when idle, or loaded from
        #: the state topic; each is restored when its asset's next reading arrives.
        self._parked: dict[str, bytes] = {}
        #: The newest reading time seen: the clock that idle eviction runs on, so a replay of
        #: old data evicts exactly as the live stream did.
        self._newest_ms: int | None = None
        self._calibration = np.asarray(model.calibration_scores, dtype=np.float64)
        #: The threshold every new asset starts from, with the config it was made for.
        self._prototype: tuple[ThresholdConfig, Threshold] | None = None
        self.online_guard_ms = online_guard_ms
        self.learner = (
            OnlineLearner(model, online) if online is not None and online.enabled else None
        )

    @classmethod
    def from_settings(cls, model: TrainedModel, settings: Settings) -> Monitor:
        """A monitor configured by the ``window``, ``threshold``, ``alert``, ``drift`` and
        ``online`` sections."""
        return cls(
            model,
            window=settings.window,
            threshold=settings.threshold,
            alert=settings.alert,
            drift=settings.drift,
            online=settings.online,
            online_guard_ms=settings.online.guard_ms,
            rebaseline=settings.rebaseline,
            sensor_health=settings.sensor_health,
            maintenance=settings.maintenance,
            operating_mode=settings.operating_mode,
            stream=settings.model.stream,
        )

    # -- the data flow ----------------------------------------------------------------------

    def process(
        self,
        readings: Sequence[SensorReading],
        *,
        now_ms: int,
        commands: Sequence[OperatorCommand] = (),
    ) -> Outcome:
        """Apply the operators' commands, then window, score, threshold and alert one batch
        of readings, less those of assets not alerted on (``plantwatch/lifecycle.py``)."""
        outcome = Outcome(scored=Scored.empty(len(self.model.signals)), events=[])
        if readings:
            newest = max(r.ts_ms for r in readings)
            self._newest_ms = newest if self._newest_ms is None else max(self._newest_ms, newest)
        if self._parked:
            outcome.not_restored = self._unpark(
                {r.asset for r in readings} | {c.asset for c in commands}
            )
        for command in commands:
            outcome.commands.append(self._command(command, now_ms, outcome))
        # Events an operator caused are always published; the screen below is for those
        # the readings cause (withheld while their alert is shelved).
        by_operators, outcome.events = outcome.events, []
        if not self.lifecycle.active:
            outcome.kept = readings
            self._merge(outcome, self._process_readings(readings, None, now_ms))
        else:
            self._process_screened(readings, self.lifecycle.screen(readings), now_ms, outcome)
        model = (self.model.name, self.model.version)
        caused, outcome.withheld = self.policy.screen(outcome.events)
        outcome.events = by_operators + caused
        outcome.events.extend(self.policy.expire_shelves(now_ms=now_ms, model=model))
        return outcome

    def _command(self, cmd: OperatorCommand, now_ms: int, outcome: Outcome) -> str | Rejection:
        """One operator command: its result, or why it goes to the dead-letter topic."""
        if cmd.command in ("maintenance_start", "maintenance_end"):
            self._window_for(cmd.asset)  # the asset's state exists, to checkpoint
            return self.lifecycle.command(cmd)
        model = (self.model.name, self.model.version)
        alert_id = cmd.alert_id or ""
        if cmd.command == "ack":
            result, events = self.policy.acknowledge(
                cmd.asset, alert_id, by=cmd.by, at_ms=cmd.at_ms, now_ms=now_ms, model=model,
                note=cmd.note,
            )  # fmt: skip
        elif cmd.command == "shelve":
            result, events = self.policy.shelve(
                cmd.asset, alert_id, by=cmd.by, at_ms=cmd.at_ms, until_ms=cmd.until_ms,
                now_ms=now_ms, model=model, note=cmd.note,
            )  # fmt: skip
        else:
            result, events = self.policy.unshelve(
                cmd.asset, alert_id, by=cmd.by, now_ms=now_ms, model=model, note=cmd.note
            )
        if result == "unknown_alert":
            return Rejection(
                Reason.UNKNOWN_ALERT,
                f"{cmd.command}: no open alert {alert_id[:64]!r} of asset {cmd.asset!r} here "
                "(never opened, already resolved, or another asset's)",
            )
        outcome.events.extend(events)
        return result

    def _process_screened(
        self, readings: Sequence[SensorReading], screened: Screened, now_ms: int, outcome: Outcome
    ) -> None:
        """The batch in parts: each asset's readings up to its next change of suppression,
        the change applied between parts (resolve on entering, window restart on leaving)."""
        outcome.suppressed = screened.suppressed
        part = screened.part
        kept_all = np.flatnonzero(part >= 0)
        outcome.kept = (
            readings if len(kept_all) == len(readings) else [readings[i] for i in kept_all.tolist()]
        )
        for asset in screened.touched:
            self._window_for(asset)
        if not screened.transitions and len(kept_all) == len(readings):
            self._merge(outcome, self._process_readings(readings, None, now_ms))
            outcome.notices[:0] = screened.notices
            return
        rounds = 1 + max((len(t) for t in screened.transitions.values()), default=0)
        model_name, model_version = self.model.name, self.model.version
        for k in range(rounds):
            rows = np.flatnonzero(part == k)
            if len(rows):
                self._merge(
                    outcome,
                    self._process_readings([readings[i] for i in rows.tolist()], rows, now_ms),
                )
            for asset, changes in screened.transitions.items():
                if k >= len(changes):
                    continue
                change = changes[k]
                if change.old is None and change.new is not None:
                    outcome.events.extend(
                        self.policy.resolve_all(
                            asset,
                            ts_ms=change.ts_ms,
                            now_ms=now_ms,
                            reason=change.new,
                            model_name=model_name,
                            model_version=model_version,
                        )
                    )
                elif change.new is None and asset in self._windows:
                    self._windows[asset].reset()
        outcome.notices[:0] = screened.notices

    def _merge(self, outcome: Outcome, part: Outcome) -> None:
        outcome.scored = Scored.concat([outcome.scored, part.scored], len(self.model.signals))
        outcome.events.extend(part.events)
        outcome.pushes.update(part.pushes)
        outcome.reordered += part.reordered
        outcome.score_seconds += part.score_seconds
        outcome.drift.extend(part.drift)
        outcome.notices.extend(part.notices)
        if part.swap is not None:
            outcome.swap = part.swap

    def _process_readings(
        self,
        readings: Sequence[SensorReading],
        positions: npt.NDArray[np.int64] | None,
        now_ms: int,
    ) -> Outcome:
        """Window, score, threshold and alert readings that are alerted on. ``positions``:
        each reading's place in the batch given to :meth:`process` (``None``: the same)."""
        outcome = self._process_part(readings, now_ms)
        if positions is not None and len(outcome.scored):
            outcome.scored.source_index = positions[outcome.scored.source_index]
        return outcome

    def _process_part(self, readings: Sequence[SensorReading], now_ms: int) -> Outcome:
        outcome = Outcome(scored=Scored.empty(len(self.model.signals)), events=[])
        empty = self._no_windows()
        windowed = (
            window_columns(
                readings, self.model.signals, self._window_for, empty, one_pass=self.one_pass
            )
            if self.columnar
            else window_each(readings, self._window_for, empty)
        )
        outcome.pushes, outcome.reordered = windowed.pushes, windowed.reordered
        # Sensor health judges every accepted reading, whether or not a window was scored.
        if windowed.columns is None:
            found = self.sensors.check(readings, windowed.accepted, self.policy, now_ms)
        else:
            ts_all, values = windowed.columns
            found = self.sensors.check_columns(
                windowed.accepted_runs, ts_all, values, self.model.signals, self.policy, now_ms
            )
        outcome.events.extend(found)
        if not windowed.assets:
            return outcome
        batch, assets, ts_ms = windowed.batch, windowed.assets, windowed.ts_ms
        runs = list(_runs(assets))
        stream = self._stream
        # What the stream judges continuation on: the windows before any offset below.
        unshifted = batch if stream is None else batch.copy()
        # Relative to the slow drift followed but before any re-baselining offset: each
        # window's level (what the baseline watch compares) and each asset's newest window
        # (what a candidate baseline is tried on).
        levels = self.baselines.follow(runs, batch, ts_ms, batch.mean(axis=1, dtype=np.float64))
        last = {a: batch[end - 1].copy() for a, _, end in runs} if self.baselines.enabled else {}
        self.baselines.apply(runs, batch)
        started = time.perf_counter()
        scores, contributions = (
            self.model.scorer.score_batch(batch)
            if stream is None
            else stream.score_windows(
                assets, batch, unshifted=unshifted, shifts=(unshifted - batch)[:, -1]
            )
        )
        outcome.score_seconds = time.perf_counter() - started
        outcome.scored, judged, eligible = self._judge(
            assets,
            ts_ms,
            windowed.sources,
            np.asarray(scores, np.float64),
            np.asarray(contributions, np.float32),
            now_ms,
        )
        # Anomaly events first, then the sensor events of the batch, then re-baselining.
        outcome.events[:0] = judged
        scored = outcome.scored

        def normal_after(asset: str, offset: npt.NDArray[np.float64]) -> bool:
            """Would the asset's newest window, relative to ``offset``, be judged normal?"""
            window = (last[asset] - offset.astype(np.float32))[None]
            score = float(np.asarray(self.model.scorer.score_batch(window)[0])[0])
            return score <= self._thresholds[asset].value

        events, notices = self.baselines.watch(
            runs, scored.ts_ms, levels, scored.alert_open, self.policy, now_ms, normal_after
        )
        outcome.events.extend(events)
        outcome.notices.extend(notices)
        outcome.drift = self._watch_drift(outcome.scored, batch)
        if self.learner is not None:
            outcome.swap = self._learn(batch, outcome.scored, eligible)
        return outcome

    def _new_stream(self) -> WindowStream | None:
        scorer = self.model.scorer
        if not self.streaming or not isinstance(scorer, Streaming):
            return None
        # The pool holds the assets in memory: idle eviction and revocation forget them.
        return scorer.stream(max_assets=_STREAM_ASSETS)

    def _no_windows(self) -> FloatArray:
        return np.zeros((0, self.model.window, len(self.model.signals)), np.float32)

    def _watch_drift(self, scored: Scored, batch: FloatArray) -> list[tuple[str, int, DriftEvent]]:
        """Page-Hinkley on each asset's scores and per-window signal means."""
        found: list[tuple[str, int, DriftEvent]] = []
        means = batch.mean(axis=1)
        runs = list(_runs(scored.assets))
        monitors = []
        for asset, _, _ in runs:
            monitor = self._drift.get(asset)
            if monitor is None:
                monitor = self._drift[asset] = DriftMonitor(self.model.signals, self.drift_config)
            monitors.append(monitor)
        bounds = [(start, end) for _, start, end in runs]
        if self.drift_side_by_side:
            events = update_runs(monitors, bounds, scored.scores, means, scored.anomalous)
        else:
            events = [
                m.update(scored.scores[a:b], means[a:b], scored.anomalous[a:b])
                for m, (a, b) in zip(monitors, bounds, strict=True)
            ]
        for (asset, start, _), run_events in zip(runs, events, strict=True):
            for event in run_events:
                found.append((asset, int(scored.ts_ms[start + event.batch_index]), event))
        return found

    def _learn(self, batch: FloatArray, scored: Scored, eligible: BoolArray) -> ModelSwap | None:
        """Feed online learning; apply a finished swap (or rollback) from the next batch on."""
        learner = self.learner
        if learner is None:
            return None
        learner.observe(scored.anomalous)
        learner.offer(batch, eligible, scored.ts_ms)
        learner.maybe_start()
        swap = learner.poll()
        if swap is not None:
            # Thresholds are kept: the new model's scores are on the scale of the old one
            # (each scorer divides by its own typical error), and re-seeding them would
            # restart every asset's grace period and hide alerts for a while.
            self.model = swap.model
            self._stream = self._new_stream()  # carried state is the old weights' own
        return swap

    def _judge(
        self,
        assets: list[str],
        ts_ms: npt.NDArray[np.int64],
        sources: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float64],
        contributions: npt.NDArray[np.float32],
        now_ms: int,
    ) -> tuple[Scored, list[AlertEvent], BoolArray]:
        n = len(assets)
        thresholds = np.empty(n, np.float64)
        anomalous = np.empty(n, np.bool_)
        severity = np.empty(n, np.int8)
        alert_open = np.empty(n, np.bool_)
        # Eligible for online learning: judged normal, alert idle, and no abnormal window
        # of the asset within the guard interval before it.
        eligible = np.zeros(n, np.bool_)
        guard = self.online_guard_ms
        events: list[AlertEvent] = []
        signals = self.model.signals
        name, version = self.model.name, self.model.version
        for asset, start, end in _runs(assets):
            # Protection: while the asset's alert is open, nothing it scores is learned, so
            # a long fault cannot teach the threshold that it is normal. Decided window by
            # window, whatever the batch cut: the rest of the run is judged at once with the
            # learning its alert's phase allows, and where the alert opens (or resolves)
            # before the end, judged again from a copy up to that window only, the rest
            # then with the other rule.
            j = start
            while j < end:
                is_open = self.policy.phase(asset) == "open"
                stop = end
                saved = None if stop - j == 1 else _copy_threshold(self._thresholds[asset])
                thr, anom, sev = self._thresholds[asset].update(
                    scores[j:stop], learn=np.full(stop - j, not is_open, dtype=np.bool_)
                )
                thresholds[j:stop], anomalous[j:stop], severity[j:stop] = thr, anom, sev
                if self.columnar and not is_open and not anomalous[j:stop].any():
                    cooling = self.policy.absorb_normal(
                        asset, ts_ms[j:stop], model_name=name, model_version=version
                    )
                    if cooling is not None:
                        # Normal windows, alert quiet: no event, no phase change to judge
                        # again for; only the cooldown's end and the guard to follow.
                        self._absorbed(
                            asset, ts_ms[j:stop], cooling, alert_open[j:stop], eligible[j:stop]
                        )
                        j = stop
                        continue
                for i in range(j, stop):
                    decision = Decision(
                        asset=asset,
                        ts_ms=int(ts_ms[i]),
                        score=float(scores[i]),
                        threshold=float(thresholds[i]),
                        anomalous=bool(anomalous[i]),
                        severity=int(severity[i]),
                        contributions=dict(zip(signals, contributions[i].tolist(), strict=True)),
                        model_name=name,
                        model_version=version,
                    )
                    events.extend(self.policy.step(decision, now_ms=now_ms))
                    phase = self.policy.phase(asset)
                    alert_open[i] = phase == "open"
                    ts_i = int(ts_ms[i])
                    if anomalous[i] or phase != "idle":
                        self._last_abnormal_ms[asset] = ts_i
                    else:
                        last = self._last_abnormal_ms.get(asset)
                        eligible[i] = last is None or ts_i - last > guard
                    if alert_open[i] != is_open:
                        if saved is not None and i + 1 < stop:
                            # Judged past the change: again up to it, from the copy.
                            learn = np.full(i + 1 - j, not is_open, dtype=np.bool_)
                            saved.update(scores[j : i + 1], learn=learn)
                            self._thresholds[asset] = saved
                        stop = i + 1
                        break
                j = stop
        scored = Scored(
            assets=assets,
            ts_ms=ts_ms,
            source_index=sources,
            scores=scores,
            thresholds=thresholds,
            anomalous=anomalous,
            severity=severity,
            contributions=contributions,
            alert_open=alert_open,
        )
        return scored, events, eligible

    def _absorbed(
        self,
        asset: str,
        ts_ms: npt.NDArray[np.int64],
        cooling: BoolArray,
        alert_open: BoolArray,
        eligible: BoolArray,
    ) -> None:
        """What judging normal windows one by one does beside the policy, for windows the
        quiet policy took at once: the alert stays closed, a cooling window is abnormal
        (online learning's guard), an idle one is eligible past the guard interval."""
        alert_open[:] = False
        last = self._last_abnormal_ms.get(asset)
        abnormal = np.flatnonzero(cooling)  # a prefix: the clock only rises
        if abnormal.size:
            last = self._last_abnormal_ms[asset] = int(ts_ms[abnormal[-1]])
        if last is None:
            eligible[:] = ~cooling
        else:
            eligible[:] = ~cooling & (ts_ms - last > self.online_guard_ms)

    def _window_for(self, asset: str) -> AssetWindow:
        state = self._windows.get(asset)
        if state is None:
            ws = self.window_settings
            state = AssetWindow(
                self.model.signals,
                window=self.model.window,
                stride=ws.stride,
                mean=self.model.normalizer.mean,
                scale=self.model.normalizer.scale,
                stale_limit=ws.stale_limit,
                max_gap_ms=ws.gap_limit_ms(self.model.interval_ms(asset)),
            )
            self._windows[asset] = state
            self._thresholds[asset] = self._new_threshold()
        return state

    def _new_threshold(self) -> Threshold:
        """A new asset's threshold: a copy of one calibrated once per configuration.

        Calibrating (SPOT's tail fit on the model's calibration scores) cost ~6 ms per asset,
        a minute at start for 10,000 assets; the copy costs ~15 µs and is the same object,
        since the calibration is the same for every asset.
        """
        config = self.threshold_config
        if self._prototype is None or self._prototype[0] is not config:
            self._prototype = (config, make_threshold(config, self._calibration))
        return _copy_threshold(self._prototype[1])

    # -- state --------------------------------------------------------------------------------

    @property
    def assets(self) -> list[str]:
        return sorted(self._windows)

    def open_alerts(self) -> int:
        return self.policy.open_alerts()

    def threshold_of(self, asset: str) -> Threshold | None:
        return self._thresholds.get(asset)

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        """One asset's whole state (window, threshold, alert), plain and versioned."""
        state = self._windows.get(asset)
        if state is None:
            parked = self._parked.get(asset)
            return None if parked is None else dict(msgspec.json.decode(parked))
        return {
            "v": SNAPSHOT_VERSION,
            "model": {"name": self.model.name, "version": self.model.version},
            "window": state.snapshot(),
            "threshold": self._thresholds[asset].snapshot(),
            "alert": self.policy.snapshot_asset(asset),
            "drift": self._drift[asset].snapshot() if asset in self._drift else None,
            "last_abnormal_ms": self._last_abnormal_ms.get(asset),
            "baseline": self.baselines.snapshot_asset(asset),
            "health": self.sensors.snapshot_asset(asset),
            "lifecycle": self.lifecycle.snapshot_asset(asset),
            "stream": self._stream_snapshot(asset),
        }

    def _stream_snapshot(self, asset: str) -> dict[str, Any] | None:
        """The asset's carried model state (plain lists), or ``None`` when there is none."""
        if self._stream is None:
            return None
        try:
            state = self._stream.snapshot(asset)
        except KeyError:  # no window scored yet
            return None
        return {k: v.tolist() for k, v in state.items()}

    # -- assets not in memory -----------------------------------------------------------------

    def park(self, asset: str, snap: Mapping[str, Any]) -> None:
        """Keep a snapshot (e.g. read from the state topic) until the asset speaks again."""
        if asset not in self._windows:
            self._parked[asset] = msgspec.json.encode(snap)

    def evict_idle(self) -> list[str]:
        """Take assets silent for over ``window.idle_evict_ms`` (of reading time) out of
        memory; their snapshot is kept compact and restored on their next reading.

        An asset whose alert is open stays: its alert is still something operators see.
        """
        limit = self.window_settings.idle_evict_ms
        if self._newest_ms is None or limit <= 0:
            return []
        cutoff = self._newest_ms - limit
        idle = [
            asset
            for asset, state in self._windows.items()
            if state.last_ts_ms is not None
            and state.last_ts_ms < cutoff
            and not self.policy.has_open(asset)
        ]
        for asset in idle:
            snap = self.snapshot_asset(asset)
            self._forget_live([asset])
            if snap is not None:
                self._parked[asset] = msgspec.json.encode(snap)
        return idle

    @property
    def parked_assets(self) -> list[str]:
        return sorted(self._parked)

    def _unpark(self, assets: Iterable[str]) -> list[tuple[str, str]]:
        failed: list[tuple[str, str]] = []
        for asset in assets:
            raw = self._parked.pop(asset, None)
            if raw is None or asset in self._windows:
                continue
            try:
                partly = self.restore_asset(asset, msgspec.json.decode(raw))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self._forget_live([asset])
                failed.append((asset, (str(exc) or type(exc).__name__) + "; starting it afresh"))
            else:
                if partly is not None:
                    failed.append((asset, partly))
        return failed

    def restore_asset(self, asset: str, snap: Mapping[str, Any]) -> str | None:
        """Continue an asset from :meth:`snapshot_asset` (made by this or another process).

        A snapshot saved under another model (name or version) restores only what does not
        depend on the model: the alert state (open alerts keep their ``alert_id``, k-of-n
        history and cooldown, so an alert opened before a model change is resolved under its
        own id, not left open for ever) and the time of the last abnormal window (online
        learning's guard). The window (normalised by the old model), the threshold
        (calibrated on its scores), drift, baseline offset and sensor-health state start
        afresh from the served model. Returns what was left out, or ``None``.
        """
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"asset snapshot version {snap.get('v')} is not {SNAPSHOT_VERSION}")
        saved = snap.get("model")
        saved_name = saved.get("name") if isinstance(saved, Mapping) else None
        saved_version = saved.get("version") if isinstance(saved, Mapping) else None
        if (saved_name, saved_version) != (self.model.name, self.model.version):
            self._window_for(asset)
            if snap.get("alert") is not None:
                self.policy.restore(snap["alert"])
            if snap.get("last_abnormal_ms") is not None:
                self._last_abnormal_ms[asset] = int(snap["last_abnormal_ms"])
            if snap.get("lifecycle") is not None:
                self.lifecycle.restore_asset(asset, snap["lifecycle"])
            return (
                f"saved under model {saved_name} {saved_version}, serving {self.model.name} "
                f"{self.model.version}: window, threshold, drift, baseline and sensor-health "
                "state start afresh; alert state kept"
            )
        state = self._window_for(asset)
        state.restore(snap["window"])
        self._thresholds[asset] = restore_threshold(snap["threshold"])
        if snap.get("alert") is not None:
            self.policy.restore(snap["alert"])
        if snap.get("drift") is not None:
            self._drift[asset] = DriftMonitor.restore(snap["drift"])
        if snap.get("last_abnormal_ms") is not None:
            self._last_abnormal_ms[asset] = int(snap["last_abnormal_ms"])
        if snap.get("baseline") is not None:
            self.baselines.restore_asset(asset, snap["baseline"])
        if snap.get("health") is not None:
            self.sensors.restore_asset(asset, snap["health"])
        if snap.get("lifecycle") is not None:
            self.lifecycle.restore_asset(asset, snap["lifecycle"])
        if snap.get("stream") is not None and self._stream is not None:
            # Without it (a snapshot from before, or with model.stream off) the asset's next
            # window primes the state from its own rows: the window scorer's score.
            try:
                self._stream.restore(asset, {k: np.asarray(v) for k, v in snap["stream"].items()})
            except (ValueError, KeyError) as exc:
                self._stream.forget([asset])
                return f"model stream state not restored ({exc}); primed from the next window"
        return None

    def forget(self, assets: Iterable[str]) -> None:
        """Drop the state of assets this process no longer owns (parked ones too)."""
        gone = list(assets)
        for asset in gone:
            self._parked.pop(asset, None)
        self._forget_live(gone)

    def forget_all(self) -> None:
        """Drop every asset's state, in memory and parked (all partitions revoked)."""
        self._parked.clear()
        self._forget_live(list(self._windows))

    def _forget_live(self, gone: list[str]) -> None:
        for asset in gone:
            self._windows.pop(asset, None)
            self._thresholds.pop(asset, None)
            self._drift.pop(asset, None)
            self._last_abnormal_ms.pop(asset, None)
        if self._stream is not None:
            self._stream.forget(gone)
        self.baselines.forget(gone)
        self.sensors.forget(gone)
        self.lifecycle.forget(gone)
        self.policy.forget(gone)


def _copy_threshold(threshold: Threshold) -> Threshold:
    """A deep copy that shares the threshold's frozen config (about 40 % of the copy's
    cost, which is taken per asset run in case its alert's phase changes mid-run)."""
    config = getattr(threshold, "config", None)
    memo: dict[int, Any] = {} if config is None else {id(config): config}
    return copy.deepcopy(threshold, memo)


def _runs(assets: Sequence[str]) -> Iterator[tuple[str, int, int]]:
    """(asset, start, end) of each run of equal assets in a list grouped by asset."""
    n = len(assets)
    start = 0
    while start < n:
        end = start + 1
        while end < n and assets[end] == assets[start]:
            end += 1
        yield assets[start], start, end
        start = end

"""The :class:`AlertPolicy` facade: every asset's tracks, stepped, inspected and persisted.

It finds (or creates) the machine a decision belongs to and hands it to
:mod:`alerts.policy.machine` (one decision) or :mod:`alerts.policy.columns` (a column of
them); snapshots go through :mod:`alerts.policy.snapshot`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from alerts.events import SENSOR_RULES, SEVERITY_NAMES, AlertEvent, AlertKind
from alerts.policy.columns import (
    _absorb_normal,
    _as_cells,
    _columns,
    _dormant_history,
    _step_columns,
)
from alerts.policy.config import SENSOR_ALERT_DEFAULTS, AlertConfig
from alerts.policy.decision import ANOMALY, Decision, RuleColumns, TrackKey, _check_track
from alerts.policy.machine import _advance, _resolve_now
from alerts.policy.operator import (
    OperatorResult,
    acknowledge,
    counts,
    expire,
    open_machines,
    screen,
    shelve,
    shelved_assets,
    unshelve,
)
from alerts.policy.snapshot import _parse_snapshot, _snapshot, _snapshot_asset
from alerts.policy.state import Phase, _AssetState, _dormant, _Episode, _Track


class AlertPolicy:
    """Turns each asset's stream of :class:`Decision` into opened/updated/resolved events.

    ``config`` drives anomaly (and quality) alerts; ``sensor`` drives sensor-health alerts
    (default :data:`SENSOR_ALERT_DEFAULTS`).

    >>> policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    >>> d = Decision("pump-1", 1795899600000, 6.0, 4.0, True, 1, {"temp": 1.0}, "m", "1")
    >>> [e.event for e in policy.step(d, now_ms=1795899600500)], policy.open_alerts()
    (['opened'], 1)
    >>> restored = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    >>> restored.restore(policy.snapshot())
    >>> restored.open_alerts()
    1
    >>> [(e.event, e.reason) for e in policy.resolve(
    ...     "pump-1", ts_ms=1795899601000, now_ms=1795899601500, reason="rebaselined")]
    [('resolved', 'rebaselined')]
    """

    def __init__(self, config: AlertConfig | None = None, *, sensor: AlertConfig | None = None):
        self.config = config if config is not None else AlertConfig()
        self.sensor_config = sensor if sensor is not None else SENSOR_ALERT_DEFAULTS
        self._assets: dict[str, _AssetState] = {}
        # The model of each asset's latest anomaly decision: what a resolve() event names.
        # In memory only (snapshots keep their shape); a restored asset learns it again at
        # its next decision.
        self._models: dict[str, tuple[str, str]] = {}
        #: Assets with a shelved open alert: the only ones :meth:`screen` and
        #: :meth:`expire_shelves` look at (rebuilt from the state on restore).
        self._shelved: set[str] = set()

    def config_for(self, kind: AlertKind) -> AlertConfig:
        """The settings of ``kind``'s tracks: ``sensor_config`` for sensor alerts, else
        ``config``."""
        return self.sensor_config if kind == "sensor" else self.config

    # -- stepping -------------------------------------------------------------------------

    def step(self, decision: Decision, *, now_ms: int) -> list[AlertEvent]:
        """Feed one window's decision; returns the events it causes (usually none).

        ``now_ms`` is the wall-clock time of the decision, used only for ``detected_at``.
        The decision steps the machine of its track (``decision.track``) only.
        """
        state = self._state(decision.asset)
        if decision.kind == "anomaly":
            self._models[decision.asset] = (decision.model_name, decision.model_version)
        machine = state if decision.kind == "anomaly" else self._track(state, decision.track)
        return _advance(machine, decision, self.config_for(decision.kind), now_ms)

    def step_many(self, decisions: Iterable[Decision], *, now_ms: int) -> list[AlertEvent]:
        """Step every decision in order (a scored batch); events come out in the same order."""
        events: list[AlertEvent] = []
        for decision in decisions:
            events.extend(self.step(decision, now_ms=now_ms))
        return events

    def step_track(
        self,
        asset: str,
        ts_ms: npt.ArrayLike,
        anomalous: npt.ArrayLike,
        scores: npt.ArrayLike,
        thresholds: npt.ArrayLike,
        *,
        kind: AlertKind,
        rule: str | None,
        signal: str | None,
        model_name: str,
        model_version: str,
        now_ms: int,
        severity: npt.ArrayLike | None = None,
    ) -> list[AlertEvent]:
        """Step one track with a column of decisions (one per reading, in time order).

        The same events and state as :meth:`step` with one :class:`Decision` per element
        (``severity`` 0 unless given: derived from score / threshold), but normal readings
        while the track is quiet are taken in bulk, so a long normal batch costs a few array
        operations rather than a Python step per reading. ``thresholds`` may be a scalar.
        """
        _check_track(kind, rule, signal)
        columns = _columns(ts_ms, anomalous, scores, thresholds, severity)
        if columns[0].shape[0] == 0:
            return []
        key: TrackKey = (kind, rule, signal)
        state = self._state(asset)
        if kind == "anomaly":
            self._models[asset] = (model_name, model_version)
        machine = state if kind == "anomaly" else self._track(state, key)
        cfg = self.config_for(kind)
        return [
            ev
            for _, ev in _step_columns(
                asset, machine, key, cfg, *columns, model_name, model_version, now_ms
            )
        ]

    def step_sensor(
        self,
        asset: str,
        ts_ms: npt.ArrayLike,
        signals: Sequence[str],
        fired: RuleColumns,
        scores: RuleColumns,
        limits: RuleColumns,
        *,
        present: npt.ArrayLike | None = None,
        model_name: str,
        model_version: str,
        now_ms: int,
    ) -> list[AlertEvent]:
        """Run one asset's batch of sensor-health findings through its sensor tracks.

        Columns, as ``models.health.HealthFindings`` holds them: ``ts_ms`` (n,) reading
        times in order; for each rule name in ``fired`` (``stuck``, ``spike``,
        ``out_of_range``): ``fired[rule]`` (n, signals) whether the rule flags the reading,
        ``scores[rule]`` (n, signals) its statistic there and ``limits[rule]`` (signals,)
        its limit per signal. ``present`` (n, signals), when given, marks the readings that
        carry a value for the signal; the others are no decision at all for that signal's
        tracks (a missing value neither keeps an alert open nor counts toward resolving it).

        Equivalent to :meth:`step` with one sensor :class:`Decision` per reading, signal and
        rule (events in reading-time order), except that only tracks with something to do
        are stepped: a (rule, signal) that flags nothing in the batch and has no alert open,
        cooling or pending is not visited, and a track that has gone back to quiet is
        dropped, so the state holds only alerts in progress.
        """
        ts = np.asarray(ts_ms, dtype=np.int64)
        n = ts.shape[0]
        names = list(signals)
        width = len(names)
        mask = None if present is None else _as_cells(present, (n, width), "present", np.bool_)
        state = self._assets.get(asset)
        existing: dict[tuple[str, str | None], _Track] = (
            {}
            if state is None
            else {(t.rule, t.signal): t for t in state.tracks if t.kind == "sensor"}
        )
        position = {name: j for j, name in enumerate(names)}
        cfg = self.config_for("sensor")
        found: list[tuple[int, int, AlertEvent]] = []
        order = 0
        by_rule = cast(Mapping[str, npt.ArrayLike], fired)
        scores_by_rule = cast(Mapping[str, npt.ArrayLike], scores)
        limits_by_rule = cast(Mapping[str, npt.ArrayLike], limits)
        for rule in by_rule:
            if rule not in SENSOR_RULES:
                raise ValueError(
                    f"sensor findings name rule {rule!r}; the rules are {', '.join(SENSOR_RULES)}"
                )
            flags = _as_cells(by_rule[rule], (n, width), f"fired[{rule!r}]", np.bool_)
            values = _as_cells(scores_by_rule[rule], (n, width), f"scores[{rule!r}]", np.float64)
            limit = np.asarray(limits_by_rule[rule], dtype=np.float64)
            if limit.shape != (width,):
                raise ValueError(
                    f"limits[{rule!r}] has shape {limit.shape}, expected ({width},) (one limit "
                    "per signal)"
                )
            columns = set(np.flatnonzero(flags.any(axis=0)).tolist())
            columns.update(position[s] for r, s in existing if r == rule and s in position)
            for j in sorted(columns):
                rows = np.ones(n, np.bool_) if mask is None else mask[:, j]
                col_ts = ts[rows]
                if state is None:
                    state = self._state(asset)
                key: TrackKey = ("sensor", rule, names[j])
                machine = self._track(state, key)
                col_flags = flags[rows, j]
                for ts_j, ev in _step_columns(
                    asset,
                    machine,
                    key,
                    cfg,
                    col_ts,
                    col_flags,
                    values[rows, j],
                    np.full(col_flags.shape[0], limit[j]),
                    np.zeros(col_flags.shape[0], np.int64),
                    model_name,
                    model_version,
                    now_ms,
                ):
                    found.append((ts_j, order, ev))
                    order += 1
        if state is not None:
            state.tracks = [t for t in state.tracks if not (t.kind == "sensor" and _dormant(t))]
            if state.clock_ms is None and not state.tracks and _dormant(state):
                del self._assets[asset]  # nothing left that a fresh state would not be
        found.sort(key=lambda item: (item[0], item[1]))
        return [ev for _, _, ev in found]

    def absorb_normal(
        self, asset: str, ts_ms: npt.ArrayLike, *, model_name: str, model_version: str
    ) -> npt.NDArray[np.bool_] | None:
        """Step the asset's anomaly alert with a column of normal windows at once, if it is
        quiet (no alert open, nothing anomalous in its k-of-n history): then no event can
        come out, and the state is what :meth:`step` with one normal :class:`Decision` per
        window would leave (clock, history, the end of a cooldown). Returns, per window,
        whether the alert was still cooling after it; ``None``, with nothing done, when the
        alert is not quiet (step those windows one by one).
        """
        ts = np.asarray(ts_ms, dtype=np.int64)
        state = self._state(asset)
        self._models[asset] = (model_name, model_version)
        if state.episode is not None or not _dormant_history(state):
            return None
        if ts.shape[0] == 0:
            return np.zeros(0, np.bool_)
        clocks = np.maximum.accumulate(ts)
        if state.clock_ms is not None:
            clocks = np.maximum(clocks, state.clock_ms)
        cooling = (clocks < state.cooldown_until_ms) & (state.phase == "cooling")
        _absorb_normal(state, ts, self.config.history)
        return np.asarray(cooling, np.bool_)

    def sensor_quiet(self, asset: str) -> bool:
        """Whether :meth:`step_sensor` with nothing flagged would change nothing for the
        asset: no sensor track in progress, and no fresh state to drop."""
        state = self._assets.get(asset)
        if state is None:
            return True
        if any(t.kind == "sensor" for t in state.tracks):
            return False
        return not (state.clock_ms is None and not state.tracks and _dormant(state))

    def resolve(
        self,
        asset: str,
        *,
        ts_ms: int,
        now_ms: int,
        reason: str,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> list[AlertEvent]:
        """End the asset's open anomaly alert now, as if its ``m`` normal windows had come.

        For a cause outside the scores, e.g. ``reason="rebaselined"``: the asset moved to a
        new operating point and its alert is about the old one. Returns the one ``resolved``
        event (same ``alert_id``; ``ended_at`` the episode's last anomalous window as
        always, ``window_at`` ``ts_ms``, ``reason`` as given), or ``[]`` when no anomaly
        alert is open. Like any resolve, the track then cools down from its reading time
        (``ts_ms``, or its clock where that is later: the clock never goes back), with its
        k-of-n history cleared, so a new alert needs ``k`` fresh anomalous windows and the
        end of the cooldown. Sensor and quality tracks are untouched.

        The event names the model of the asset's latest anomaly decision, unless
        ``model_name`` and ``model_version`` are given (needed when the asset was restored
        from a snapshot and has had no decision since).
        """
        state = self._assets.get(asset)
        if state is None or state.episode is None:
            return []
        model = self._models.get(asset)
        if model_name is not None and model_version is not None:
            model = (model_name, model_version)
        elif model_name is not None or model_version is not None:
            raise ValueError("resolve() takes model_name and model_version together, or neither")
        if model is None:
            raise ValueError(
                f"resolving {asset!r}'s alert needs the model its event names, and the asset "
                "has had no anomaly decision since it was restored; pass model_name= and "
                "model_version="
            )
        decision = _resolving(asset, ts_ms, state.episode, model, ANOMALY)
        return _resolve_now(state, decision, self.config, now_ms, reason)

    def resolve_all(
        self,
        asset: str,
        *,
        ts_ms: int,
        now_ms: int,
        reason: str,
        model_name: str,
        model_version: str,
    ) -> list[AlertEvent]:
        """End every open alert of the asset, of every kind, at ``ts_ms`` and clear its k-of-n
        histories: the asset leaves alerting for a cause outside the scores (``reason``
        ``maintenance`` or ``stopped``). One ``resolved`` event per open alert; each track
        then cools down as after any resolve. ``model_*`` name the model where an alert's
        episode does not (a snapshot from before episodes kept it).
        """
        state = self._assets.get(asset)
        if state is None:
            return []
        events: list[AlertEvent] = []
        for key, machine, episode in list(open_machines(state)):
            model = (episode.model_name or model_name, episode.model_version or model_version)
            decision = _resolving(asset, ts_ms, episode, model, key)
            events.extend(_resolve_now(machine, decision, self.config_for(key[0]), now_ms, reason))
        state.recent = []
        for track in state.tracks:
            track.recent = []
        return events

    # -- operators: acknowledge, shelve (alerts/policy/operator.py) ------------------------

    def acknowledge(
        self,
        asset: str,
        alert_id: str,
        *,
        by: str,
        at_ms: int,
        now_ms: int,
        model: tuple[str, str],
        note: str = "",
    ) -> tuple[OperatorResult, list[AlertEvent]]:
        """Acknowledge the asset's open alert ``alert_id``: ``("applied", [updated])``,
        ``("duplicate", [])`` when it was already, ``("unknown_alert", [])`` when no such
        alert is open. ``model`` names the model where the alert's episode does not."""
        return acknowledge(
            self._assets, asset, alert_id, by=by, at_ms=at_ms, note=note,
            cfg=self.config, model=model, now_ms=now_ms,
        )  # fmt: skip

    def shelve(
        self,
        asset: str,
        alert_id: str,
        *,
        by: str,
        at_ms: int,
        until_ms: int | None,
        now_ms: int,
        model: tuple[str, str],
        note: str = "",
    ) -> tuple[OperatorResult, list[AlertEvent]]:
        """Shelve the asset's open alert until ``until_ms`` (reading time), bounded by
        ``max_shelve_ms`` after ``at_ms`` (and that long when ``None``)."""
        result = shelve(
            self._assets, asset, alert_id, by=by, at_ms=at_ms, until_ms=until_ms, note=note,
            cfg=self.config, model=model, now_ms=now_ms,
        )  # fmt: skip
        if result[0] == "applied":
            self._shelved.add(asset)
        return result

    def unshelve(
        self,
        asset: str,
        alert_id: str,
        *,
        by: str,
        now_ms: int,
        model: tuple[str, str],
        note: str = "",
    ) -> tuple[OperatorResult, list[AlertEvent]]:
        """Return a shelved alert to service now; announced again if still open."""
        return unshelve(
            self._assets, asset, alert_id, by=by, note=note,
            cfg=self.config, model=model, now_ms=now_ms,
        )  # fmt: skip

    def screen(self, events: Iterable[AlertEvent]) -> tuple[list[AlertEvent], int]:
        """The events to publish and the number withheld because their alert is shelved
        (see :mod:`alerts.policy.operator`). Every event the policy returns goes through
        this before it is published."""
        events = list(events)
        if not self._shelved:
            return events, 0
        return screen(self._assets, self._shelved, events)

    def expire_shelves(self, *, now_ms: int, model: tuple[str, str]) -> list[AlertEvent]:
        """End the shelvings whose time their asset's reading clock has reached; each alert
        still open is announced again (an ``updated`` event)."""
        if not self._shelved:
            return []
        return expire(
            self._assets, self._shelved, config_for=self.config_for, model=model, now_ms=now_ms
        )

    def open_by_severity(self) -> dict[str, int]:
        """Open alerts of every kind by their episode's severity so far (for the
        ``plantwatch_alerts_open_by_severity`` gauge: "a critical alert is open now")."""
        counted: dict[str, int] = dict.fromkeys(SEVERITY_NAMES.values(), 0)
        for state in self._assets.values():
            for _, _, episode in open_machines(state):
                counted[SEVERITY_NAMES[episode.severity]] += 1
        return counted

    def operator_counts(self) -> tuple[int, int]:
        """(acknowledged, shelved) open alerts, for the gauges."""
        return counts(self._assets)

    # -- the machines ---------------------------------------------------------------------

    def _state(self, asset: str) -> _AssetState:
        state = self._assets.get(asset)
        if state is None:
            state = self._assets[asset] = _AssetState()
        return state

    @staticmethod
    def _track(state: _AssetState, key: TrackKey) -> _Track:
        for track in state.tracks:
            if track.key == key:
                return track
        kind, rule, signal = key
        if rule is None:  # _check_track has refused this already for decisions
            raise ValueError(f"a {kind} alert needs a rule")
        track = _Track(kind=kind, rule=rule, signal=signal)
        state.tracks.append(track)
        return track

    # -- inspection -----------------------------------------------------------------------

    def open_alerts(self) -> int:
        """How many alerts are open, of every kind (for the ``plantwatch_alerts_open`` gauge)."""
        return sum(
            (state.episode is not None) + sum(t.episode is not None for t in state.tracks)
            for state in self._assets.values()
        )

    def phase(
        self,
        asset: str,
        kind: AlertKind = "anomaly",
        rule: str | None = None,
        signal: str | None = None,
    ) -> Phase:
        """``idle``, ``open`` or ``cooling`` (after a resolve, within the cooldown) of one
        track; by default the asset's anomaly alert, as the threshold's protection needs."""
        state = self._assets.get(asset)
        if state is None:
            return "idle"
        if kind == "anomaly":
            return state.phase
        key: TrackKey = (kind, rule, signal)
        return next((t.phase for t in state.tracks if t.key == key), "idle")

    def has_open(self, asset: str) -> bool:
        """Whether any alert of the asset, of any kind, is open (an asset to keep in memory)."""
        state = self._assets.get(asset)
        return state is not None and (
            state.episode is not None or any(t.episode is not None for t in state.tracks)
        )

    def open_tracks(self, asset: str) -> list[TrackKey]:
        """The (kind, rule, signal) of every open alert of the asset, anomaly first."""
        state = self._assets.get(asset)
        if state is None:
            return []
        keys = [ANOMALY] if state.episode is not None else []
        return keys + [t.key for t in state.tracks if t.episode is not None]

    def assets(self) -> list[str]:
        """Assets this policy holds state for, sorted."""
        return sorted(self._assets)

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """All per-asset state as plain JSON-able data: ``{"version": 1, "assets": {...}}``.

        Each asset's entry is its anomaly machine's fields (as always) plus ``tracks``: the
        machines of its other alerts, each with its ``kind``, ``rule`` and ``signal``.
        """
        return _snapshot(self._assets)

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        """One asset's state in the same versioned shape (for per-asset changelog records)."""
        state = self._assets.get(asset)
        return None if state is None else _snapshot_asset(asset, state)

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Add (or replace) the assets in ``snapshot``; stepping then continues exactly.

        Raises ``ValueError`` naming the problem when the snapshot is of an unknown version or
        damaged. The k-of-n history is trimmed to this policy's ``n`` if the configuration
        changed between snapshot and restore. A snapshot written before sensor alerts
        existed (no ``tracks``) restores as an asset with anomaly state only.
        """
        restored = _parse_snapshot(snapshot, lambda kind: self.config_for(kind).history)
        self._assets.update(restored)
        self._shelved.difference_update(restored)
        self._shelved.update(shelved_assets(restored))

    def forget(self, assets: Iterable[str]) -> None:
        """Drop state for assets this process no longer owns (partitions revoked).

        No event is emitted: the process that now owns the asset restores its state and
        continues any open alert.
        """
        for asset in assets:
            self._assets.pop(asset, None)
            self._models.pop(asset, None)
            self._shelved.discard(asset)


def _resolving(
    asset: str, ts_ms: int, episode: _Episode, model: tuple[str, str], key: TrackKey
) -> Decision:
    """The normal decision that ends ``episode`` now, for a resolve from outside the scores."""
    kind, rule, signal = key
    return Decision(
        asset=asset,
        ts_ms=ts_ms,
        score=episode.peak_score,
        threshold=episode.peak_threshold,
        anomalous=False,
        severity=0,
        contributions={},
        model_name=model[0],
        model_version=model[1],
        kind=kind,
        rule=rule,
        signal=signal,
    )

"""Per-asset alert state machine: debounce, hysteresis and cooldown between scores and people.

The policy is pure: it takes one :class:`Decision` per scored window (from the threshold
layer) and returns the :class:`~alerts.events.AlertEvent` values that window causes. It never
reads a clock or touches Kafka, so the run loop and the backtest drive the very same code.

Life of an asset's alert::

    idle --(k of the last n windows anomalous)--> open --(m normal windows in a row)--> resolved
      ^                                                                                   |
      +------------------------(cooldown_ms of reading time passed)----------------------+

Decisions made here, and why:

* **All policy timing runs on reading time** (``Decision.ts_ms``), never on ``now_ms``. The
  cooldown and the ``updated`` rate limit are therefore a pure function of the decisions, so
  a replay after a crash, or a backtest of the same file, makes the same alerts with the same
  ids. ``now_ms`` only fills ``detected_at``. An asset's reading time is the latest
  ``ts_ms`` seen for it, so a late window cannot move its clock backwards.
* **Opening needs the current window to be anomalous** and ``k`` anomalous windows among the
  last ``n`` (fewer than ``n`` seen counts as the windows seen so far).
* **Cooldown defers, it does not discard**: windows that arrive during the cooldown still
  fill the k-of-n history, but an open waits until the cooldown has passed and an anomalous
  window arrives; the history is cleared at each resolve, so a new episode never starts
  before the previous one ended.
* ``started_at`` is the reading time of the earliest anomalous window in the history that
  opened the alert; ``ended_at`` is the reading time of the **last anomalous window** before
  the ``m`` normal ones (when the abnormal behaviour stopped, not when the monitor became
  sure of it; ``window_at`` of the ``resolved`` event carries the latter).
* Alert severity is the highest severity seen in the episode. The threshold layer's
  severity is used as given; an anomalous decision with severity 0 gets ``critical`` when
  score / threshold reaches ``critical_ratio``, else ``warning``.
* ``updated`` is sent at once when severity escalates (at most once per episode, as there
  are two levels), and when the peak score has risen by ``update_min_rise`` (a fraction)
  over the last reported peak, at most once per ``update_every_ms``.
* Shutting down never resolves anything: a restarted monitor restores the snapshot and
  continues every open alert under the same id.

>>> policy = AlertPolicy(AlertConfig(k=2, n=3, m=2, cooldown_ms=0))
>>> def d(ts_ms, anomalous):
...     return Decision("pump-1", ts_ms, 9.0 if anomalous else 1.0, 4.0, anomalous,
...                     1 if anomalous else 0, {"temp": 0.7, "flow": 0.3}, "lstm-ae", "1")
>>> [(e.event, e.severity) for t, a in [(0, True), (1, True), (2, False), (3, False)]
...  for e in policy.step(d(1795899600000 + t * 1000, a), now_ms=1795899610000)]
[('opened', 'warning'), ('resolved', 'warning')]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from alerts.events import SEVERITY_NAMES, AlertEvent, EventKind, ModelRef, TopSignal
from common.config import Config
from common.timestamps import format_ts

SNAPSHOT_VERSION = 1

Phase = Literal["idle", "open", "cooling"]


@dataclass(frozen=True)
class Decision:
    """The threshold layer's verdict on one scored window of one asset.

    ``ts_ms`` is the reading time of the window's last reading. ``severity``: 0 none,
    1 warning, 2 critical. ``contributions`` maps signal to its share of the score.
    """

    asset: str
    ts_ms: int
    score: float
    threshold: float
    anomalous: bool
    severity: int
    contributions: Mapping[str, float] = field(hash=False)
    model_name: str
    model_version: str

    def __post_init__(self) -> None:
        if not self.asset:
            raise ValueError("a decision needs a non-empty asset id")
        if isinstance(self.ts_ms, bool) or not isinstance(self.ts_ms, int):
            raise ValueError(f"ts_ms must be epoch milliseconds as int, got {self.ts_ms!r}")
        if self.severity not in (0, 1, 2):
            raise ValueError(
                f"severity must be 0 (none), 1 (warning) or 2 (critical), got {self.severity!r}"
            )
        if self.anomalous and not (math.isfinite(self.score) and math.isfinite(self.threshold)):
            raise ValueError(
                f"an anomalous decision for {self.asset!r} needs a finite score and threshold, "
                f"got score={self.score} threshold={self.threshold}"
            )


class AlertConfig(Config, frozen=True, kw_only=True):
    """Debounce, hysteresis and rate limits of the alert policy (see the module docstring).

    Ranges are checked when a configuration is loaded (``msgspec.convert``); the one
    cross-field rule, ``k <= n``, is checked on construction too.
    """

    #: Open after ``k`` of the last ``n`` windows are anomalous.
    k: Annotated[int, msgspec.Meta(ge=1)] = 3
    n: Annotated[int, msgspec.Meta(ge=1)] = 5
    #: Resolve after ``m`` normal windows in a row.
    m: Annotated[int, msgspec.Meta(ge=1)] = 10
    #: No new alert for an asset this soon (reading time) after one resolved.
    cooldown_ms: Annotated[int, msgspec.Meta(ge=0)] = 60_000
    update_every_ms: Annotated[int, msgspec.Meta(ge=0)] = 30_000
    update_min_rise: Annotated[float, msgspec.Meta(ge=0)] = 0.2
    critical_ratio: Annotated[float, msgspec.Meta(gt=1)] = 2.0
    top_signals: Annotated[int, msgspec.Meta(ge=1)] = 3

    def __post_init__(self) -> None:
        if self.k > self.n:
            raise ValueError(f"alert policy needs k <= n, got k={self.k} n={self.n}")


def alert_id_for(asset: str, model_name: str, started_at_ms: int) -> str:
    """Deterministic alert id: a replay after a crash names the same episode the same way.

    >>> alert_id_for("pump-17", "lstm-ae", 1795899600123)
    '8473ed89648083735d8da7c5c20c7e6e'
    """
    digest = hashlib.sha256(f"{asset}|{model_name}|{started_at_ms}".encode()).hexdigest()
    return digest[:32]


# Internal per-asset state, as msgspec structs: snapshot() is msgspec.to_builtins of these and
# restore() validates through msgspec.convert, so a damaged snapshot fails loudly, by field.


class _Window(msgspec.Struct, omit_defaults=True):
    """A window in the k-of-n history; score fields are only kept for anomalous windows."""

    ts_ms: int
    severity: int = 0
    score: float = 0.0
    threshold: float = 0.0
    top: list[tuple[str, float]] = []


class _Episode(msgspec.Struct):
    alert_id: str
    started_at_ms: int
    severity: int
    peak_score: float
    peak_threshold: float
    peak_top: list[tuple[str, float]]
    last_anomalous_ms: int
    normal_streak: int
    reported_peak: float
    last_update_ms: int


class _AssetState(msgspec.Struct):
    phase: Phase = "idle"
    clock_ms: int | None = None
    cooldown_until_ms: int = 0
    recent: list[_Window] = []
    episode: _Episode | None = None


class AlertPolicy:
    """Turns each asset's stream of :class:`Decision` into opened/updated/resolved events.

    >>> policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    >>> d = Decision("pump-1", 1795899600000, 5.0, 4.0, True, 1, {"temp": 1.0}, "m", "1")
    >>> [e.event for e in policy.step(d, now_ms=1795899600500)], policy.open_alerts()
    (['opened'], 1)
    >>> restored = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    >>> restored.restore(policy.snapshot())
    >>> restored.open_alerts()
    1
    """

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config if config is not None else AlertConfig()
        self._assets: dict[str, _AssetState] = {}

    # -- stepping -------------------------------------------------------------------------

    def step(self, decision: Decision, *, now_ms: int) -> list[AlertEvent]:
        """Feed one window's decision; returns the events it causes (usually none).

        ``now_ms`` is the wall-clock time of the decision, used only for ``detected_at``.
        """
        state = self._assets.get(decision.asset)
        if state is None:
            state = self._assets[decision.asset] = _AssetState()
        clock_ms = decision.ts_ms if state.clock_ms is None else max(state.clock_ms, decision.ts_ms)
        state.clock_ms = clock_ms
        severity = self._severity(decision)
        if state.episode is not None:
            return self._step_open(state, state.episode, decision, severity, clock_ms, now_ms)

        cfg = self.config
        if severity:
            window = _Window(
                decision.ts_ms, severity, decision.score, decision.threshold, self._top(decision)
            )
        else:
            window = _Window(decision.ts_ms)
        state.recent.append(window)
        if len(state.recent) > cfg.n:
            del state.recent[: len(state.recent) - cfg.n]
        if state.phase == "cooling" and clock_ms >= state.cooldown_until_ms:
            state.phase = "idle"
        if state.phase != "idle" or not severity:
            return []
        anomalous = [w for w in state.recent if w.severity]
        if len(anomalous) < cfg.k:
            return []

        peak = max(anomalous, key=lambda w: w.score)
        started_at_ms = min(w.ts_ms for w in anomalous)
        episode = _Episode(
            alert_id=alert_id_for(decision.asset, decision.model_name, started_at_ms),
            started_at_ms=started_at_ms,
            severity=max(w.severity for w in anomalous),
            peak_score=peak.score,
            peak_threshold=peak.threshold,
            peak_top=list(peak.top),
            last_anomalous_ms=decision.ts_ms,
            normal_streak=0,
            reported_peak=peak.score,
            last_update_ms=clock_ms,
        )
        reason = f"{len(anomalous)} of the last {len(state.recent)} windows over threshold"
        state.phase = "open"
        state.episode = episode
        state.recent = []  # the next episode's history starts after this one resolves
        return [self._event("opened", decision, episode, now_ms, reason)]

    def step_many(self, decisions: Iterable[Decision], *, now_ms: int) -> list[AlertEvent]:
        """Step every decision in order (a scored batch); events come out in the same order."""
        events: list[AlertEvent] = []
        for decision in decisions:
            events.extend(self.step(decision, now_ms=now_ms))
        return events

    def _step_open(
        self,
        state: _AssetState,
        episode: _Episode,
        decision: Decision,
        severity: int,
        clock_ms: int,
        now_ms: int,
    ) -> list[AlertEvent]:
        cfg = self.config
        if not severity:
            episode.normal_streak += 1
            if episode.normal_streak < cfg.m:
                return []
            reason = f"{episode.normal_streak} windows in a row under threshold"
            event = self._event("resolved", decision, episode, now_ms, reason)
            state.episode = None
            state.cooldown_until_ms = clock_ms + cfg.cooldown_ms
            state.phase = "cooling" if cfg.cooldown_ms > 0 else "idle"
            return [event]

        episode.normal_streak = 0
        episode.last_anomalous_ms = max(episode.last_anomalous_ms, decision.ts_ms)
        escalated = severity > episode.severity
        if escalated:
            episode.severity = severity
        if decision.score > episode.peak_score:
            episode.peak_score = decision.score
            episode.peak_threshold = decision.threshold
            episode.peak_top = self._top(decision)
        reported = episode.reported_peak
        rose = episode.peak_score > reported and (
            episode.peak_score >= reported + cfg.update_min_rise * abs(reported)
        )
        due = clock_ms - episode.last_update_ms >= cfg.update_every_ms
        if not (escalated or (rose and due)):
            return []
        if escalated:
            reason = f"severity rose to {SEVERITY_NAMES[severity]}"
        else:
            rise = (episode.peak_score - reported) / abs(reported) if reported else math.inf
            reason = f"peak score rose {rise:.0%} to {episode.peak_score:.4g}"
        episode.reported_peak = episode.peak_score
        episode.last_update_ms = clock_ms
        return [self._event("updated", decision, episode, now_ms, reason)]

    def _severity(self, decision: Decision) -> int:
        if not decision.anomalous:
            return 0
        if decision.severity:
            return decision.severity
        ratio = _ratio(decision.score, decision.threshold)
        return 2 if ratio is not None and ratio >= self.config.critical_ratio else 1

    def _top(self, decision: Decision) -> list[tuple[str, float]]:
        ranked = sorted(
            ((name, float(c)) for name, c in decision.contributions.items() if math.isfinite(c)),
            key=lambda item: (-item[1], item[0]),
        )
        return ranked[: self.config.top_signals]

    def _event(
        self, kind: EventKind, decision: Decision, episode: _Episode, now_ms: int, reason: str
    ) -> AlertEvent:
        if kind == "resolved":
            score, threshold, top = episode.peak_score, episode.peak_threshold, episode.peak_top
            ended_at: str | None = format_ts(episode.last_anomalous_ms)
        else:
            score, threshold, top = decision.score, decision.threshold, self._top(decision)
            ended_at = None
        return AlertEvent(
            alert_id=episode.alert_id,
            event=kind,
            asset=decision.asset,
            severity=SEVERITY_NAMES[episode.severity],
            started_at=format_ts(episode.started_at_ms),
            ended_at=ended_at,
            detected_at=format_ts(now_ms),
            score=score,
            threshold=threshold,
            top_signals=[TopSignal(name, c) for name, c in top],
            model=ModelRef(decision.model_name, decision.model_version),
            peak_score=episode.peak_score,
            ratio=_ratio(score, threshold),
            reason=reason,
            window_at=format_ts(decision.ts_ms),
        )

    # -- inspection -----------------------------------------------------------------------

    def open_alerts(self) -> int:
        """How many assets have an open alert (for the ``plantwatch_alerts_open`` gauge)."""
        return sum(1 for state in self._assets.values() if state.episode is not None)

    def phase(self, asset: str) -> Phase:
        """``idle``, ``open`` or ``cooling`` (after a resolve, within the cooldown)."""
        state = self._assets.get(asset)
        return state.phase if state is not None else "idle"

    def assets(self) -> list[str]:
        """Assets this policy holds state for, sorted."""
        return sorted(self._assets)

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """All per-asset state as plain JSON-able data: ``{"version": 1, "assets": {...}}``."""
        return {
            "version": SNAPSHOT_VERSION,
            "assets": {a: msgspec.to_builtins(s) for a, s in sorted(self._assets.items())},
        }

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        """One asset's state in the same versioned shape (for per-asset changelog records)."""
        state = self._assets.get(asset)
        if state is None:
            return None
        return {"version": SNAPSHOT_VERSION, "assets": {asset: msgspec.to_builtins(state)}}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Add (or replace) the assets in ``snapshot``; stepping then continues exactly.

        Raises ``ValueError`` naming the problem when the snapshot is of an unknown version or
        damaged. The k-of-n history is trimmed to this policy's ``n`` if the configuration
        changed between snapshot and restore.
        """
        version = snapshot.get("version")
        if version != SNAPSHOT_VERSION:
            raise ValueError(
                f"alert policy snapshot has version {version!r}; this plantwatch reads version "
                f"{SNAPSHOT_VERSION}. Restore it with the plantwatch that wrote it, or discard it "
                "(open alerts are then re-detected and re-opened)."
            )
        try:
            restored = msgspec.convert(snapshot.get("assets"), dict[str, _AssetState])
        except msgspec.ValidationError as exc:
            raise ValueError(f"alert policy snapshot is damaged: {exc}") from exc
        for asset, state in restored.items():
            if (state.phase == "open") != (state.episode is not None):
                raise ValueError(
                    f"alert policy snapshot is damaged: asset {asset!r} is {state.phase!r} "
                    f"but {'has' if state.episode is not None else 'lacks'} an open episode"
                )
            if len(state.recent) > self.config.n:
                del state.recent[: len(state.recent) - self.config.n]
        self._assets.update(restored)

    def forget(self, assets: Iterable[str]) -> None:
        """Drop state for assets this process no longer owns (partitions revoked).

        No event is emitted: the process that now owns the asset restores its state and
        continues any open alert.
        """
        for asset in assets:
            self._assets.pop(asset, None)


def _ratio(score: float, threshold: float) -> float | None:
    if not threshold > 0:
        return None
    ratio = score / threshold
    return ratio if math.isfinite(ratio) else None

"""One track's state machine, one decision at a time: idle → open → cooling → idle.

Every function here takes the settings of the decision's kind (``AlertPolicy.config_for``)
and changes only the machine it is given; :mod:`alerts.policy` explains the rules.
"""

from __future__ import annotations

import itertools
import math
import statistics

from alerts.events import SEVERITY_NAMES, AlertEvent, AlertKind, EventKind, ModelRef, TopSignal
from alerts.policy.config import AlertConfig
from alerts.policy.decision import Decision
from alerts.policy.ids import alert_id_for
from alerts.policy.state import _advance_clock, _Episode, _Machine, _Window
from common.timestamps import format_ts


def _advance(
    machine: _Machine, decision: Decision, cfg: AlertConfig, now_ms: int
) -> list[AlertEvent]:
    """Step ``machine`` with one decision; returns the events it causes (usually none)."""
    clock_ms = _advance_clock(machine, decision.ts_ms)
    severity = _severity(decision, cfg)
    if machine.episode is not None:
        return _step_open(machine, machine.episode, decision, severity, cfg, clock_ms, now_ms)

    if severity:
        window = _Window(
            decision.ts_ms, severity, decision.score, decision.threshold, _top(decision, cfg)
        )
    else:
        window = _Window(decision.ts_ms)
    machine.recent.append(window)
    keep = cfg.history
    if len(machine.recent) > keep:
        del machine.recent[: len(machine.recent) - keep]
    if machine.phase == "cooling" and clock_ms >= machine.cooldown_until_ms:
        machine.phase = "idle"
    if machine.phase != "idle" or not severity:
        return []
    span = cfg.n
    anomalous = [w for w in machine.recent[-span:] if w.severity]
    if len(anomalous) < cfg.k:
        return []
    if cfg.strong_ratio > 1 and decision.kind == "anomaly":
        strong = any(w.score >= cfg.strong_ratio * w.threshold for w in anomalous)
        if not strong:
            need, span = cfg.weak_need(_spacing_ms(machine.recent[-cfg.weak_n :]))
            anomalous = [w for w in machine.recent[-span:] if w.severity]
            if len(anomalous) < need:
                return []

    peak = max(anomalous, key=lambda w: w.score)
    started_at_ms = min(w.ts_ms for w in anomalous)
    episode = _Episode(
        alert_id=alert_id_for(
            decision.asset,
            decision.model_name,
            started_at_ms,
            kind=decision.kind,
            rule=decision.rule,
            signal=decision.signal,
        ),
        started_at_ms=started_at_ms,
        severity=max(w.severity for w in anomalous),
        peak_score=peak.score,
        peak_threshold=peak.threshold,
        peak_top=list(peak.top),
        last_anomalous_ms=decision.ts_ms,
        normal_streak=0,
        reported_peak=peak.score,
        last_update_ms=clock_ms,
        model_name=decision.model_name,
        model_version=decision.model_version,
    )
    if decision.kind == "anomaly":
        shown = min(len(machine.recent), span)
        reason = f"{len(anomalous)} of the last {shown} windows over threshold"
    else:
        # Only what the flagged decisions say: the count of normal ones before a track
        # existed is not kept (step_sensor drops quiet tracks).
        reason = (
            f"{_subject(decision)} at {decision.score:.4g}, over its limit {decision.threshold:.4g}"
        )
        if decision.why:
            reason = f"{_subject(decision)}: {decision.why}"
        if len(anomalous) > 1:
            reason += f" ({len(anomalous)} flagged {_unit(decision.kind)})"
    machine.phase = "open"
    machine.episode = episode
    machine.recent = []  # the next episode's history starts after this one resolves
    return [_event("opened", decision, episode, now_ms, reason, cfg)]


def _spacing_ms(windows: list[_Window]) -> float:
    """The median reading time between consecutive windows of ``windows`` (0 with fewer
    than two): what one window of persistence is worth, robust to the odd gap."""
    if len(windows) < 2:
        return 0.0
    return float(statistics.median(b.ts_ms - a.ts_ms for a, b in itertools.pairwise(windows)))


def _step_open(
    machine: _Machine,
    episode: _Episode,
    decision: Decision,
    severity: int,
    cfg: AlertConfig,
    clock_ms: int,
    now_ms: int,
) -> list[AlertEvent]:
    prefix = "" if decision.kind == "anomaly" else f"{_subject(decision)} "
    if not severity:
        episode.normal_streak += 1
        if episode.normal_streak < cfg.m:
            return []
        if decision.kind == "anomaly":
            reason = f"{episode.normal_streak} windows in a row under threshold"
        else:
            reason = (
                f"{prefix}back to normal for {episode.normal_streak} "
                f"{_unit(decision.kind)} in a row"
            )
        return [_close(machine, episode, decision, cfg, clock_ms, now_ms, reason)]

    episode.normal_streak = 0
    episode.last_anomalous_ms = max(episode.last_anomalous_ms, decision.ts_ms)
    escalated = severity > episode.severity
    if escalated:
        episode.severity = severity
    if decision.score > episode.peak_score:
        episode.peak_score = decision.score
        episode.peak_threshold = decision.threshold
        episode.peak_top = _top(decision, cfg)
    reported = episode.reported_peak
    rose = episode.peak_score > reported and (
        episode.peak_score >= reported + cfg.update_min_rise * abs(reported)
    )
    due = clock_ms - episode.last_update_ms >= cfg.update_every_ms
    if not (escalated or (rose and due)):
        return []
    if escalated:
        reason = f"{prefix}severity rose to {SEVERITY_NAMES[severity]}"
    else:
        rise = (episode.peak_score - reported) / abs(reported) if reported else math.inf
        reason = f"{prefix}peak score rose {rise:.0%} to {episode.peak_score:.4g}"
    episode.reported_peak = episode.peak_score
    episode.last_update_ms = clock_ms
    return [_event("updated", decision, episode, now_ms, reason, cfg)]


def _close(
    machine: _Machine,
    episode: _Episode,
    decision: Decision,
    cfg: AlertConfig,
    clock_ms: int,
    now_ms: int,
    reason: str,
) -> AlertEvent:
    """Resolve the open episode at reading time ``clock_ms``: the cooldown starts there."""
    event = _event("resolved", decision, episode, now_ms, reason, cfg)
    machine.episode = None
    machine.cooldown_until_ms = clock_ms + cfg.cooldown_ms
    machine.phase = "cooling" if cfg.cooldown_ms > 0 else "idle"
    return event


def _resolve_now(
    machine: _Machine, decision: Decision, cfg: AlertConfig, now_ms: int, reason: str
) -> list[AlertEvent]:
    """End the machine's open episode at ``decision.ts_ms``, as its ``m``-th normal decision
    would have, and clear its k-of-n history; nothing (``[]``) when none is open."""
    episode = machine.episode
    if episode is None:
        return []
    clock_ms = _advance_clock(machine, decision.ts_ms)
    machine.recent = []
    return [_close(machine, episode, decision, cfg, clock_ms, now_ms, reason)]


def _severity(decision: Decision, cfg: AlertConfig) -> int:
    if not decision.anomalous:
        return 0
    if decision.severity:
        return decision.severity
    ratio = _ratio(decision.score, decision.threshold)
    return 2 if ratio is not None and ratio >= cfg.critical_ratio else 1


def _top(decision: Decision, cfg: AlertConfig) -> list[tuple[str, float]]:
    if decision.kind == "sensor" and decision.signal is not None:
        return [(decision.signal, 1.0)]  # the rule is about this one signal
    ranked = sorted(
        ((name, float(c)) for name, c in decision.contributions.items() if math.isfinite(c)),
        key=lambda item: (-item[1], item[0]),
    )
    return ranked[: cfg.top_signals]


def _event(
    kind: EventKind,
    decision: Decision,
    episode: _Episode,
    now_ms: int,
    reason: str,
    cfg: AlertConfig,
) -> AlertEvent:
    if kind == "resolved":
        score, threshold, top = episode.peak_score, episode.peak_threshold, episode.peak_top
        ended_at: str | None = format_ts(episode.last_anomalous_ms)
    else:
        score, threshold, top = decision.score, decision.threshold, _top(decision, cfg)
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
        kind=decision.kind,
        acknowledged_by=episode.acknowledged_by,
        acknowledged_at=_maybe_ts(episode.acknowledged_at_ms),
        shelved_until=_maybe_ts(episode.shelved_until_ms),
        shelved_by=episode.shelved_by,
    )


def _maybe_ts(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else format_ts(ts_ms)


def _subject(decision: Decision) -> str:
    """What a non-anomaly event's reason starts with: the rule, then the signal."""
    rule = decision.rule or decision.kind
    return rule if decision.signal is None else f"{rule}: {decision.signal}"


def _unit(kind: AlertKind) -> str:
    return {"sensor": "readings", "quality": "predictions"}.get(kind, "windows")


def _ratio(score: float, threshold: float) -> float | None:
    if not threshold > 0:
        return None
    ratio = score / threshold
    return ratio if math.isfinite(ratio) else None

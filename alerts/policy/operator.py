"""What an operator does to an open alert: acknowledge it, shelve it, return it to service.

ISA-18.2's words, and the rules this module keeps:

* **Acknowledged** (``ack``): the episode remembers who and when; one ``updated`` event says
  so, and every later event of the alert carries ``acknowledged_by``/``acknowledged_at``. A
  second ack of the same alert changes nothing and sends nothing (``duplicate``).
* **Shelved** (``shelve``) until a time, at most ``max_shelve_ms`` after the command (the
  bound, and the length of a shelving that names no end): one ``updated`` event carries
  ``shelved_until``; from then on the ``updated`` events the alert's *condition* causes
  (escalation, a rising peak) are withheld and counted. Nothing is lost silently: the
  ``resolved`` event is always sent (a consumer must not be left with an alert open for
  ever) and says in ``shelved_until`` that it was shelved (null, its reason saying when
  the shelving ended, when that was before it in reading time: one batch can hold both);
  events an operator causes (ack, shelve, unshelve) are always sent; and when the
  shelving ends — its time passed on the asset's reading clock, or ``unshelve`` — while
  the alert is still open, it is announced again (an ``updated`` event with
  ``shelved_until`` null, saying how many updates were withheld), with the first
  withheld-worthy event past the end if the batch has one, else from the episode's peak.
* An ack or shelve naming an alert that is not open for the asset is ``unknown_alert``: the
  caller sends the command to the dead-letter topic.

Shelving ends on reading time, like every timing of the policy, so a replay ends it at the
same window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal

import msgspec

from alerts.events import AlertEvent, AlertKind
from alerts.policy.config import AlertConfig
from alerts.policy.decision import ANOMALY, Decision, TrackKey
from alerts.policy.machine import _event
from alerts.policy.state import _AssetState, _Episode, _Machine
from common.timestamps import format_ts, format_ts_ms

#: How a command went: ``applied`` (something changed), ``duplicate`` (it had been done
#: already: nothing sent), ``unknown_alert`` (no such open alert of the asset).
OperatorResult = Literal["applied", "duplicate", "unknown_alert"]


def open_machines(state: _AssetState) -> Iterator[tuple[TrackKey, _Machine, _Episode]]:
    if state.episode is not None:
        yield ANOMALY, state, state.episode
    for track in state.tracks:
        if track.episode is not None:
            yield track.key, track, track.episode


def _find(
    assets: Mapping[str, _AssetState], asset: str, alert_id: str
) -> tuple[TrackKey, _Machine, _Episode] | None:
    state = assets.get(asset)
    if state is None:
        return None
    return next((m for m in open_machines(state) if m[2].alert_id == alert_id), None)


def _operator_event(
    asset: str,
    key: TrackKey,
    machine: _Machine,
    episode: _Episode,
    cfg: AlertConfig,
    model: tuple[str, str],
    now_ms: int,
    reason: str,
) -> AlertEvent:
    """An ``updated`` event caused by an operator, not by a window: it describes the
    episode's peak, at the asset's latest reading time."""
    kind, rule, signal = key
    name = episode.model_name if episode.model_name is not None else model[0]
    version = episode.model_version if episode.model_version is not None else model[1]
    decision = Decision(
        asset=asset,
        ts_ms=machine.clock_ms if machine.clock_ms is not None else episode.last_anomalous_ms,
        score=episode.peak_score,
        threshold=episode.peak_threshold,
        anomalous=True,
        severity=episode.severity,
        contributions=dict(episode.peak_top),
        model_name=name,
        model_version=version,
        kind=kind,
        rule=rule,
        signal=signal,
    )
    return _event("updated", decision, episode, now_ms, reason, cfg)


def _words(by: str, note: str) -> str:
    return (f" by {by}" if by else "") + (f": {note}" if note else "")


def acknowledge(
    assets: Mapping[str, _AssetState],
    asset: str,
    alert_id: str,
    *,
    by: str,
    at_ms: int,
    note: str,
    cfg: AlertConfig,
    model: tuple[str, str],
    now_ms: int,
) -> tuple[OperatorResult, list[AlertEvent]]:
    found = _find(assets, asset, alert_id)
    if found is None:
        return "unknown_alert", []
    key, machine, episode = found
    if episode.acknowledged_at_ms is not None:
        return "duplicate", []
    episode.acknowledged_by = by or None
    episode.acknowledged_at_ms = at_ms
    reason = "acknowledged" + _words(by, note)
    return "applied", [_operator_event(asset, key, machine, episode, cfg, model, now_ms, reason)]


def shelve(
    assets: Mapping[str, _AssetState],
    asset: str,
    alert_id: str,
    *,
    by: str,
    at_ms: int,
    until_ms: int | None,
    note: str,
    cfg: AlertConfig,
    model: tuple[str, str],
    now_ms: int,
) -> tuple[OperatorResult, list[AlertEvent]]:
    found = _find(assets, asset, alert_id)
    if found is None:
        return "unknown_alert", []
    key, machine, episode = found
    longest = at_ms + cfg.max_shelve_ms
    until = longest if until_ms is None else min(until_ms, longest)
    if episode.shelved_until_ms == until:
        return "duplicate", []
    if episode.shelved_until_ms is None:
        episode.withheld = 0
    episode.shelved_until_ms = until
    episode.shelved_by = by or None
    reason = f"shelved until {format_ts(until)}" + _words(by, note)
    if until_ms is not None and until < until_ms:
        reason += f" (bounded by alert.max_shelve_ms = {cfg.max_shelve_ms})"
    return "applied", [_operator_event(asset, key, machine, episode, cfg, model, now_ms, reason)]


def unshelve(
    assets: Mapping[str, _AssetState],
    asset: str,
    alert_id: str,
    *,
    by: str,
    note: str,
    cfg: AlertConfig,
    model: tuple[str, str],
    now_ms: int,
) -> tuple[OperatorResult, list[AlertEvent]]:
    found = _find(assets, asset, alert_id)
    if found is None:
        return "unknown_alert", []
    key, machine, episode = found
    if episode.shelved_until_ms is None:
        return "duplicate", []
    reason = f"unshelved{_words(by, note)}; still open{_withheld(episode)}"
    _clear(episode)
    return "applied", [_operator_event(asset, key, machine, episode, cfg, model, now_ms, reason)]


def screen(
    assets: Mapping[str, _AssetState], shelved: set[str], events: Iterable[AlertEvent]
) -> tuple[list[AlertEvent], int]:
    """The events to publish, and how many were withheld: the ``updated`` events of a
    shelved alert up to the end of its shelving. The first past the end ends it, and goes
    out as the alert's announcement (``shelved_until`` null)."""
    kept: list[AlertEvent] = []
    withheld = 0
    for event in events:
        if (
            event.event != "updated"
            and event.shelved_until is not None
            and format_ts_ms(event.window_at) >= format_ts_ms(event.shelved_until)
        ):
            # Its shelving ended earlier in the same batch (a resolve, say, after the end
            # of the shelving and before the batch's end expires it): no longer shelved.
            kept.append(
                msgspec.structs.replace(
                    event,
                    shelved_until=None,
                    shelved_by=None,
                    reason=f"shelving ended at {event.shelved_until}; {event.reason}",
                )
            )
            continue
        if event.event != "updated" or event.asset not in shelved:
            kept.append(event)
            continue
        found = _find(assets, event.asset, event.alert_id)
        episode = None if found is None else found[2]
        if episode is None or episode.shelved_until_ms is None:
            kept.append(event)
            continue
        at = format_ts_ms(event.window_at)
        if at < episode.shelved_until_ms:
            episode.withheld += 1
            withheld += 1
            continue
        reason = f"shelving ended at {format_ts(episode.shelved_until_ms)}{_withheld(episode)}"
        _clear(episode)
        kept.append(
            msgspec.structs.replace(
                event, shelved_until=None, shelved_by=None, reason=f"{reason}; {event.reason}"
            )
        )
    return kept, withheld


def expire(
    assets: Mapping[str, _AssetState],
    shelved: set[str],
    *,
    config_for: Callable[[AlertKind], AlertConfig],
    model: tuple[str, str],
    now_ms: int,
) -> list[AlertEvent]:
    """End every shelving whose time the asset's reading clock has reached; each alert so
    returned to service is announced again. ``shelved`` is updated to the assets that still
    have a shelved alert."""
    events: list[AlertEvent] = []
    for asset in sorted(shelved):
        state = assets.get(asset)
        still = False
        for key, machine, episode in [] if state is None else list(open_machines(state)):
            until = episode.shelved_until_ms
            if until is None:
                continue
            if machine.clock_ms is None or machine.clock_ms < until:
                still = True
                continue
            reason = f"shelving ended at {format_ts(until)}; still open{_withheld(episode)}"
            _clear(episode)
            cfg = config_for(key[0])
            events.append(_operator_event(asset, key, machine, episode, cfg, model, now_ms, reason))
        if not still:
            shelved.discard(asset)
    return events


def shelved_assets(assets: Mapping[str, _AssetState]) -> set[str]:
    """The assets with a shelved open alert (rebuilt after a restore)."""
    return {
        asset
        for asset, state in assets.items()
        if any(e.shelved_until_ms is not None for _, _, e in open_machines(state))
    }


def counts(assets: Mapping[str, _AssetState]) -> tuple[int, int]:
    """(acknowledged, shelved) open alerts, of every kind."""
    acked = shelved = 0
    for state in assets.values():
        for _, _, episode in open_machines(state):
            acked += episode.acknowledged_at_ms is not None
            shelved += episode.shelved_until_ms is not None
    return acked, shelved


def _clear(episode: _Episode) -> None:
    episode.shelved_until_ms = None
    episode.shelved_by = None
    episode.withheld = 0


def _withheld(episode: _Episode) -> str:
    n = episode.withheld
    return f" ({n} update{'s' if n != 1 else ''} withheld while shelved)" if n else ""

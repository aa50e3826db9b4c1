"""Columnar stepping: a track's decisions as arrays, with runs of normal ones taken in bulk.

The result is exactly :func:`~alerts.policy.machine._advance` per element; only where no
event can come out (normal decisions on a quiet machine, or on an open alert short of the
``m`` that resolve it) are decisions applied as a few array operations instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.events import AlertEvent
from alerts.policy.config import AlertConfig
from alerts.policy.decision import Decision, TrackKey
from alerts.policy.machine import _advance
from alerts.policy.state import _advance_clock, _Machine, _Window


def _step_columns(
    asset: str,
    machine: _Machine,
    key: TrackKey,
    cfg: AlertConfig,
    ts: npt.NDArray[np.int64],
    anomalous: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float64],
    thresholds: npt.NDArray[np.float64],
    severity: npt.NDArray[np.int64],
    model_name: str,
    model_version: str,
    now_ms: int,
) -> list[tuple[int, AlertEvent]]:
    """Exactly :func:`_advance` per element, with runs of normal decisions in bulk; each
    event comes with the reading time of the decision that caused it."""
    kind, rule, signal = key
    contributions = {signal: 1.0} if signal is not None else {}
    n = ts.shape[0]
    flagged = np.flatnonzero(anomalous)
    events: list[tuple[int, AlertEvent]] = []
    i = 0
    while i < n:
        pos = int(np.searchsorted(flagged, i))
        nxt = int(flagged[pos]) if pos < flagged.size else n  # next anomalous decision
        episode = machine.episode
        if episode is None and _dormant_history(machine):
            # Normal decisions on a quiet machine only move its clock, fill its history
            # and end a cooldown; none can open.
            if nxt > i:
                _absorb_normal(machine, ts[i:nxt], cfg.history)
                i = nxt
                continue
        elif episode is not None and nxt > i:
            # Normal decisions on an open alert count toward the m that resolve it.
            need = cfg.m - episode.normal_streak
            bulk = min(nxt - i, need - 1)
            if bulk > 0:
                episode.normal_streak += bulk
                _advance_clock(machine, int(ts[i : i + bulk].max()))
                i += bulk
                continue
        decision = Decision(
            asset=asset,
            ts_ms=int(ts[i]),
            score=float(scores[i]),
            threshold=float(thresholds[i]),
            anomalous=bool(anomalous[i]),
            severity=int(severity[i]),
            contributions=contributions,
            model_name=model_name,
            model_version=model_version,
            kind=kind,
            rule=rule,
            signal=signal,
        )
        events.extend((decision.ts_ms, ev) for ev in _advance(machine, decision, cfg, now_ms))
        i += 1
    return events


def _dormant_history(machine: _Machine) -> bool:
    return not any(w.severity for w in machine.recent)


def _absorb_normal(machine: _Machine, ts: npt.NDArray[np.int64], n: int) -> None:
    """What a run of normal decisions does to a machine without an episode, in bulk.

    Per decision the clock becomes the max seen, the history gains a normal window (kept to
    the last ``n``) and a cooldown ends once the clock reaches it; since the clock only
    rises, the result after the run is the same as after its last decision.
    """
    clock_ms = _advance_clock(machine, int(ts.max()))
    machine.recent.extend(_Window(int(t)) for t in ts[-n:])
    if len(machine.recent) > n:
        del machine.recent[: len(machine.recent) - n]
    if machine.phase == "cooling" and clock_ms >= machine.cooldown_until_ms:
        machine.phase = "idle"


def _columns(
    ts_ms: npt.ArrayLike,
    anomalous: npt.ArrayLike,
    scores: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    severity: npt.ArrayLike | None,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.bool_],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
]:
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.ndim != 1:
        raise ValueError(f"ts_ms must be one reading time per decision, got shape {ts.shape}")
    n = ts.shape[0]
    flags = np.asarray(anomalous, dtype=np.bool_)
    values = np.asarray(scores, dtype=np.float64)
    limits = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n,))
    levels = np.zeros(n, np.int64) if severity is None else np.asarray(severity, dtype=np.int64)
    for name, column in (("anomalous", flags), ("scores", values), ("severity", levels)):
        if column.shape != (n,):
            raise ValueError(f"{name} has shape {column.shape}, expected ({n},) like ts_ms")
    return ts, flags, values, limits, levels


def _as_cells(
    values: npt.ArrayLike, shape: tuple[int, int], name: str, dtype: type[np.generic]
) -> npt.NDArray[Any]:
    array = np.asarray(values, dtype=dtype)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape} (readings, signals)")
    return array

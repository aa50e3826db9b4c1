"""One asset's carry state (:class:`~models.health.SensorHealth`) as plain, versioned JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgspec
import numpy as np

from models.health.kernels import F64, I64, Bools, _floats, _or_none

SNAPSHOT_VERSION: Final = 1


class _HealthSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    signals: list[str]
    last: list[float | None]
    run: list[int]
    run_start_ms: list[int | None]
    out_run: list[int]
    tail: list[list[float | None]]
    # Added after version 1 shipped (the step rule); a snapshot without them starts it fresh.
    step_away: list[float] | None = None
    step_run: list[bool] | None = None
    step_flag: list[bool] | None = None


class _Carry(NamedTuple):
    """What one batch leaves for the next, per signal (``tail``: the last readings, rows)."""

    last: F64
    run: I64
    run_start: F64
    out_run: I64
    tail: F64
    step_away: F64
    step_run: Bools
    step_flag: Bools


def _encode_carry(signals: tuple[str, ...], carry: _Carry) -> dict[str, Any]:
    state = _HealthSnapshot(
        version=SNAPSHOT_VERSION,
        signals=list(signals),
        last=[_or_none(v) for v in carry.last],
        run=[int(v) for v in carry.run],
        run_start_ms=[None if not np.isfinite(v) else int(v) for v in carry.run_start],
        out_run=[int(v) for v in carry.out_run],
        tail=[[_or_none(v) for v in row] for row in carry.tail],
        step_away=[float(v) for v in carry.step_away],
        step_run=[bool(v) for v in carry.step_run],
        step_flag=[bool(v) for v in carry.step_flag],
    )
    return msgspec.to_builtins(state)  # type: ignore[no-any-return]


def _decode_carry(snapshot: Mapping[str, Any], signals: tuple[str, ...]) -> _Carry:
    """The carry in ``snapshot``, checked against ``signals``; ``ValueError`` naming what
    is wrong (another version, other signals, damaged)."""
    if snapshot.get("version") != SNAPSHOT_VERSION:
        raise ValueError(
            f"sensor-health snapshot has version {snapshot.get('version')!r}; this "
            f"plantwatch reads version {SNAPSHOT_VERSION} (discard it: the rules restart)"
        )
    try:
        state = msgspec.convert(dict(snapshot), _HealthSnapshot)
    except msgspec.ValidationError as exc:
        raise ValueError(f"sensor-health snapshot is damaged: {exc}") from exc
    if tuple(state.signals) != signals:
        raise ValueError(
            f"sensor-health snapshot is for signals {state.signals}, this profile has "
            f"{list(signals)}"
        )
    width = len(signals)
    step_away = state.step_away if state.step_away is not None else [0.0] * width
    step_run = state.step_run if state.step_run is not None else [False] * width
    step_flag = state.step_flag if state.step_flag is not None else [False] * width
    columns: tuple[list[Any], ...] = (state.last, state.run, state.run_start_ms, state.out_run)
    columns += (step_away, step_run, step_flag)
    if any(len(c) != width for c in columns) or any(len(r) != width for r in state.tail):
        raise ValueError(f"sensor-health snapshot is damaged: not {width} signals wide")
    tail = np.array(
        [[np.nan if v is None else v for v in row] for row in state.tail], np.float64
    ).reshape(-1, width)
    return _Carry(
        _floats(state.last),
        np.array(state.run, np.int64),
        _floats(state.run_start_ms),
        np.array(state.out_run, np.int64),
        tail,
        np.array(step_away, np.float64),
        np.array(step_run, np.bool_),
        np.array(step_flag, np.bool_),
    )

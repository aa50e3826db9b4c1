"""The policy's state as plain, versioned JSON-able data, and back (with every check)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from alerts.events import AlertKind
from alerts.policy.decision import TrackKey, _check_track
from alerts.policy.state import _AssetState, _Machine

SNAPSHOT_VERSION = 1


def _snapshot(assets: Mapping[str, _AssetState]) -> dict[str, Any]:
    return {
        "version": SNAPSHOT_VERSION,
        "assets": {a: msgspec.to_builtins(s) for a, s in sorted(assets.items())},
    }


def _snapshot_asset(asset: str, state: _AssetState) -> dict[str, Any]:
    return {"version": SNAPSHOT_VERSION, "assets": {asset: msgspec.to_builtins(state)}}


def _parse_snapshot(
    snapshot: Mapping[str, Any], history_for: Callable[[AlertKind], int]
) -> dict[str, _AssetState]:
    """The assets of ``snapshot``, checked; each machine's k-of-n history trimmed to
    ``history_for(kind)`` windows (the ``n`` of the restoring policy)."""
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
        machines: list[tuple[str, _Machine, AlertKind]] = [(repr(asset), state, "anomaly")]
        seen: set[TrackKey] = set()
        for track in state.tracks:
            where = f"{asset!r} ({track.kind} {track.rule} {track.signal})"
            try:
                if track.kind == "anomaly":
                    raise ValueError("an anomaly alert is the asset's own state, not a track")
                _check_track(track.kind, track.rule, track.signal)
            except ValueError as exc:
                raise ValueError(f"alert policy snapshot is damaged: {where}: {exc}") from exc
            if track.key in seen:
                raise ValueError(f"alert policy snapshot is damaged: {where} appears twice")
            seen.add(track.key)
            machines.append((where, track, track.kind))
        for where, machine, kind in machines:
            if (machine.phase == "open") != (machine.episode is not None):
                raise ValueError(
                    f"alert policy snapshot is damaged: asset {where} is {machine.phase!r} "
                    f"but {'has' if machine.episode is not None else 'lacks'} an open episode"
                )
            n = history_for(kind)
            if len(machine.recent) > n:
                del machine.recent[: len(machine.recent) - n]
    return restored

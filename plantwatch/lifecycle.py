"""When an asset is not alerted on: out of service for maintenance, stopped, starting up.

ISA-18.2 calls these *out of service* (maintenance: an operator took the asset out) and
*suppressed by design* (the operating state says the alarms mean nothing now: a stopped pump
has no flow). The rules, the same in ``plantwatch run`` and ``plantwatch backtest``:

* **Maintenance windows** per asset, configured (``[maintenance] windows``, ``asset = "*"``
  for every asset) or sent as ``maintenance_start``/``maintenance_end`` commands. A window
  holds from ``start`` up to (not including) ``end``; a commanded one without ``until``
  holds until ``maintenance_end``.
* **Operating mode** (``[operating_mode]``, off while ``signal`` is empty): the asset runs
  while its mode signal is above ``running_above``, and is stopped otherwise; after it
  starts, it is *starting up* for ``startup_grace_ms`` of reading time. A reading without
  the signal keeps the mode of the one before. An asset first seen running is running (it
  did not just start); first seen stopped, it is stopped.
* A suppressed reading (maintenance over stopped over start-up) is **not processed at all**:
  not windowed, not scored, not judged, no sensor-health rule, nothing learned (threshold,
  drift monitor, re-baselining, online learning and quality predictions never see it). It
  is counted (``plantwatch_readings_suppressed_total{reason}``), never dropped silently.
* **Entering** suppression resolves every open alert of the asset, with ``reason`` the
  suppression's (``maintenance``, ``stopped``, ``startup``) and clears its k-of-n history:
  the alert was about the asset before it was taken out, the operators know why it ends,
  and an alert kept open through hours of blindness would end on windows it never judged.
  **Leaving** it restarts the asset's window, so that no window joins readings from before
  and after; everything else (threshold, drift, baseline, alert cooldown) continues from
  the state before.
* Notices on ``plantwatch.notices``: ``maintenance_started``/``maintenance_ended`` when the
  asset's readings cross into or out of a window, ``operating_mode`` when its mode changes
  (``stopped``, ``startup``, ``running``), each at the reading time of the change.

Readings are judged in time order per asset on the lifecycle's own clock (the newest
reading seen): a command takes effect from the asset's next reading at or after its
``at``; readings already processed are never revisited, and a late reading changes no
state.

>>> from datetime import UTC, datetime
>>> cfg = MaintenanceConfig(windows=[MaintenanceWindow(
...     asset="pump-1", start=datetime(2026, 11, 28, 21, tzinfo=UTC),
...     end=datetime(2026, 11, 28, 22, tzinfo=UTC))])
>>> life = Lifecycle(cfg, OperatingModeConfig())
>>> t0 = 1795899600000  # 21:00
>>> out = life.screen([SensorReading("pump-1", t0 - 1000, {}), SensorReading("pump-1", t0, {})])
>>> out.part.tolist(), [(n.notice, n.at) for n in out.notices], dict(out.suppressed)
([0, -1], [('maintenance_started', '2026-11-28T21:00:00.000Z')], {'maintenance': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from alerts.notices import Notice
from common.config import Config
from common.timestamps import format_ts
from stream.operator import OperatorCommand
from stream.schema import SensorReading

#: Why an asset is not alerted on (the ``reason`` label, and of the ``resolved`` events).
Suppression = Literal["maintenance", "stopped", "startup"]
SUPPRESSIONS: Final[tuple[Suppression, ...]] = ("maintenance", "stopped", "startup")
Phase = Literal["running", "startup", "stopped"]
#: Every asset (a configured window for the whole plant).
ALL_ASSETS: Final = "*"
SNAPSHOT_VERSION = 1


class MaintenanceWindow(Config, frozen=True, kw_only=True):
    """One configured window: ``asset`` (or ``"*"``) out of service from ``start`` to ``end``."""

    asset: str
    start: Annotated[datetime, msgspec.Meta(tz=True)]
    end: Annotated[datetime, msgspec.Meta(tz=True)]
    note: str = ""

    def __post_init__(self) -> None:
        if not self.asset.strip():
            raise ValueError('a maintenance window needs an asset (or "*" for every asset)')
        if self.end <= self.start:
            raise ValueError(
                f"maintenance window of {self.asset}: end {self.end.isoformat()} is not after "
                f"start {self.start.isoformat()}"
            )

    @property
    def start_ms(self) -> int:
        return round(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return round(self.end.timestamp() * 1000)


class MaintenanceConfig(Config, frozen=True, kw_only=True):
    """Planned maintenance windows (commands add more at run time)."""

    windows: list[MaintenanceWindow] = msgspec.field(default_factory=list)


class ModeOverride(Config, frozen=True, kw_only=True):
    """One asset's own operating-mode rule; what it leaves out comes from the section."""

    signal: str | None = None
    running_above: float | None = None
    startup_grace_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


class OperatingModeConfig(Config, frozen=True, kw_only=True):
    """Operating-mode suppression: off while ``signal`` is empty (and no asset names one)."""

    #: The reading's signal that says whether the asset runs (speed, current, a run flag).
    signal: str = ""
    #: Running while the signal is above this; stopped at or below it.
    running_above: float = 0.0
    #: After a start, the asset is starting up (not alerted on) this long, in reading time.
    startup_grace_ms: Annotated[int, msgspec.Meta(ge=0)] = 300_000
    #: Per asset, over the above: ``{pump-3 = {signal = "speed", running_above = 50.0}}``.
    assets: dict[str, ModeOverride] = msgspec.field(default_factory=dict)

    def rule(self, asset: str) -> tuple[str, float, int]:
        """(signal, running_above, startup_grace_ms) of ``asset``; signal ``""``: off."""
        over = self.assets.get(asset)
        if over is None:
            return self.signal, self.running_above, self.startup_grace_ms
        return (
            self.signal if over.signal is None else over.signal,
            self.running_above if over.running_above is None else over.running_above,
            self.startup_grace_ms if over.startup_grace_ms is None else over.startup_grace_ms,
        )

    @property
    def signals(self) -> list[str]:
        """Every mode signal named (readings may carry them beside the model's)."""
        named = [self.signal, *(o.signal or "" for o in self.assets.values())]
        return sorted({s for s in named if s})


class _Commanded(msgspec.Struct, omit_defaults=True):
    start_ms: int
    end_ms: int | None = None
    by: str = ""
    note: str = ""


class _AssetState(msgspec.Struct, omit_defaults=True):
    """One asset's lifecycle, plain and snapshotted with the asset."""

    #: Commanded maintenance windows not yet over.
    windows: list[_Commanded] = []
    #: From the mode signal: is it running (``None``: not seen yet)?
    running: bool | None = None
    #: When the current run began (``None``: running since before it was first seen).
    running_since_ms: int | None = None
    phase: Phase | None = None
    in_maintenance: bool = False
    suppressed: Suppression | None = None
    #: The newest reading time judged: the lifecycle's clock.
    clock_ms: int | None = None


@dataclass(frozen=True)
class Transition:
    """The asset's suppression changed at ``ts_ms`` (``None``: alerted on)."""

    ts_ms: int
    old: Suppression | None
    new: Suppression | None


@dataclass
class Screened:
    """What judging one batch's readings gave."""

    #: Per reading: ``-1`` suppressed, else how many of its asset's transitions precede it
    #: (the monitor processes the batch in those parts, applying the transitions between).
    part: npt.NDArray[np.int64]
    transitions: dict[str, list[Transition]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    suppressed: Counter[str] = field(default_factory=Counter)
    #: Assets whose lifecycle state changed (to snapshot).
    touched: set[str] = field(default_factory=set)


class Lifecycle:
    """Every asset's maintenance windows and operating mode; pure (no clock, no I/O)."""

    def __init__(self, maintenance: MaintenanceConfig, mode: OperatingModeConfig) -> None:
        self.maintenance = maintenance
        self.mode = mode
        self._configured: dict[str, list[tuple[int, int, str]]] = {}
        for w in maintenance.windows:
            self._configured.setdefault(w.asset, []).append((w.start_ms, w.end_ms, w.note))
        self._mode_on = bool(mode.signals)
        self._states: dict[str, _AssetState] = {}

    @property
    def active(self) -> bool:
        """Whether any reading could be suppressed (else the monitor skips :meth:`screen`)."""
        return (
            self._mode_on
            or bool(self._configured)
            or any(s.windows or s.suppressed for s in self._states.values())
        )

    # -- commands -------------------------------------------------------------------------

    def command(self, cmd: OperatorCommand) -> Literal["applied", "duplicate"]:
        """Apply ``maintenance_start`` or ``maintenance_end``. Idempotent: a replayed
        command (at-least-once delivery) finds its window already there."""
        state = self._states.setdefault(cmd.asset, _AssetState())
        if cmd.command == "maintenance_start":
            window = _Commanded(cmd.at_ms, cmd.until_ms, cmd.by, cmd.note)
            if any(
                w.start_ms == window.start_ms and w.end_ms == window.end_ms for w in state.windows
            ):
                return "duplicate"
            state.windows.append(window)
            return "applied"
        if cmd.command != "maintenance_end":
            raise ValueError(f"{cmd.command} is not a maintenance command")
        ended = False
        for w in state.windows:
            if w.start_ms <= cmd.at_ms and (w.end_ms is None or w.end_ms > cmd.at_ms):
                w.end_ms = cmd.at_ms
                ended = True
        return "applied" if ended else "duplicate"

    # -- readings -------------------------------------------------------------------------

    def screen(self, readings: Sequence[SensorReading]) -> Screened:
        """Judge each reading (per asset, in time order): kept or suppressed, and where the
        asset's suppression changes."""
        out = Screened(part=np.zeros(len(readings), np.int64))
        by_asset: dict[str, list[int]] = {}
        for i, r in enumerate(readings):
            by_asset.setdefault(r.asset, []).append(i)
        for asset, rows in by_asset.items():
            if not self._watches(asset):
                continue
            rows.sort(key=lambda i: readings[i].ts_ms)
            self._screen_asset(asset, [readings[i] for i in rows], rows, out)
        return out

    def _watches(self, asset: str) -> bool:
        return (
            self._mode_on
            or asset in self._configured
            or ALL_ASSETS in self._configured
            or asset in self._states
        )

    def _screen_asset(
        self, asset: str, readings: list[SensorReading], rows: list[int], out: Screened
    ) -> None:
        state = self._states.get(asset)
        fresh = state is None
        if state is None:
            state = _AssetState()
        signal, running_above, grace = self.mode.rule(asset)
        parts = 0
        changed = False
        for row, reading in zip(rows, readings, strict=True):
            ts = reading.ts_ms
            if state.clock_ms is not None and ts < state.clock_ms:
                # Late: judged by the state now, changes nothing.
                if state.suppressed is not None:
                    out.part[row] = -1
                    out.suppressed[state.suppressed] += 1
                else:
                    out.part[row] = parts
                continue
            state.clock_ms = ts
            phase = self._phase(state, reading, signal, running_above, grace)
            if phase != state.phase:
                if not (state.phase is None and phase == "running"):
                    out.notices.append(
                        Notice(
                            notice="operating_mode",
                            asset=asset,
                            at=format_ts(ts),
                            detail={
                                "mode": phase,
                                "previous": state.phase,
                                "signal": signal,
                                "value": reading.values.get(signal),
                                "running_above": running_above,
                                **({"startup_grace_ms": grace} if phase == "startup" else {}),
                            },
                        )
                    )
                state.phase = phase
                changed = True
            window = self._window_at(asset, state, ts)
            if (window is not None) != state.in_maintenance:
                state.in_maintenance = window is not None
                detail: dict[str, Any] = {}
                if window is not None:
                    start, end, by, note = window
                    detail = {
                        "start": format_ts(start),
                        "end": None if end is None else format_ts(end),
                    }
                    detail.update({k: v for k, v in (("by", by), ("note", note)) if v})
                out.notices.append(
                    Notice(
                        notice="maintenance_started" if window is not None else "maintenance_ended",
                        asset=asset,
                        at=format_ts(ts),
                        detail=detail,
                    )
                )
                changed = True
            reason: Suppression | None = "maintenance" if window is not None else None
            if reason is None and phase in ("stopped", "startup"):
                reason = phase
            if reason != state.suppressed:
                out.transitions.setdefault(asset, []).append(
                    Transition(ts, state.suppressed, reason)
                )
                state.suppressed = reason
                parts += 1
                changed = True
            if reason is None:
                out.part[row] = parts
            else:
                out.part[row] = -1
                out.suppressed[reason] += 1
        # Commanded windows over before the clock cannot apply to a later reading.
        if state.clock_ms is not None and state.windows:
            kept = [w for w in state.windows if w.end_ms is None or w.end_ms > state.clock_ms]
            changed |= len(kept) != len(state.windows)
            state.windows = kept
        if changed or not fresh:
            self._states[asset] = state
            out.touched.add(asset)

    def _phase(
        self,
        state: _AssetState,
        reading: SensorReading,
        signal: str,
        running_above: float,
        grace: int,
    ) -> Phase | None:
        if not signal:
            return None
        value = reading.values.get(signal)
        if value is not None:
            running = value > running_above
            if running and state.running is False:
                state.running_since_ms = reading.ts_ms
            elif not running:
                state.running_since_ms = None
            state.running = running
        if state.running is None:
            return None
        if not state.running:
            return "stopped"
        since = state.running_since_ms
        if since is not None and reading.ts_ms < since + grace:
            return "startup"
        return "running"

    def _window_at(
        self, asset: str, state: _AssetState, ts: int
    ) -> tuple[int, int | None, str, str] | None:
        for w in state.windows:
            if w.start_ms <= ts and (w.end_ms is None or ts < w.end_ms):
                return w.start_ms, w.end_ms, w.by, w.note
        for key in (asset, ALL_ASSETS):
            for start, end, note in self._configured.get(key, ()):
                if start <= ts < end:
                    return start, end, "", note
        return None

    # -- inspection and state -------------------------------------------------------------

    def suppression(self, asset: str) -> Suppression | None:
        state = self._states.get(asset)
        return None if state is None else state.suppressed

    def suppressed_counts(self) -> Counter[str]:
        """Assets suppressed now, by reason (for ``plantwatch_assets_suppressed``)."""
        return Counter(s.suppressed for s in self._states.values() if s.suppressed is not None)

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        state = self._states.get(asset)
        if state is None:
            return None
        return {"v": SNAPSHOT_VERSION, **msgspec.to_builtins(state)}

    def restore_asset(self, asset: str, snap: Mapping[str, Any]) -> None:
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError(
                f"lifecycle snapshot version {snap.get('v')} is not {SNAPSHOT_VERSION}"
            )
        body = {k: v for k, v in snap.items() if k != "v"}
        try:
            self._states[asset] = msgspec.convert(body, _AssetState)
        except msgspec.ValidationError as exc:
            raise ValueError(f"lifecycle snapshot of {asset!r} is damaged: {exc}") from exc

    def forget(self, assets: Iterable[str]) -> None:
        for asset in assets:
            self._states.pop(asset, None)

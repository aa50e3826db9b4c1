"""Planning the labelled events of a run up front, from the seed: faults and normal changes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from stream.simulator.chunks import FloatArray, IntArray
from stream.simulator.config import (
    CURRENT,
    ENDLESS_PLAN_HORIZON_S,
    FLOW,
    N_SIGNALS,
    PRESSURE,
    SIGNALS,
    TEMP,
    VIBRATION,
    SimConfig,
)
from stream.simulator.labels import FaultInterval
from stream.simulator.physics import REGIME_RANGE, TAU_TEMP_S, TYPICAL_STEP

if TYPE_CHECKING:
    from stream.simulator.generator import PlantSimulator


@dataclass(frozen=True)
class PlannedEvent:
    """A planned event with what the generator needs beyond its label."""

    label: FaultInterval
    asset_index: int
    signal_index: tuple[int, ...]
    size: float
    temp_rise_c: float = 0.0
    #: Cavitation bursts: starts, stops (exclusive), offsets in steps from the event start.
    burst_start: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    burst_stop: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    burst_gain: FloatArray = field(default_factory=lambda: np.zeros(0, np.float64))


def _horizon_steps(cfg: SimConfig) -> int:
    n = cfg.n_steps
    if n is not None:
        return n
    return math.ceil(ENDLESS_PLAN_HORIZON_S * 1000.0 / cfg.period_ms)


def _slots(
    n_events: int, eligible: Sequence[int], rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """(asset, slot, slots on that asset): events round-robin over shuffled assets."""
    order = [int(a) for a in rng.permutation(np.asarray(eligible, dtype=np.int64))]
    counts = Counter(order[j % len(order)] for j in range(n_events))
    return [
        (order[j % len(order)], j // len(order), counts[order[j % len(order)]])
        for j in range(n_events)
    ]


def _interval(sim: PlantSimulator, asset: int, start: int, stop: int) -> tuple[int, int]:
    return sim.ts_ms(asset, start), sim.ts_ms(asset, stop - 1)


def _plan_window(sim: PlantSimulator, what: str) -> tuple[int, int]:
    cfg = sim.config
    warm = math.ceil(cfg.warmup_s * 1000.0 / cfg.period_ms)
    horizon = _horizon_steps(cfg)
    if warm >= horizon:
        length = (
            f"the {cfg.duration_s:g} s run"
            if cfg.duration_s is not None
            else f"the first {ENDLESS_PLAN_HORIZON_S:g} s of an endless run"
        )
        raise ValueError(
            f"{what} cannot be placed: the {cfg.warmup_s:g} s warm-up covers {length}; "
            "lengthen --duration or shorten --warmup-s"
        )
    return warm, horizon


def plan_faults(sim: PlantSimulator, rng: np.random.Generator) -> list[PlannedEvent]:
    cfg = sim.config
    if cfg.faults == 0:
        return []
    warm, horizon = _plan_window(sim, f"{cfg.faults} faults")
    span = horizon - warm
    eligible = list(range(cfg.n_assets - cfg.control_assets))
    kinds = [cfg.fault_kinds[j % len(cfg.fault_kinds)] for j in range(cfg.faults)]
    rng.shuffle(kinds)
    lo_steps = max(1, round(cfg.fault_duration_s[0] * 1000.0 / cfg.period_ms))
    hi_steps = max(lo_steps, round(cfg.fault_duration_s[1] * 1000.0 / cfg.period_ms))
    m = cfg.fault_magnitude
    events: list[PlannedEvent] = []
    for (asset, k, n_slots), kind in zip(_slots(cfg.faults, eligible, rng), kinds, strict=True):
        slot_lo = warm + span * k // n_slots
        slot_len = warm + span * (k + 1) // n_slots - slot_lo
        room = slot_len - max(2, slot_len // 20)  # a gap keeps faults on an asset apart
        if kind == "spike":
            n = min(int(rng.integers(1, 4)), max(room, 1))
        else:
            if lo_steps > room:
                raise ValueError(
                    f"{cfg.faults} faults of at least {cfg.fault_duration_s[0]:g} s on "
                    f"{len(eligible)} assets do not fit in the {span * cfg.period_s:g} s after "
                    "the warm-up; lengthen --duration, lower --faults, add assets, or shorten "
                    "--fault-duration-s"
                )
            n = int(rng.integers(lo_steps, min(hi_steps, room) + 1))
        start = slot_lo + int(rng.integers(0, max(room - n, 0) + 1))
        severity = float(rng.uniform(0.8, 1.2)) * m
        sig: tuple[int, ...] = ()
        size = 0.0
        temp_rise = 0.0
        bursts: tuple[IntArray, IntArray, FloatArray] | None = None
        if kind == "bearing_wear":
            sig, size, temp_rise = (VIBRATION, TEMP), 2.0 * severity, 2.4 * 2.0 * severity
        elif kind == "cavitation":
            sig, size = (PRESSURE, FLOW, CURRENT, VIBRATION), min(0.3 * severity, 0.8)
            bursts = _bursts(n, sim.config.period_s, rng)
        elif kind == "stuck_sensor":
            sig = (int(rng.integers(N_SIGNALS)),)
        elif kind in ("spike", "level_shift"):
            j = int(rng.integers(N_SIGNALS))
            sign = 1.0 if j == VIBRATION else float(rng.choice([-1.0, 1.0]))
            steps_size = 15.0 if kind == "spike" else 10.0
            sig, size = (j,), sign * steps_size * severity * float(TYPICAL_STEP[j])
        elif kind == "noise_increase":
            count = int(rng.integers(1, 4))
            sig = tuple(sorted(int(x) for x in rng.choice(N_SIGNALS, count, replace=False)))
            size = 1.0 + 4.0 * severity
        start_ms, end_ms = _interval(sim, asset, start, start + n)
        label = FaultInterval(
            asset=sim.assets[asset],
            kind=kind,
            signals=tuple(SIGNALS[j] for j in sorted(sig)),
            start_step=start,
            stop_step=start + n,
            start_ms=start_ms,
            end_ms=end_ms,
            magnitude=size,
            is_fault=True,
        )
        if bursts is None:
            events.append(PlannedEvent(label, asset, sig, size, temp_rise))
        else:
            events.append(PlannedEvent(label, asset, sig, size, temp_rise, *bursts))
    return events


def _bursts(
    n: int, period_s: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray, FloatArray]:
    """Cavitation on/off pattern over ``n`` steps: starts and ends with a burst."""
    starts: list[int] = []
    stops: list[int] = []
    offset, on = 0, True
    while offset < n:
        seconds = rng.uniform(2.0, 8.0) if on else rng.uniform(3.0, 15.0)
        length = max(1, round(seconds / period_s))
        if on:
            starts.append(offset)
            stops.append(min(offset + length, n))
        offset += length
        on = not on
    if stops[-1] < n:  # the pattern ended in a pause: the last stretch is a burst too
        starts.append(stops[-1])
        stops.append(n)
    gains = rng.uniform(0.7, 1.3, len(starts))
    return np.array(starts, np.int64), np.array(stops, np.int64), gains


def plan_normal(sim: PlantSimulator, rng: np.random.Generator) -> list[PlannedEvent]:
    cfg = sim.config
    events: list[PlannedEvent] = []
    if cfg.regime_changes == 0 and cfg.sensor_drifts == 0:
        return events
    what = f"{cfg.regime_changes} regime changes and {cfg.sensor_drifts} sensor drifts"
    warm, horizon = _plan_window(sim, what)
    span = horizon - warm
    everyone = list(range(cfg.n_assets))
    settle = math.ceil(3.0 * TAU_TEMP_S * 1000.0 / cfg.period_ms)
    level = sim.params.base_load.copy()
    for asset, k, n_slots in _slots(cfg.regime_changes, everyone, rng):
        slot_lo = warm + span * k // n_slots
        slot_hi = warm + span * (k + 1) // n_slots
        start = slot_lo + int(rng.integers(0, max(1, (slot_hi - slot_lo) // 2)))
        stop = max(start + 1, min(start + settle, slot_hi))
        size = float(rng.uniform(0.06, 0.12)) * float(rng.choice([-1.0, 1.0]))
        if not REGIME_RANGE[0] <= level[asset] + size <= REGIME_RANGE[1]:
            size = -size
        level[asset] += size
        start_ms, end_ms = _interval(sim, asset, start, stop)
        label = FaultInterval(
            sim.assets[asset], "regime_change", SIGNALS, start, stop, start_ms, end_ms, size, False
        )
        events.append(PlannedEvent(label, asset, tuple(range(N_SIGNALS)), size))
    for asset, k, n_slots in _slots(cfg.sensor_drifts, everyone, rng):
        slot_lo = warm + span * k // n_slots
        slot_len = warm + span * (k + 1) // n_slots - slot_lo
        n = max(1, round(float(rng.uniform(0.3, 0.8)) * slot_len))
        start = slot_lo + int(rng.integers(0, slot_len - n + 1))
        j = int(rng.integers(N_SIGNALS))
        sign = 1.0 if j == VIBRATION else float(rng.choice([-1.0, 1.0]))
        size = sign * 8.0 * float(rng.uniform(0.8, 1.2)) * float(TYPICAL_STEP[j])
        start_ms, end_ms = _interval(sim, asset, start, start + n)
        label = FaultInterval(
            sim.assets[asset],
            "sensor_drift",
            (SIGNALS[j],),
            start,
            start + n,
            start_ms,
            end_ms,
            size,
            False,
        )
        events.append(PlannedEvent(label, asset, (j,), size))
    return events

"""The :class:`PlantSimulator`: plans a run's events, then generates it block by block."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream.simulator.chunks import BoolArray, Chunk, FloatArray, IntArray, concat, cut
from stream.simulator.config import (
    DAY_MS,
    FAULT_KINDS,
    N_SIGNALS,
    NORMAL_KINDS,
    PRESSURE,
    VIBRATION,
    SimConfig,
    asset_names,
)
from stream.simulator.labels import FaultInterval
from stream.simulator.physics import (
    AMBIENT_C,
    AMBIENT_SWING_C,
    DECIMALS,
    LOAD_NOISE_STD,
    LOAD_RANGE,
    NOISE_AR,
    NOISE_WHITE,
    SETPOINT_STD,
    SETPOINT_STEP_SIZE,
    SETPOINT_STEPS_PER_S,
    TAU_LOAD_NOISE_S,
    TAU_SENSOR_NOISE_S,
    TAU_SETPOINT_S,
    TAU_SPEED_S,
    TAU_TEMP_S,
    VIB_WINDOW_S,
    draw_params,
    vibration_mean_square,
)
from stream.simulator.planning import plan_faults, plan_normal
from stream.simulator.recurrence import Recurrence

# Columns of the per-block standard normal draw.
_Z_LOAD, _Z_SETPOINT, _Z_AR, _Z_WHITE, _Z_CAV_VIB, _Z_CAV_P = 0, 1, 2, 7, 12, 13
_NZ = 14


def _block_steps(n_assets: int) -> int:
    """Steps per internal block: about 128k readings, a power of two between 16 and 512."""
    target = max(1, (1 << 17) // n_assets)
    return int(min(512, max(16, 1 << (target.bit_length() - 1))))


@dataclass
class _State:
    """Everything carried from one block to the next."""

    rng: np.random.Generator
    setpoint: FloatArray
    load_noise: FloatArray
    sensor_noise: FloatArray  # (assets, signals)
    theta: FloatArray
    speed: FloatArray | None = None
    temp: FloatArray | None = None
    last_row: FloatArray | None = None  # last emitted values (assets, signals)


@dataclass
class _Effects:
    cavitation: FloatArray
    wear: FloatArray
    wear_temp_c: FloatArray
    noise_factor: FloatArray
    offset: FloatArray
    regime: FloatArray
    drift: FloatArray
    fault: BoolArray
    fault_kind: npt.NDArray[np.int8]
    stuck: list[tuple[int, int, int, int, int]]  # asset, signal, lo, hi, start_step


class PlantSimulator:
    """Plans the labelled events of a :class:`SimConfig` and generates its readings.

    ``labels`` lists every planned event (faults and normal changes), ``faults`` only the
    faults. ``chunks`` restarts from the first step on every call, so a simulator can be
    replayed; each call keeps only one block of state in memory.

    >>> sim = PlantSimulator(SimConfig(n_assets=3, duration_s=30, seed=1))
    >>> [c.n_steps for c in sim.chunks(12)]
    [12, 12, 6]
    >>> sim.assets
    ('pump-01', 'pump-02', 'pump-03')
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.assets = asset_names(config.n_assets, config.asset_prefix)
        params_seq, faults_seq, normal_seq, noise_seq = np.random.SeedSequence(config.seed).spawn(4)
        if config.plant_seed is not None:
            params_seq = np.random.SeedSequence(config.plant_seed).spawn(4)[0]
        self.params = draw_params(config.n_assets, np.random.default_rng(params_seq))
        self._noise_seq = noise_seq
        #: Per-asset timestamp offsets: readings of one step spread evenly over the period.
        self.offsets_ms: IntArray = (
            np.arange(config.n_assets, dtype=np.int64) * config.period_ms
        ) // config.n_assets
        self.block_steps = _block_steps(config.n_assets)
        events = plan_faults(self, np.random.default_rng(faults_seq))
        events += plan_normal(self, np.random.default_rng(normal_seq))
        events.sort(key=lambda e: (e.label.start_step, e.asset_index, e.label.kind))
        self._events = events
        self.labels: tuple[FaultInterval, ...] = tuple(e.label for e in events)
        self.faults: tuple[FaultInterval, ...] = tuple(x for x in self.labels if x.is_fault)
        self._ev_start = np.array([e.label.start_step for e in events], dtype=np.int64)
        self._ev_stop = np.array([e.label.stop_step for e in events], dtype=np.int64)
        self._ev_persists = np.array([e.label.kind in NORMAL_KINDS for e in events], dtype=bool)
        dt = config.period_s
        b = self.block_steps
        self._lag_speed = Recurrence(dt, TAU_SPEED_S, b)
        self._lag_temp = Recurrence(dt, TAU_TEMP_S, b)
        self._ar_load = Recurrence(dt, TAU_LOAD_NOISE_S, b)
        self._ar_sensor = Recurrence(dt, TAU_SENSOR_NOISE_S, b)
        self._walk = Recurrence(dt, TAU_SETPOINT_S, b)

    @property
    def n_steps(self) -> int | None:
        return self.config.n_steps

    def ts_ms(self, asset_index: int, step: int) -> int:
        """Timestamp of one reading: start + step·period + the asset's offset."""
        cfg = self.config
        return cfg.start_ms + step * cfg.period_ms + int(self.offsets_ms[asset_index])

    def generate(self) -> Chunk:
        """The whole (finite) run as one chunk."""
        n = self.n_steps
        if n is None:
            raise ValueError("an endless run cannot be generated at once; iterate chunks()")
        return next(iter(self.chunks(n)))

    def chunks(self, steps_per_chunk: int = 1024) -> Iterator[Chunk]:
        """Chunks of ``steps_per_chunk`` steps (the last may be shorter), from step 0."""
        if steps_per_chunk < 1:
            raise ValueError(f"steps_per_chunk must be at least 1, got {steps_per_chunk}")
        blocks = self._blocks()
        remaining = self.n_steps
        current: Chunk | None = None
        pos = 0
        while remaining is None or remaining > 0:
            need = steps_per_chunk if remaining is None else min(steps_per_chunk, remaining)
            parts: list[Chunk] = []
            while need > 0:
                if current is None or pos == current.n_steps:
                    current = next(blocks)
                    pos = 0
                take = min(need, current.n_steps - pos)
                parts.append(cut(current, pos, pos + take))
                pos += take
                need -= take
            chunk = concat(parts)
            if remaining is not None:
                remaining -= chunk.n_steps
            yield chunk

    # -- generation ------------------------------------------------------------------

    def _blocks(self) -> Iterator[Chunk]:
        p = self.params
        state = _State(
            rng=np.random.default_rng(self._noise_seq),
            setpoint=p.setpoint0.copy(),
            load_noise=p.load_noise0.copy(),
            sensor_noise=p.sensor_noise0.copy(),
            theta=p.theta0.copy(),
        )
        b0 = 0
        while True:
            yield self._block(state, b0)
            b0 += self.block_steps

    def _block(self, st: _State, b0: int) -> Chunk:
        cfg, p = self.config, self.params
        n_b, n_a = self.block_steps, cfg.n_assets
        dt = cfg.period_s
        # The draws per block have a fixed shape and order, whatever the chunk size.
        z = st.rng.standard_normal((n_b, n_a, _NZ))
        u = st.rng.random((n_b, n_a, 2))
        steps = b0 + np.arange(n_b, dtype=np.int64)
        step_ts = cfg.start_ms + steps * cfg.period_ms
        ts = step_ts[:, None] + self.offsets_ms[None, :]
        day_angle = 2.0 * math.pi * ((ts % DAY_MS) / DAY_MS - 0.375)  # peaks at 15:00 UTC
        eff = self._effects(b0, steps)

        # Load: daily cycle + slow set-point walk with occasional steps + process noise.
        rho = self._walk.a
        jump_p = min(1.0, dt * SETPOINT_STEPS_PER_S)
        lo_j, hi_j = SETPOINT_STEP_SIZE
        jump_mag = lo_j + (hi_j - lo_j) * np.abs(2.0 * u[..., 1] - 1.0)
        jumps = np.where(u[..., 0] < jump_p, np.sign(u[..., 1] - 0.5) * jump_mag, 0.0)
        walk_in = SETPOINT_STD * math.sqrt(1.0 - rho**2) * z[..., _Z_SETPOINT] + jumps
        setpoint = self._walk.run(walk_in, st.setpoint)
        st.setpoint = setpoint[-1].copy()
        a_ln = self._ar_load.a
        load_noise = self._ar_load.run(
            LOAD_NOISE_STD * math.sqrt(1.0 - a_ln**2) * z[..., _Z_LOAD], st.load_noise
        )
        st.load_noise = load_noise[-1].copy()
        command = np.clip(
            p.base_load
            + p.daily_amp * np.sin(day_angle + p.daily_phase)
            + setpoint
            + load_noise
            + eff.regime,
            *LOAD_RANGE,
        )
        if st.speed is None:
            st.speed = command[0].copy()
        a_s = self._lag_speed.a
        speed = self._lag_speed.run((1.0 - a_s) * command, st.speed)
        st.speed = speed[-1].copy()

        # Hydraulics: the pump curve meets the system curve.
        head = p.p0 * speed**2 - p.p_static
        flow = np.sqrt(np.maximum(head, 0.0) / (p.kq + p.r))
        pressure = np.where(head > 0, p.p_static + p.r * flow**2, p.p0 * speed**2)
        cav = eff.cavitation
        flow_f = flow * (1.0 - 0.6 * cav)
        pressure_f = np.maximum(
            pressure * (1.0 - cav) + 0.15 * cav * pressure * z[..., _Z_CAV_P], 0.0
        )

        # Motor: current from shaft power; temperature lags the undisturbed load.
        shaft_kw_clean = pressure * flow / 600.0 / p.eta
        shaft_kw = pressure_f * flow_f / 600.0 / p.eta
        current_clean = p.i_mag + p.amp_per_kw * shaft_kw_clean
        current = p.i_mag + p.amp_per_kw * shaft_kw
        ambient = AMBIENT_C + p.ambient_offset_c + AMBIENT_SWING_C * np.sin(day_angle)
        target = ambient + p.dt_idle_c + p.dt_load_c * (current_clean / p.i_nominal) ** 2
        if st.temp is None:
            st.temp = target[0].copy()
        a_t = self._lag_temp.a
        temp = self._lag_temp.run((1.0 - a_t) * target, st.temp)
        st.temp = temp[-1].copy()
        temp = temp + eff.wear_temp_c

        # Vibration: 1x and 2x running-speed harmonics plus broadband, as window RMS.
        omega = 2.0 * math.pi * p.f_rot_hz * speed
        theta = st.theta[None, :] + np.cumsum(omega * dt, axis=0)
        st.theta = np.mod(theta[-1], 2.0 * math.pi)
        torque = shaft_kw / (speed * p.shaft_kw_nominal)
        a1 = p.v1 * speed**2
        a2 = p.v2 * (0.3 + 0.7 * torque)
        ms = vibration_mean_square(a1, a2, theta, p.phase2, omega * VIB_WINDOW_S)
        ms = ms + (p.vbb * speed) ** 2
        ms = ms * (1.0 + eff.wear) ** 2
        ms = ms * (1.0 + (5.0 * cav * (1.0 + 0.5 * np.abs(z[..., _Z_CAV_VIB]))) ** 2)
        vibration = np.sqrt(ms)

        # Sensors: calibration drift, white + coloured noise, sensor faults, resolution.
        true = np.stack([temp, pressure_f, flow_f, current, vibration], axis=-1)
        a_n = self._ar_sensor.a
        ar = self._ar_sensor.run(
            math.sqrt(1.0 - a_n**2) * z[..., _Z_AR : _Z_AR + N_SIGNALS].reshape(n_b, -1),
            st.sensor_noise.reshape(-1),
        ).reshape(n_b, n_a, N_SIGNALS)
        st.sensor_noise = ar[-1].copy()
        noise = eff.noise_factor * (
            NOISE_AR * ar + NOISE_WHITE * z[..., _Z_WHITE : _Z_WHITE + N_SIGNALS]
        )
        values = true + eff.drift
        values[..., :VIBRATION] += noise[..., :VIBRATION]
        values[..., VIBRATION] *= np.exp(noise[..., VIBRATION])
        values += eff.offset
        values[..., PRESSURE:] = np.maximum(values[..., PRESSURE:], 0.0)
        for j, decimals in enumerate(DECIMALS):
            values[..., j] = np.round(values[..., j], decimals)
        for a, j, lo, hi, start in eff.stuck:
            if start == 0:
                frozen = values[0, a, j]
            elif start - 1 >= b0:
                frozen = values[start - 1 - b0, a, j]
            elif st.last_row is not None:
                frozen = st.last_row[a, j]
            else:  # pragma: no cover - a stuck fault before step 0 cannot be planned
                raise RuntimeError("stuck sensor without a previous reading")
            values[lo:hi, a, j] = frozen
        st.last_row = values[-1].copy()
        return Chunk(
            start_step=b0,
            assets=self.assets,
            step_ts_ms=step_ts,
            ts_ms=ts,
            values=values,
            fault=eff.fault,
            fault_kind=eff.fault_kind,
            load=speed,
        )

    def _effects(self, b0: int, steps: IntArray) -> _Effects:
        n_b, n_a = steps.shape[0], self.config.n_assets
        b1 = b0 + n_b
        eff = _Effects(
            cavitation=np.zeros((n_b, n_a)),
            wear=np.zeros((n_b, n_a)),
            wear_temp_c=np.zeros((n_b, n_a)),
            noise_factor=np.ones((n_b, n_a, N_SIGNALS)),
            offset=np.zeros((n_b, n_a, N_SIGNALS)),
            regime=np.zeros((n_b, n_a)),
            drift=np.zeros((n_b, n_a, N_SIGNALS)),
            fault=np.zeros((n_b, n_a), dtype=bool),
            fault_kind=np.full((n_b, n_a), -1, dtype=np.int8),
            stuck=[],
        )
        active = (self._ev_start < b1) & ((self._ev_stop > b0) | self._ev_persists)
        for i in np.flatnonzero(active):
            ev = self._events[int(i)]
            lab, a = ev.label, ev.asset_index
            lo, hi = max(lab.start_step, b0) - b0, min(lab.stop_step, b1) - b0
            n_ev = lab.stop_step - lab.start_step
            if lab.kind == "regime_change":
                eff.regime[lo:, a] += ev.size
                continue
            if lab.kind == "sensor_drift":
                frac = np.clip((steps[lo:] - lab.start_step + 1) / n_ev, 0.0, 1.0)
                eff.drift[lo:, a, ev.signal_index[0]] += ev.size * frac
                continue
            eff.fault[lo:hi, a] = True
            eff.fault_kind[lo:hi, a] = FAULT_KINDS.index(lab.kind)
            k = steps[lo:hi] - lab.start_step
            if lab.kind == "bearing_wear":
                progress = (k + 1) / n_ev
                eff.wear[lo:hi, a] = ev.size * progress**1.5
                eff.wear_temp_c[lo:hi, a] = ev.temp_rise_c * progress
            elif lab.kind == "cavitation":
                idx = np.searchsorted(ev.burst_start, k, side="right") - 1
                on = (idx >= 0) & (k < ev.burst_stop[np.maximum(idx, 0)])
                gain = ev.burst_gain[np.maximum(idx, 0)]
                eff.cavitation[lo:hi, a] = np.where(on, np.minimum(ev.size * gain, 0.8), 0.0)
            elif lab.kind == "stuck_sensor":
                eff.stuck.append((a, ev.signal_index[0], lo, hi, lab.start_step))
            elif lab.kind in ("spike", "level_shift"):
                eff.offset[lo:hi, a, ev.signal_index[0]] += ev.size
            elif lab.kind == "noise_increase":
                for j in ev.signal_index:
                    eff.noise_factor[lo:hi, a, j] = ev.size
        return eff

"""The plant simulator: centrifugal pumps driven by induction motors, with labelled faults.

Each asset is one pump set. Its hidden state moves through a small physical model and five
sensors read it, every ``period_ms``:

* **load**: the commanded pump speed (fraction of nominal) follows a daily cycle, a slow
  mean-reverting random walk of the set-point with occasional small steps, and coloured
  process noise; the real speed follows the command through a first-order lag (4 s).
* ``flow`` (l/min) and ``pressure`` (bar): where the pump curve (affinity laws,
  ``p = p0·s² − kq·Q²``) meets the system curve (``p = p_static + r·Q²``).
* ``current`` (A): magnetising current plus a part proportional to shaft power
  (``p·Q / η``), so it tracks torque and load.
* ``temp`` (°C, motor housing): first-order lag (900 s) towards ambient (daily cycle) plus
  idle losses plus copper losses ``∝ I²``; it lags load by minutes.
* ``vibration_rms`` (g): running-speed harmonics 1x (imbalance, ``∝ s²``) and 2x
  (misalignment, grows with torque) plus broadband, reduced to the RMS of a 0.25 s
  acquisition window in closed form, so the rotor phase (carried across readings) makes it
  flicker a little the way a real transmitter does.

Every sensor adds white noise plus coloured (AR(1), 5 s) noise and rounds to its
resolution. Nominal set-points, curves and gains differ a little per asset (seeded).
Time constants are seconds of simulated time, whatever ``period_ms`` is.

Generation is vectorised per block of steps across all assets: first-order recurrences
(lags, AR noise, the set-point walk) are solved for a whole block with one matrix product,
and every piece of state (lag outputs, noise states, rotor phase, last emitted values) is
carried from block to block, so an endless run streams in bounded memory. Blocks have a
size fixed by the configuration, and chunks of any size are cut from them, so chunked
generation gives exactly the numbers of one-shot generation.

Injected events (planned up front from the seed; ``magnitude`` in the labels is):

================ ============================================ ===============================
kind             effect                                        magnitude
================ ============================================ ===============================
bearing_wear     vibration grows to ``1 + m`` times, ∝ t^1.5;   ``m`` (vibration factor − 1)
                 temperature rises by up to ``2.4·m`` °C
cavitation       bursts (2–8 s on, 3–15 s off): pressure drops  pressure drop fraction
                 by the fraction, flow by 0.6 of it, vibration
                 spikes, pressure flutters
stuck_sensor     one signal repeats its last value              0
spike            1–3 samples offset by ±15 typical steps        offset (signal units)
level_shift      a sudden offset of ±10 typical steps           offset (signal units)
noise_increase   sensor noise of 1–3 signals times the factor   noise factor
regime_change    the load set-point steps and stays (normal)    step (fraction of speed)
sensor_drift     one signal's calibration drifts linearly over  total drift (signal units)
                 a long time and stays (normal)
================ ============================================ ===============================

Label intervals give the first and last affected reading, both inclusive. A regime change's
interval is its settling time (three temperature time constants, cut at the next event);
a sensor drift's is its ramp. Both are ``is_fault=false``: the plant is healthy.

Cavitation bursts are too short to move a temperature with a 900 s time constant, so the
thermal model runs on the undisturbed load: outside fault intervals, a run with faults
gives exactly the numbers of the same run without them.

>>> sim = PlantSimulator(SimConfig(n_assets=2, duration_s=900, faults=2, seed=3))
>>> whole = sim.generate()
>>> whole.values.shape  # (steps, assets, signals), time-major
(900, 2, 5)
>>> int(whole.fault.sum()) == sum(f.stop_step - f.start_step for f in sim.faults)
True
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import numpy.typing as npt

from stream.schema import encode_reading, format_ts, parse_ts

if TYPE_CHECKING:
    from stream.config import Settings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SIGNALS: tuple[str, ...] = ("temp", "pressure", "flow", "current", "vibration_rms")
FAULT_KINDS: tuple[str, ...] = (
    "bearing_wear",
    "cavitation",
    "stuck_sensor",
    "spike",
    "level_shift",
    "noise_increase",
)
NORMAL_KINDS: tuple[str, ...] = ("regime_change", "sensor_drift")
LABEL_COLUMNS: tuple[str, ...] = (
    "asset",
    "kind",
    "signal",
    "start_ts",
    "end_ts",
    "start_ms",
    "end_ms",
    "magnitude",
    "is_fault",
)
FILE_COLUMNS: tuple[str, ...] = ("timestamp", "asset", *SIGNALS, "fault", "fault_kind")
LABEL_SCHEMA = "plantwatch.label/v1"

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: reproducible by default
#: Without a finite duration, injected events are spread over this first stretch of time.
ENDLESS_PLAN_HORIZON_S = 3600.0
DAY_MS = 86_400_000

_T, _P, _Q, _I, _V = range(5)
_N_SIGNALS = len(SIGNALS)
_DECIMALS = (2, 3, 1, 2, 4)  # sensor resolution per signal
#: Sensor noise per signal (vibration: relative, applied in log space).
_NOISE_WHITE = np.array([0.08, 0.012, 2.0, 0.06, 0.03])
_NOISE_AR = np.array([0.10, 0.015, 2.5, 0.08, 0.04])
#: Typical short-term variation of each signal (sensor plus process noise); sensor faults
#: are sized in these steps so that magnitude 1.0 is clearly detectable on every signal.
_TYPICAL_STEP = np.array([0.25, 0.04, 6.0, 0.2, 0.015])

_TAU_SPEED_S = 4.0
_TAU_TEMP_S = 900.0
_TAU_LOAD_NOISE_S = 20.0
_TAU_SENSOR_NOISE_S = 5.0
_TAU_SETPOINT_S = 6 * 3600.0
_LOAD_NOISE_STD = 0.008
_SETPOINT_STD = 0.03
_SETPOINT_STEPS_PER_S = 1.0 / 7200.0
_SETPOINT_STEP_SIZE = (0.01, 0.04)
_LOAD_RANGE = (0.45, 1.05)
_REGIME_RANGE = (0.55, 0.95)
_VIB_WINDOW_S = 0.25
_AMBIENT_C = 22.0
_AMBIENT_SWING_C = 5.0

# Columns of the per-block standard normal draw.
_Z_LOAD, _Z_SETPOINT, _Z_AR, _Z_WHITE, _Z_CAV_VIB, _Z_CAV_P = 0, 1, 2, 7, 12, 13
_NZ = 14
_SUB = 16  # steps per sub-block of the recurrence solver


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines a simulated run; equal configs give equal data.

    ``duration_s=None`` is an endless run. ``fault_magnitude=1.0`` is clearly detectable.
    The last ``control_assets`` assets get no faults (they still see normal regime changes
    and drifts), for measuring false alarms.

    >>> SimConfig(n_assets=3, period_ms=500, duration_s=60).n_steps
    120
    """

    n_assets: int = 4
    period_ms: int = 1000
    start_ms: int = DEFAULT_START_MS
    duration_s: float | None = 3600.0
    seed: int = 0
    faults: int = 0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_duration_s: tuple[float, float] = (30.0, 300.0)
    fault_magnitude: float = 1.0
    warmup_s: float = 60.0
    control_assets: int = 0
    regime_changes: int = 0
    sensor_drifts: int = 0
    asset_prefix: str = "pump-"
    #: Seed of the plant itself (set-points, curves, gains per asset); ``None``: ``seed``.
    #: Keep it fixed and vary ``seed`` to get new days of the same plant (history to train
    #: on, then a live run with other noise and faults).
    plant_seed: int | None = None

    def __post_init__(self) -> None:
        if self.n_assets < 1:
            raise ValueError(f"need at least one asset, got {self.n_assets}")
        if self.period_ms < 1:
            raise ValueError(f"period_ms must be at least 1 ms, got {self.period_ms}")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise ValueError(
                f"duration_s must be a positive number of seconds or None for an endless run, "
                f"got {self.duration_s}"
            )
        for name in ("faults", "regime_changes", "sensor_drifts", "control_assets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        unknown = [k for k in self.fault_kinds if k not in FAULT_KINDS]
        if unknown or not self.fault_kinds:
            raise ValueError(
                f"fault kinds must be a non-empty selection of {', '.join(FAULT_KINDS)}; "
                f"got {', '.join(self.fault_kinds) or 'none'}"
            )
        lo, hi = self.fault_duration_s
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"fault duration range must be 0 < MIN <= MAX seconds, got {lo}:{hi}")
        if not (math.isfinite(self.fault_magnitude) and self.fault_magnitude > 0):
            raise ValueError(f"fault magnitude must be positive, got {self.fault_magnitude}")
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise ValueError(f"warm-up must be zero or more seconds, got {self.warmup_s}")
        if self.control_assets > self.n_assets:
            raise ValueError(
                f"{self.control_assets} control assets is more than the {self.n_assets} assets"
            )
        if self.faults > 0 and self.control_assets >= self.n_assets:
            raise ValueError(
                f"{self.faults} faults were asked for, but all {self.n_assets} assets are "
                "control assets; lower --control-assets or use --faults 0"
            )
        if not self.asset_prefix or any(c in self.asset_prefix for c in ',"\n\r'):
            raise ValueError(
                f"asset prefix must be non-empty text without commas, quotes or newlines, "
                f"got {self.asset_prefix!r}"
            )

    @property
    def n_steps(self) -> int | None:
        """Readings per asset, or ``None`` for an endless run."""
        if self.duration_s is None:
            return None
        return max(1, math.ceil(self.duration_s * 1000.0 / self.period_ms))

    @property
    def period_s(self) -> float:
        return self.period_ms / 1000.0


def asset_names(n_assets: int, prefix: str = "pump-") -> tuple[str, ...]:
    """``pump-01``, ``pump-02``, …, zero-padded so they sort in order."""
    width = max(2, len(str(n_assets)))
    return tuple(f"{prefix}{i + 1:0{width}d}" for i in range(n_assets))


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class FaultInterval:
    """One labelled event on one asset: a fault, or a normal change (``is_fault=False``).

    ``start_step``/``stop_step`` index the asset's readings (stop exclusive); ``start_ms``
    and ``end_ms`` are the timestamps of the first and last affected reading (inclusive).
    """

    asset: str
    kind: str
    signals: tuple[str, ...]
    start_step: int
    stop_step: int
    start_ms: int
    end_ms: int
    magnitude: float
    is_fault: bool

    @property
    def signal(self) -> str:
        """The one signal touched, or ``""`` when the event touches several."""
        return self.signals[0] if len(self.signals) == 1 else ""

    def label_row(self) -> dict[str, str]:
        """The row of the labels CSV (columns :data:`LABEL_COLUMNS`)."""
        return {
            "asset": self.asset,
            "kind": self.kind,
            "signal": self.signal,
            "start_ts": format_ts(self.start_ms),
            "end_ts": format_ts(self.end_ms),
            "start_ms": str(self.start_ms),
            "end_ms": str(self.end_ms),
            "magnitude": f"{self.magnitude:.6g}",
            "is_fault": "true" if self.is_fault else "false",
        }

    def to_json(self) -> bytes:
        """The labels-topic message: the CSV row's fields plus the list of signals."""
        row: dict[str, Any] = {"schema": LABEL_SCHEMA, **self.label_row()}
        row["start_ms"] = self.start_ms
        row["end_ms"] = self.end_ms
        row["magnitude"] = round(self.magnitude, 6)
        row["is_fault"] = self.is_fault
        row["signals"] = list(self.signals)
        return json.dumps(row, separators=(",", ":")).encode()


def write_labels(path: str | Path, labels: Sequence[FaultInterval]) -> None:
    """Write the ground-truth CSV (columns :data:`LABEL_COLUMNS`), in start order."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for label in labels:
            writer.writerow(label.label_row())


@dataclass(frozen=True)
class _Event:
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


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class Chunk:
    """Consecutive steps of all assets, time-major so ``reshape(-1, ...)`` is time order.

    ``values`` (steps, assets, signals) in :data:`SIGNALS` order; ``ts_ms`` (steps, assets)
    includes each asset's small offset; ``fault`` (steps, assets) is true inside a fault;
    ``fault_kind`` holds the index into :data:`FAULT_KINDS` (−1 outside faults); ``load`` is
    the hidden true pump speed as a fraction of nominal (ground truth, not a signal).
    """

    start_step: int
    assets: tuple[str, ...]
    step_ts_ms: IntArray
    ts_ms: IntArray
    values: FloatArray
    fault: BoolArray
    fault_kind: npt.NDArray[np.int8]
    load: FloatArray

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_readings(self) -> int:
        return int(self.values.shape[0] * self.values.shape[1])

    def asset_index(self) -> IntArray:
        """Asset index of each reading in time order (length ``n_readings``)."""
        return np.tile(np.arange(len(self.assets), dtype=np.int64), self.n_steps)

    def fault_kind_names(self) -> npt.NDArray[np.str_]:
        """Kind name of each reading in time order; ``""`` outside faults."""
        names = np.array(["", *FAULT_KINDS])
        return names[self.fault_kind.reshape(-1).astype(np.int64) + 1]


def _concat(parts: Sequence[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    return Chunk(
        start_step=parts[0].start_step,
        assets=parts[0].assets,
        step_ts_ms=np.concatenate([p.step_ts_ms for p in parts]),
        ts_ms=np.concatenate([p.ts_ms for p in parts]),
        values=np.concatenate([p.values for p in parts]),
        fault=np.concatenate([p.fault for p in parts]),
        fault_kind=np.concatenate([p.fault_kind for p in parts]),
        load=np.concatenate([p.load for p in parts]),
    )


def _cut(chunk: Chunk, lo: int, hi: int) -> Chunk:
    return Chunk(
        start_step=chunk.start_step + lo,
        assets=chunk.assets,
        step_ts_ms=chunk.step_ts_ms[lo:hi],
        ts_ms=chunk.ts_ms[lo:hi],
        values=chunk.values[lo:hi],
        fault=chunk.fault[lo:hi],
        fault_kind=chunk.fault_kind[lo:hi],
        load=chunk.load[lo:hi],
    )


# --------------------------------------------------------------------------- the model


class _Recurrence:
    """``y[t] = a·y[t−1] + x[t]`` over a block of fixed length, with two small products.

    The block is cut into sub-blocks of ``_SUB`` steps: each is solved from zero by a
    lower-triangular Toeplitz product, then the value carried into each sub-block is solved
    the same way over the sub-block ends. Every power of ``a`` is at most 1, so this is
    stable for any time constant, and the arithmetic depends only on the block layout.
    """

    def __init__(self, dt_s: float, tau_s: float, block: int) -> None:
        if block % _SUB:
            raise ValueError(f"block of {block} steps is not a multiple of {_SUB}")
        self.a = math.exp(-dt_s / tau_s)
        self.n_sub = block // _SUB
        log_a = -dt_s / tau_s
        self.inner = _toeplitz(log_a, _SUB)  # (SUB, SUB)
        self.outer = _toeplitz(log_a * _SUB, self.n_sub)  # over sub-block ends
        with np.errstate(under="ignore"):
            s = np.arange(self.n_sub, dtype=np.float64)
            self.outer_carry: FloatArray = np.exp(s * _SUB * log_a)  # a^(s·SUB)
            i = np.arange(1, _SUB + 1, dtype=np.float64)
            self.inner_carry: FloatArray = np.exp(i * log_a)  # a^(i+1)
        self.outer_carry[self.outer_carry < 1e-250] = 0.0
        self.inner_carry[self.inner_carry < 1e-250] = 0.0

    def run(self, x: FloatArray, y0: FloatArray) -> FloatArray:
        """``x`` is (block, n); ``y0`` (n,) the value before the block. Returns (block, n)."""
        n = x.shape[1]
        sub = x.reshape(self.n_sub, _SUB, n).transpose(1, 0, 2).reshape(_SUB, -1)
        local = (self.inner @ sub).reshape(_SUB, self.n_sub, n)  # each sub-block from zero
        # Value entering sub-block s: y0 decayed over s sub-blocks, plus the from-zero end
        # of every earlier sub-block r decayed over the s − 1 − r sub-blocks between.
        from_ends = self.outer @ local[-1]  # row s: what leaves sub-block s
        entering = np.concatenate([np.zeros((1, n)), from_ends[:-1]])
        entering += self.outer_carry[:, None] * y0[None, :]
        y = local + self.inner_carry[:, None, None] * entering[None, :, :]
        out: FloatArray = y.transpose(1, 0, 2).reshape(self.n_sub * _SUB, n)
        return out


def _toeplitz(log_a: float, size: int) -> FloatArray:
    """Lower-triangular ``a^(i−j)``; powers too small to matter are exact zeros (subnormals
    would only slow the product down)."""
    k = np.arange(size, dtype=np.float64)
    lag = k[:, None] - k[None, :]
    with np.errstate(under="ignore"):
        powers = np.where(lag >= 0, np.exp(np.maximum(lag, 0.0) * log_a), 0.0)
    powers[powers < 1e-250] = 0.0
    out: FloatArray = powers
    return out


@dataclass(frozen=True)
class _AssetParams:
    base_load: FloatArray
    daily_amp: FloatArray
    daily_phase: FloatArray
    p0: FloatArray
    p_static: FloatArray
    r: FloatArray
    kq: FloatArray
    eta: FloatArray
    i_mag: FloatArray
    amp_per_kw: FloatArray
    shaft_kw_nominal: FloatArray
    i_nominal: FloatArray
    dt_idle_c: FloatArray
    dt_load_c: FloatArray
    ambient_offset_c: FloatArray
    v1: FloatArray
    v2: FloatArray
    vbb: FloatArray
    f_rot_hz: FloatArray
    phase2: FloatArray
    theta0: FloatArray
    setpoint0: FloatArray
    load_noise0: FloatArray
    sensor_noise0: FloatArray


def _draw_params(n: int, rng: np.random.Generator) -> _AssetParams:
    def around(nominal: float, spread: float) -> FloatArray:
        return nominal * rng.uniform(1.0 - spread, 1.0 + spread, n)

    base_load = rng.uniform(0.68, 0.80, n)
    daily_amp = rng.uniform(0.05, 0.09, n)
    daily_phase = rng.normal(0.0, 0.25, n)
    p0 = around(6.0, 0.05)
    p_static = rng.uniform(0.8, 1.2, n)
    q_n = around(500.0, 0.1)
    p_n = around(4.0, 0.05)
    eta = around(0.72, 0.05)
    i_mag = around(4.0, 0.1)
    amp_per_kw = around(1.86, 0.03)
    shaft_kw_nominal = p_n * q_n / 600.0 / eta
    return _AssetParams(
        base_load=base_load,
        daily_amp=daily_amp,
        daily_phase=daily_phase,
        p0=p0,
        p_static=p_static,
        r=(p_n - p_static) / q_n**2,
        kq=(p0 - p_n) / q_n**2,
        eta=eta,
        i_mag=i_mag,
        amp_per_kw=amp_per_kw,
        shaft_kw_nominal=shaft_kw_nominal,
        i_nominal=i_mag + amp_per_kw * shaft_kw_nominal,
        dt_idle_c=around(20.0, 0.1),
        dt_load_c=around(40.0, 0.1),
        ambient_offset_c=rng.normal(0.0, 1.5, n),
        v1=around(0.35, 0.2),
        v2=around(0.18, 0.2),
        vbb=around(0.05, 0.2),
        f_rot_hz=around(24.5, 0.02),
        phase2=rng.uniform(0.0, 2 * math.pi, n),
        theta0=rng.uniform(0.0, 2 * math.pi, n),
        setpoint0=rng.normal(0.0, 0.5 * _SETPOINT_STD, n),
        load_noise0=rng.normal(0.0, _LOAD_NOISE_STD, n),
        sensor_noise0=rng.standard_normal((n, _N_SIGNALS)),
    )


def _window_mean(alpha: FloatArray, k_w: FloatArray) -> FloatArray:
    """Mean of ``cos(alpha + k·τ)`` over an acquisition window ``τ ∈ [0, W]``; k_w = k·W."""
    out: FloatArray = (np.sin(alpha + k_w) - np.sin(alpha)) / k_w
    return out


def _vibration_mean_square(
    a1: FloatArray, a2: FloatArray, theta: FloatArray, phase2: FloatArray, omega_w: FloatArray
) -> FloatArray:
    """Mean square of ``a1·sin(θ+ωτ) + a2·sin(2θ+φ+2ωτ)`` over the window, in closed form."""
    ms: FloatArray = (
        0.5 * a1**2 * (1.0 - _window_mean(2.0 * theta, 2.0 * omega_w))
        + 0.5 * a2**2 * (1.0 - _window_mean(4.0 * theta + 2.0 * phase2, 4.0 * omega_w))
        + a1
        * a2
        * (
            _window_mean(theta + phase2, omega_w)
            - _window_mean(3.0 * theta + phase2, 3.0 * omega_w)
        )
    )
    return np.maximum(ms, 0.0)


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
        self._params = _draw_params(config.n_assets, np.random.default_rng(params_seq))
        self._noise_seq = noise_seq
        #: Per-asset timestamp offsets: readings of one step spread evenly over the period.
        self.offsets_ms: IntArray = (
            np.arange(config.n_assets, dtype=np.int64) * config.period_ms
        ) // config.n_assets
        self.block_steps = _block_steps(config.n_assets)
        events = _plan_faults(self, np.random.default_rng(faults_seq))
        events += _plan_normal(self, np.random.default_rng(normal_seq))
        events.sort(key=lambda e: (e.label.start_step, e.asset_index, e.label.kind))
        self._events = events
        self.labels: tuple[FaultInterval, ...] = tuple(e.label for e in events)
        self.faults: tuple[FaultInterval, ...] = tuple(x for x in self.labels if x.is_fault)
        self._ev_start = np.array([e.label.start_step for e in events], dtype=np.int64)
        self._ev_stop = np.array([e.label.stop_step for e in events], dtype=np.int64)
        self._ev_persists = np.array([e.label.kind in NORMAL_KINDS for e in events], dtype=bool)
        dt = config.period_s
        b = self.block_steps
        self._lag_speed = _Recurrence(dt, _TAU_SPEED_S, b)
        self._lag_temp = _Recurrence(dt, _TAU_TEMP_S, b)
        self._ar_load = _Recurrence(dt, _TAU_LOAD_NOISE_S, b)
        self._ar_sensor = _Recurrence(dt, _TAU_SENSOR_NOISE_S, b)
        self._walk = _Recurrence(dt, _TAU_SETPOINT_S, b)

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
                parts.append(_cut(current, pos, pos + take))
                pos += take
                need -= take
            chunk = _concat(parts)
            if remaining is not None:
                remaining -= chunk.n_steps
            yield chunk

    # -- generation ------------------------------------------------------------------

    def _blocks(self) -> Iterator[Chunk]:
        p = self._params
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
        cfg, p = self.config, self._params
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
        jump_p = min(1.0, dt * _SETPOINT_STEPS_PER_S)
        lo_j, hi_j = _SETPOINT_STEP_SIZE
        jump_mag = lo_j + (hi_j - lo_j) * np.abs(2.0 * u[..., 1] - 1.0)
        jumps = np.where(u[..., 0] < jump_p, np.sign(u[..., 1] - 0.5) * jump_mag, 0.0)
        walk_in = _SETPOINT_STD * math.sqrt(1.0 - rho**2) * z[..., _Z_SETPOINT] + jumps
        setpoint = self._walk.run(walk_in, st.setpoint)
        st.setpoint = setpoint[-1].copy()
        a_ln = self._ar_load.a
        load_noise = self._ar_load.run(
            _LOAD_NOISE_STD * math.sqrt(1.0 - a_ln**2) * z[..., _Z_LOAD], st.load_noise
        )
        st.load_noise = load_noise[-1].copy()
        command = np.clip(
            p.base_load
            + p.daily_amp * np.sin(day_angle + p.daily_phase)
            + setpoint
            + load_noise
            + eff.regime,
            *_LOAD_RANGE,
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
        ambient = _AMBIENT_C + p.ambient_offset_c + _AMBIENT_SWING_C * np.sin(day_angle)
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
        ms = _vibration_mean_square(a1, a2, theta, p.phase2, omega * _VIB_WINDOW_S)
        ms = ms + (p.vbb * speed) ** 2
        ms = ms * (1.0 + eff.wear) ** 2
        ms = ms * (1.0 + (5.0 * cav * (1.0 + 0.5 * np.abs(z[..., _Z_CAV_VIB]))) ** 2)
        vibration = np.sqrt(ms)

        # Sensors: calibration drift, white + coloured noise, sensor faults, resolution.
        true = np.stack([temp, pressure_f, flow_f, current, vibration], axis=-1)
        a_n = self._ar_sensor.a
        ar = self._ar_sensor.run(
            math.sqrt(1.0 - a_n**2) * z[..., _Z_AR : _Z_AR + _N_SIGNALS].reshape(n_b, -1),
            st.sensor_noise.reshape(-1),
        ).reshape(n_b, n_a, _N_SIGNALS)
        st.sensor_noise = ar[-1].copy()
        noise = eff.noise_factor * (
            _NOISE_AR * ar + _NOISE_WHITE * z[..., _Z_WHITE : _Z_WHITE + _N_SIGNALS]
        )
        values = true + eff.drift
        values[..., :_V] += noise[..., :_V]
        values[..., _V] *= np.exp(noise[..., _V])
        values += eff.offset
        values[..., _P:] = np.maximum(values[..., _P:], 0.0)
        for j, decimals in enumerate(_DECIMALS):
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
            noise_factor=np.ones((n_b, n_a, _N_SIGNALS)),
            offset=np.zeros((n_b, n_a, _N_SIGNALS)),
            regime=np.zeros((n_b, n_a)),
            drift=np.zeros((n_b, n_a, _N_SIGNALS)),
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


# --------------------------------------------------------------------------- planning


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


def _plan_faults(sim: PlantSimulator, rng: np.random.Generator) -> list[_Event]:
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
    events: list[_Event] = []
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
            sig, size, temp_rise = (_V, _T), 2.0 * severity, 2.4 * 2.0 * severity
        elif kind == "cavitation":
            sig, size = (_P, _Q, _I, _V), min(0.3 * severity, 0.8)
            bursts = _bursts(n, sim.config.period_s, rng)
        elif kind == "stuck_sensor":
            sig = (int(rng.integers(_N_SIGNALS)),)
        elif kind in ("spike", "level_shift"):
            j = int(rng.integers(_N_SIGNALS))
            sign = 1.0 if j == _V else float(rng.choice([-1.0, 1.0]))
            steps_size = 15.0 if kind == "spike" else 10.0
            sig, size = (j,), sign * steps_size * severity * float(_TYPICAL_STEP[j])
        elif kind == "noise_increase":
            count = int(rng.integers(1, 4))
            sig = tuple(sorted(int(x) for x in rng.choice(_N_SIGNALS, count, replace=False)))
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
            events.append(_Event(label, asset, sig, size, temp_rise))
        else:
            events.append(_Event(label, asset, sig, size, temp_rise, *bursts))
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


def _plan_normal(sim: PlantSimulator, rng: np.random.Generator) -> list[_Event]:
    cfg = sim.config
    events: list[_Event] = []
    if cfg.regime_changes == 0 and cfg.sensor_drifts == 0:
        return events
    what = f"{cfg.regime_changes} regime changes and {cfg.sensor_drifts} sensor drifts"
    warm, horizon = _plan_window(sim, what)
    span = horizon - warm
    everyone = list(range(cfg.n_assets))
    settle = math.ceil(3.0 * _TAU_TEMP_S * 1000.0 / cfg.period_ms)
    level = sim._params.base_load.copy()
    for asset, k, n_slots in _slots(cfg.regime_changes, everyone, rng):
        slot_lo = warm + span * k // n_slots
        slot_hi = warm + span * (k + 1) // n_slots
        start = slot_lo + int(rng.integers(0, max(1, (slot_hi - slot_lo) // 2)))
        stop = max(start + 1, min(start + settle, slot_hi))
        size = float(rng.uniform(0.06, 0.12)) * float(rng.choice([-1.0, 1.0]))
        if not _REGIME_RANGE[0] <= level[asset] + size <= _REGIME_RANGE[1]:
            size = -size
        level[asset] += size
        start_ms, end_ms = _interval(sim, asset, start, stop)
        label = FaultInterval(
            sim.assets[asset], "regime_change", SIGNALS, start, stop, start_ms, end_ms, size, False
        )
        events.append(_Event(label, asset, tuple(range(_N_SIGNALS)), size))
    for asset, k, n_slots in _slots(cfg.sensor_drifts, everyone, rng):
        slot_lo = warm + span * k // n_slots
        slot_len = warm + span * (k + 1) // n_slots - slot_lo
        n = max(1, round(float(rng.uniform(0.3, 0.8)) * slot_len))
        start = slot_lo + int(rng.integers(0, slot_len - n + 1))
        j = int(rng.integers(_N_SIGNALS))
        sign = 1.0 if j == _V else float(rng.choice([-1.0, 1.0]))
        size = sign * 8.0 * float(rng.uniform(0.8, 1.2)) * float(_TYPICAL_STEP[j])
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
        events.append(_Event(label, asset, (j,), size))
    return events


# --------------------------------------------------------------------------- progress


class Progress:
    """One updating stderr line on a terminal, a plain line every ``interval_s`` otherwise."""

    def __init__(
        self,
        total_readings: int | None,
        *,
        stream: TextIO | None = None,
        interval_s: float | None = None,
        enabled: bool = True,
    ) -> None:
        self.total = total_readings
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.25 if self.tty else 5.0)
        self.started = time.monotonic()
        self._last = self.started
        self._shown = False

    def text(self, readings: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = readings / elapsed if elapsed > 0 else 0.0
        line = f"simulate: {readings:,} readings  {rate:,.0f}/s  {elapsed:,.1f} s elapsed"
        if self.total:
            left = max(self.total - readings, 0)
            eta = f"{left / rate:,.1f} s" if rate > 0 else "?"
            line += f"  {100.0 * readings / self.total:.0f}%  ETA {eta}"
        return line

    def update(self, readings: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.text(readings))
            self._shown = True
        else:
            self.stream.write(self.text(readings) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the final line and for callers."""

    readings: int
    steps: int
    elapsed_s: float
    faults_by_kind: dict[str, int]
    normal_by_kind: dict[str, int]
    target: str
    labels_target: str | None
    interrupted: bool

    def line(self) -> str:
        rate = self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults_by_kind.items()))
        normal = ", ".join(f"{k} {v}" for k, v in sorted(self.normal_by_kind.items()))
        text = (
            f"simulate: {self.readings:,} readings ({self.steps:,} per asset) in "
            f"{self.elapsed_s:,.1f} s ({rate:,.0f}/s); faults injected: "
            f"{sum(self.faults_by_kind.values())}{f' ({faults})' if faults else ''}"
        )
        if normal:
            text += f"; normal changes: {normal}"
        text += f"; to {self.target}"
        if self.labels_target:
            text += f", labels to {self.labels_target}"
        if self.interrupted:
            text += " (stopped early)"
        return text


def _started(labels: Sequence[FaultInterval], steps: int) -> list[FaultInterval]:
    return [x for x in labels if x.start_step < steps]


def _summary(
    sim: PlantSimulator,
    steps: int,
    elapsed_s: float,
    target: str,
    labels_target: str | None,
    interrupted: bool,
) -> RunSummary:
    started = _started(sim.labels, steps)
    return RunSummary(
        readings=steps * sim.config.n_assets,
        steps=steps,
        elapsed_s=elapsed_s,
        faults_by_kind=dict(Counter(x.kind for x in started if x.is_fault)),
        normal_by_kind=dict(Counter(x.kind for x in started if not x.is_fault)),
        target=target,
        labels_target=labels_target,
        interrupted=interrupted,
    )


def default_labels_path(out: str | Path) -> Path:
    """``<out>.labels.csv``, next to the data file."""
    out = Path(out)
    return out.with_name(out.name + ".labels.csv")


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"{path}: the output file must end in .csv or .parquet (got {suffix!r})")


def write_file(
    sim: PlantSimulator,
    path: str | Path,
    *,
    labels_path: str | Path | None = None,
    steps_per_chunk: int | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Write the run to ``.csv`` or ``.parquet``, rows in time order, plus the labels CSV.

    Columns: :data:`FILE_COLUMNS`. CSV timestamps are RFC 3339 (as ``format_ts`` writes
    them); Parquet has ``timestamp[ms, UTC]``. ``fault`` is 1 inside a fault of that asset,
    ``fault_kind`` the kind or empty. An endless run writes until ``stop`` is set.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    fmt = _file_format(path)
    n_a = sim.config.n_assets
    per_chunk = steps_per_chunk or max(1, 100_000 // n_a)
    asset_names_arr = np.array(sim.assets)
    time_type = pa.timestamp("ms", tz="UTC") if fmt == "parquet" else pa.string()
    schema = pa.schema(
        [
            pa.field("timestamp", time_type, nullable=False),
            pa.field("asset", pa.string(), nullable=False),
            *[pa.field(s, pa.float64(), nullable=False) for s in SIGNALS],
            pa.field("fault", pa.int8(), nullable=False),
            pa.field("fault_kind", pa.string(), nullable=False),
        ]
    )
    started = time.monotonic()
    steps = 0
    interrupted = False
    sink = pa.OSFile(str(path), "wb")
    writer: Any
    if fmt == "parquet":
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    else:
        sink.write((",".join(FILE_COLUMNS) + "\n").encode())
        writer = pacsv.CSVWriter(
            sink,
            schema,
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
        )
    try:
        for chunk in sim.chunks(per_chunk):
            ts = chunk.ts_ms.reshape(-1)
            if fmt == "parquet":
                time_col = pa.array(ts, type=pa.timestamp("ms", tz="UTC"))
            else:
                text = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")
                time_col = pa.array(np.char.add(text, "Z"), type=pa.string())
            flat = chunk.values.reshape(-1, _N_SIGNALS)
            columns = [
                time_col,
                pa.array(asset_names_arr[chunk.asset_index()], type=pa.string()),
                *[pa.array(flat[:, j], type=pa.float64()) for j in range(_N_SIGNALS)],
                pa.array(chunk.fault.reshape(-1).astype(np.int8), type=pa.int8()),
                pa.array(chunk.fault_kind_names(), type=pa.string()),
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            steps += chunk.n_steps
            if progress is not None:
                progress.update(steps * n_a)
            if stop is not None and stop.is_set():
                interrupted = sim.n_steps is None or steps < sim.n_steps
                break
    finally:
        writer.close()
        sink.close()
        if progress is not None:
            progress.close()
    if labels_path is not None:
        write_labels(labels_path, _started(sim.labels, steps))
    return _summary(
        sim,
        steps,
        time.monotonic() - started,
        str(path),
        str(labels_path) if labels_path is not None else None,
        interrupted,
    )


class DeliveryError(RuntimeError):
    """Some readings or labels were not acknowledged by the broker."""


class _Deliveries:
    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error: str | None = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)
        else:
            self.delivered += 1


def producer_config(client_config: Mapping[str, str]) -> dict[str, str]:
    """The client config plus what the simulator needs: idempotence (ordered, no
    duplicates per asset), a little batching and lz4 (overridable)."""
    conf = dict(client_config)
    conf.setdefault("linger.ms", "20")
    conf.setdefault("compression.type", "lz4")
    conf["enable.idempotence"] = "true"
    return conf


def produce(
    sim: PlantSimulator,
    client_config: Mapping[str, str],
    topic: str,
    *,
    labels_topic: str | None = None,
    labels_path: str | Path | None = None,
    pace: bool = True,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    flush_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
) -> RunSummary:
    """Send the run to Kafka: key = asset, value = the DESIGN's reading JSON.

    With ``pace`` each step is sent when its time comes (``period_ms`` apart), so the total
    rate is ``n_assets / period``; otherwise as fast as the producer takes them. A label
    goes to ``labels_topic`` (key = asset) when its event's first reading is sent. Every
    delivery report is checked; :class:`DeliveryError` after the final flush if any
    message was not acknowledged.
    """
    from confluent_kafka import KafkaException, Producer

    conf = producer_config(client_config)
    producer = Producer(conf)
    where = conf.get("bootstrap.servers", "?")
    try:
        producer.list_topics(timeout=connect_timeout_s)
    except KafkaException as exc:
        raise DeliveryError(
            f"cannot reach Kafka at {where} within {connect_timeout_s:g} s ({exc}); start one "
            "with `plantwatch broker start`, or pass --bootstrap-servers HOST:PORT"
        ) from exc
    reports = _Deliveries()
    keys = [a.encode() for a in sim.assets]
    labels = list(sim.labels)
    next_label = 0
    n_a = sim.config.n_assets
    period_s = sim.config.period_s
    if pace:
        per_chunk = max(1, min(math.ceil(0.5 / period_s), max(1, 50_000 // n_a)))
    else:
        per_chunk = max(1, 50_000 // n_a)

    def send(topic_name: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic_name, value=value, key=key, on_delivery=reports)
                return
            except BufferError:
                producer.poll(0.05)

    started = time.monotonic()
    steps = 0
    interrupted = False
    try:
        for chunk in sim.chunks(per_chunk):
            rows = chunk.values.tolist()
            stamps = chunk.ts_ms.tolist()
            for t in range(chunk.n_steps):
                step = chunk.start_step + t
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
                if pace:
                    wait_s = started + step * period_s - time.monotonic()
                    if wait_s > 0.001:
                        if stop is not None:
                            stop.wait(wait_s)
                        else:
                            time.sleep(wait_s)
                while next_label < len(labels) and labels[next_label].start_step <= step:
                    label = labels[next_label]
                    if labels_topic is not None:
                        send(labels_topic, label.asset.encode(), label.to_json())
                    next_label += 1
                row, stamp = rows[t], stamps[t]
                for a in range(n_a):
                    value = encode_reading(
                        sim.assets[a], stamp[a], dict(zip(SIGNALS, row[a], strict=True))
                    )
                    send(topic, keys[a], value)
                steps += 1
                producer.poll(0)
                if progress is not None:
                    progress.update(steps * n_a)
            if interrupted:
                break
    finally:
        remaining = producer.flush(flush_timeout_s)
        if progress is not None:
            progress.close()
    if labels_path is not None:
        write_labels(labels_path, _started(sim.labels, steps))
    if reports.failed or remaining:
        raise DeliveryError(
            f"{reports.failed} message(s) failed and {remaining} were still undelivered after "
            f"a {flush_timeout_s:g} s flush to {where} (topic {topic}); first error: "
            f"{reports.first_error or 'none reported'}. Check that the broker is up and the "
            "topic exists (or that the broker auto-creates topics)."
        )
    target = f"topic {topic}"
    label_target = f"topic {labels_topic}" if labels_topic else None
    if labels_path is not None:
        file_target = str(labels_path)
        label_target = f"{label_target} and {file_target}" if label_target else file_target
    return _summary(sim, steps, time.monotonic() - started, target, label_target, interrupted)


# --------------------------------------------------------------------------- command line

EPILOG = """\
examples:
  plantwatch simulate --assets 20 --rate 2000 --duration 30
  plantwatch simulate --assets 4 --duration 86400 --faults 0 --out history.parquet
  plantwatch simulate --assets 8 --control-assets 2 --faults 12 --duration 7200 \\
      --start 2026-01-01T00:00:00Z --out test.csv        # labels in test.csv.labels.csv
  plantwatch simulate --assets 4 --forever --labels-topic   # until Ctrl-C, labels to Kafka

Same --seed and --start give the same data. Without --start, a file run ends now and a
Kafka run starts now. An endless run (--forever) has its events planned over its first
hour. Fault kinds: """ + ", ".join(FAULT_KINDS)


def _duration_range(text: str) -> tuple[float, float]:
    parts = text.split(":")
    try:
        values = [float(x) for x in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX seconds, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX seconds, got {text!r}")
    return values[0], values[1]


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


def parse_start(text: str, *, now_ms: int) -> int:
    """``now``, RFC 3339 text, or epoch milliseconds, to epoch milliseconds."""
    text = text.strip()
    if text.lower() == "now":
        return now_ms
    try:
        return parse_ts(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise ValueError(
            f"--start {text!r}: use 'now', RFC 3339 (2026-01-01T00:00:00Z) or epoch "
            f"milliseconds ({exc})"
        ) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``plantwatch simulate`` options (``--config``/``--bootstrap-servers`` come from
    the caller)."""
    parser.epilog = EPILOG
    parser.description = "Simulate pumps with labelled injected faults, to Kafka or a file."
    g = parser.add_argument_group("plant and time")
    g.add_argument("--assets", type=int, default=4, metavar="N", help="pumps (default 4)")
    g.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="readings per second over all assets: each asset every N/R s (default 1 s)",
    )
    g.add_argument("--period-ms", type=int, metavar="MS", help="ms between an asset's readings")
    g.add_argument(
        "--duration",
        type=float,
        default=60.0,
        metavar="S",
        help="simulated seconds (default 60; 0 = until Ctrl-C)",
    )
    g.add_argument("--forever", action="store_true", help="run until Ctrl-C (= --duration 0)")
    g.add_argument(
        "--start",
        metavar="WHEN",
        help="first timestamp: now, RFC 3339 or epoch ms (default: Kafka now, file now−duration)",
    )
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument(
        "--plant-seed",
        type=int,
        default=None,
        help="seed of the plant's set-points and gains (default: --seed); keep it to simulate "
        "another day of the same plant",
    )
    o = parser.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="write .csv or .parquet instead of Kafka")
    o.add_argument("--topic", help="readings topic (default from settings: plantwatch.sensors)")
    o.add_argument(
        "--labels",
        metavar="PATH",
        help="labels CSV (default <out>.labels.csv for a file; none for Kafka)",
    )
    o.add_argument(
        "--labels-topic",
        nargs="?",
        const="",
        metavar="TOPIC",
        help="also send labels to Kafka (no value: the settings' labels topic)",
    )
    o.add_argument("--no-pace", action="store_true", help="send to Kafka as fast as possible")
    o.add_argument(
        "--quiet", action="store_true", help="no progress line (the summary is still printed)"
    )
    f = parser.add_argument_group("faults and normal changes")
    f.add_argument(
        "--faults",
        type=int,
        metavar="N",
        help="faults in total (default: one per non-control asset)",
    )
    f.add_argument(
        "--fault-kinds", type=_kinds, metavar="A,B", help="kinds to inject (default all)"
    )
    f.add_argument(
        "--fault-duration-s",
        type=_duration_range,
        metavar="MIN:MAX",
        help="fault length range (default 30:300, shrunk to fit short runs)",
    )
    f.add_argument(
        "--fault-magnitude",
        type=float,
        default=1.0,
        metavar="X",
        help="size scale; 1.0 = clearly detectable (default)",
    )
    f.add_argument(
        "--warmup-s",
        type=float,
        metavar="S",
        help="no events before this (default 60 s, or a fifth of a shorter run)",
    )
    f.add_argument(
        "--control-assets",
        type=int,
        default=0,
        metavar="K",
        help="the last K assets get no faults (false-alarm control)",
    )
    f.add_argument(
        "--regime-changes",
        type=int,
        default=0,
        metavar="N",
        help="normal set-point steps that stay (labelled is_fault=false)",
    )
    f.add_argument(
        "--sensor-drift",
        type=int,
        default=0,
        metavar="N",
        help="slow calibration drifts of one signal (labelled is_fault=false)",
    )


def config_from_args(args: argparse.Namespace, *, now_ms: int | None = None) -> SimConfig:
    """Resolve the options (rate to period, start, the defaults that shrink to fit)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    n_assets = int(args.assets)
    if n_assets < 1:
        raise ValueError(f"--assets must be at least 1, got {n_assets}")
    if args.period_ms is not None:
        period_ms = int(args.period_ms)
    elif args.rate is not None:
        if not args.rate > 0:
            raise ValueError(f"--rate must be positive, got {args.rate}")
        period_ms = round(1000.0 * n_assets / args.rate)
        if period_ms < 1:
            raise ValueError(
                f"--rate {args.rate:g} with {n_assets} assets means a reading per asset every "
                f"{1000.0 * n_assets / args.rate:.3f} ms; the shortest period is 1 ms: "
                "add assets or lower the rate"
            )
    else:
        period_ms = 1000
    duration_s: float | None = None if args.forever or args.duration == 0 else args.duration
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"--duration must be positive (or 0 for endless), got {duration_s}")
    if args.start is not None:
        start_ms = parse_start(args.start, now_ms=now_ms)
    elif args.out is not None and duration_s is not None:
        start_ms = now_ms - round(duration_s * 1000)
    else:
        start_ms = now_ms
    control = int(args.control_assets)
    faults = int(args.faults) if args.faults is not None else max(0, n_assets - control)
    horizon_s = duration_s if duration_s is not None else ENDLESS_PLAN_HORIZON_S
    warmup_s = (
        float(args.warmup_s)
        if args.warmup_s is not None
        else (min(60.0, horizon_s / 5.0) if duration_s is not None else 60.0)
    )
    if args.fault_duration_s is not None:
        fault_duration = tuple(args.fault_duration_s)
    else:
        per_asset = math.ceil(faults / max(1, n_assets - control)) if faults else 1
        slot_s = max(horizon_s - warmup_s, period_ms / 1000.0) / per_asset
        hi = min(300.0, slot_s / 2.0)
        fault_duration = (min(30.0, hi / 2.0), hi)
    return SimConfig(
        n_assets=n_assets,
        period_ms=period_ms,
        start_ms=start_ms,
        duration_s=duration_s,
        seed=int(args.seed),
        faults=faults,
        fault_kinds=tuple(args.fault_kinds) if args.fault_kinds else FAULT_KINDS,
        fault_duration_s=(float(fault_duration[0]), float(fault_duration[1])),
        fault_magnitude=float(args.fault_magnitude),
        warmup_s=warmup_s,
        control_assets=control,
        regime_changes=int(args.regime_changes),
        sensor_drifts=int(args.sensor_drift),
        plant_seed=None if args.plant_seed is None else int(args.plant_seed),
    )


def _install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop`` (a second Ctrl-C interrupts at once); returns undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def undo() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``plantwatch simulate``: 0 when done (or stopped by Ctrl-C), 1 on a delivery
    failure, 2 on bad options."""
    try:
        config = config_from_args(args)
        out = Path(args.out) if args.out else None
        if out is not None:
            _file_format(out)
        sim = PlantSimulator(config)
    except ValueError as exc:
        print(f"plantwatch simulate: {exc}", file=sys.stderr)
        return 2
    if args.rate is not None and args.period_ms is None:
        actual = 1000.0 * config.n_assets / config.period_ms
        if abs(actual - args.rate) > 1e-6 * args.rate:
            print(
                f"plantwatch simulate: a {config.period_ms} ms period gives {actual:,.1f} "
                f"readings/s, not {args.rate:g}",
                file=sys.stderr,
            )
    total = None if config.n_steps is None else config.n_steps * config.n_assets
    progress = Progress(total, enabled=not args.quiet)
    stop = threading.Event()
    undo = _install_stop_handlers(stop)
    try:
        if out is not None:
            labels_path = Path(args.labels) if args.labels else default_labels_path(out)
            summary = write_file(sim, out, labels_path=labels_path, stop=stop, progress=progress)
        else:
            labels_topic = args.labels_topic
            if labels_topic == "":
                labels_topic = settings.topics.labels
            summary = produce(
                sim,
                settings.kafka.client_config(),
                args.topic or settings.topics.sensors,
                labels_topic=labels_topic,
                labels_path=Path(args.labels) if args.labels else None,
                pace=not args.no_pace,
                stop=stop,
                progress=progress,
                flush_timeout_s=settings.delivery.flush_timeout_s,
            )
    except DeliveryError as exc:
        print(f"plantwatch simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        undo()
    print(summary.line(), file=sys.stderr)
    return 0

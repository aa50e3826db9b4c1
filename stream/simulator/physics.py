"""The pump set's physics: constants, per-asset parameters, the vibration window in closed form."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.simulator.chunks import FloatArray
from stream.simulator.config import N_SIGNALS

DECIMALS = (2, 3, 1, 2, 4)  # sensor resolution per signal
#: Sensor noise per signal (vibration: relative, applied in log space).
NOISE_WHITE = np.array([0.08, 0.012, 2.0, 0.06, 0.03])
NOISE_AR = np.array([0.10, 0.015, 2.5, 0.08, 0.04])
#: Typical short-term variation of each signal (sensor plus process noise); sensor faults
#: are sized in these steps so that magnitude 1.0 is clearly detectable on every signal.
TYPICAL_STEP = np.array([0.25, 0.04, 6.0, 0.2, 0.015])

TAU_SPEED_S = 4.0
TAU_TEMP_S = 900.0
TAU_LOAD_NOISE_S = 20.0
TAU_SENSOR_NOISE_S = 5.0
TAU_SETPOINT_S = 6 * 3600.0
LOAD_NOISE_STD = 0.008
SETPOINT_STD = 0.03
SETPOINT_STEPS_PER_S = 1.0 / 7200.0
SETPOINT_STEP_SIZE = (0.01, 0.04)
LOAD_RANGE = (0.45, 1.05)
REGIME_RANGE = (0.55, 0.95)
VIB_WINDOW_S = 0.25
AMBIENT_C = 22.0
AMBIENT_SWING_C = 5.0


@dataclass(frozen=True)
class AssetParams:
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


def draw_params(n: int, rng: np.random.Generator) -> AssetParams:
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
    return AssetParams(
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
        setpoint0=rng.normal(0.0, 0.5 * SETPOINT_STD, n),
        load_noise0=rng.normal(0.0, LOAD_NOISE_STD, n),
        sensor_noise0=rng.standard_normal((n, N_SIGNALS)),
    )


def _window_mean(alpha: FloatArray, k_w: FloatArray) -> FloatArray:
    """Mean of ``cos(alpha + k·τ)`` over an acquisition window ``τ ∈ [0, W]``; k_w = k·W."""
    out: FloatArray = (np.sin(alpha + k_w) - np.sin(alpha)) / k_w
    return out


def vibration_mean_square(
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

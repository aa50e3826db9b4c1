"""What determines a simulated run: the vocabulary (signals, kinds, columns), :class:`SimConfig`."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


#: Index of each signal in :data:`SIGNALS` (the last axis of a chunk's values).
TEMP, PRESSURE, FLOW, CURRENT, VIBRATION = range(5)
N_SIGNALS = len(SIGNALS)


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

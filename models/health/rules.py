"""One asset's rules over time: :class:`SensorHealth` carries the runs and the band's last
readings across batches, so findings do not depend on how readings are cut into batches."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.health.config import RULES, SensorHealthConfig, SensorRule
from models.health.findings import HealthFindings
from models.health.kernels import (
    F64,
    I64,
    Bools,
    _alone,
    _check_ts,
    _clean,
    _consecutive,
    _prev_median,
    _step_levels,
    _unchanged_runs,
)
from models.health.profile import SensorHealthProfile
from models.health.snapshot import _Carry, _decode_carry, _encode_carry


class SensorHealth:
    """One asset's sensor-health rules: carry state across batches, findings per batch.

    >>> values = np.random.default_rng(1).normal(0.0, 1.0, (500, 2))
    >>> health = SensorHealth(SensorHealthProfile.fit(values, [(0, 500)], ("a", "b")))
    >>> found = health.check(np.zeros((40, 2)))         # both frozen at 0 for 40 readings
    >>> found.fired["stuck"].sum(axis=0).tolist()        # flagged past the 30th reading
    [10, 10]
    >>> copy = SensorHealth(health.profile)
    >>> copy.restore(health.snapshot())
    >>> copy.snapshot() == health.snapshot()
    True
    """

    def __init__(self, profile: SensorHealthProfile, config: SensorHealthConfig | None = None):
        cfg = config if config is not None else SensorHealthConfig()
        if 2 * cfg.spike_max_readings + 1 > profile.band_window:
            raise ValueError(
                f"spike_max_readings={cfg.spike_max_readings} needs a band of at least "
                f"{2 * cfg.spike_max_readings + 1} readings, but the profile was fitted with "
                f"band_window={profile.band_window}; lower spike_max_readings or refit with a "
                "wider band"
            )
        self.profile = profile
        self.config = cfg
        width = len(profile.signals)

        stuck_on = profile.changes_seen
        self._stuck_limit = np.where(
            stuck_on,
            np.maximum(float(cfg.stuck_min_readings), cfg.stuck_factor * profile.longest_run),
            np.inf,
        )
        self._stuck_limit_ms = np.where(stuck_on, cfg.stuck_factor * profile.longest_run_ms, np.nan)

        scale = profile.residual_scale
        spike_on = np.isfinite(scale) & (scale > 0)
        self._band = np.where(spike_on, _spike_band(profile, cfg), np.inf)
        self._scale = np.where(spike_on, scale, np.nan)
        self._spike_limit = np.where(spike_on, self._band / np.where(spike_on, scale, 1.0), np.inf)

        envelope_on = np.isfinite(profile.low) & np.isfinite(profile.high)
        low = np.where(envelope_on, profile.low, 0.0)
        high = np.where(envelope_on, profile.high, 0.0)
        magnitude = np.maximum(np.abs(low), np.abs(high))
        self._low, self._high = low, high
        self._span = np.maximum(high - low, cfg.envelope_level_fraction * magnitude)
        self._envelope_on = envelope_on
        self._range_limit = np.where(
            envelope_on, np.where(self._span > 0, cfg.envelope_margin, 0.0), np.inf
        )
        step_window = profile.step_window or 0
        step_scale = profile.step_scale
        step_on = (step_window > 0) & np.isfinite(step_scale) & (step_scale > 0)
        step_on &= np.isfinite(profile.step_q999)
        self._step_on = step_on
        self._step_scale = np.where(step_on, step_scale, np.nan)
        self._step_band = np.where(step_on, _step_band(profile, cfg), np.inf)
        self._step_limit = np.where(
            step_on, self._step_band / np.where(step_on, step_scale, 1.0), np.inf
        )
        #: Signals per asset: a wide health (assets side by side) judges "alone" per block.
        self._block = width

        self._limits: dict[SensorRule, F64] = {
            "stuck": self._stuck_limit,
            "spike": self._spike_limit,
            "out_of_range": self._range_limit,
            "step": self._step_limit,
        }

        self._keep = max(profile.band_window + cfg.spike_max_readings + 1, 2 * step_window)
        self._last = np.full(width, np.nan)
        self._run = np.zeros(width, np.int64)
        self._run_start = np.full(width, np.nan)
        self._out_run = np.zeros(width, np.int64)
        self._tail = np.zeros((0, width), np.float64)
        # The step rule: the signal's last step not yet undone (signed; 0: none), whether
        # its last reading was in a run of step candidates, and that run's verdict.
        self._step_away = np.zeros(width)
        self._step_run = np.zeros(width, np.bool_)
        self._step_flag = np.zeros(width, np.bool_)

    @property
    def signals(self) -> tuple[str, ...]:
        return self.profile.signals

    def check(self, values: npt.ArrayLike, ts_ms: npt.ArrayLike | None = None) -> HealthFindings:
        """Judge the next readings of this asset: values (n, signals) in time order, raw
        (not normalised), NaN where a reading lacks the signal; ``ts_ms`` (n,) their times
        (optional: only the stuck rule's duration test uses them).

        The state carries over to the next call, so cutting the same readings into other
        batches gives the same findings, row for row.
        """
        width = len(self.signals)
        x = _clean(values, width, "readings")
        stamps = None if ts_ms is None else _check_ts(ts_ms, x.shape[0])
        return self._check(x, stamps)

    def _check(self, x: F64, stamps: I64 | None) -> HealthFindings:
        n, width = x.shape
        present = np.isfinite(x)
        if not self.config.enabled or n == 0:
            empty = np.zeros((n, width), np.bool_)
            return HealthFindings(
                self.signals,
                present,
                {rule: empty.copy() for rule in RULES},
                {rule: np.zeros((n, width)) for rule in RULES},
                dict(self._limits),
            )
        stuck, stuck_score = self._stuck(x, present, stamps)
        ext = np.vstack([self._tail, x])
        spike, spike_score = self._spike(ext)
        step, step_score = self._step(ext, present)
        self._tail = ext[-self._keep :].copy()
        out, out_score = self._out_of_range(x, present)
        return HealthFindings(
            self.signals,
            present,
            {"stuck": stuck, "spike": spike, "out_of_range": out, "step": step},
            {
                "stuck": stuck_score,
                "spike": spike_score,
                "out_of_range": out_score,
                "step": step_score,
            },
            dict(self._limits),
        )

    def _stuck(self, x: F64, present: Bools, stamps: I64 | None) -> tuple[Bools, F64]:
        length, began, _, carry = _unchanged_runs(
            x, stamps, self.profile.step_tolerance, self._last, self._run, self._run_start
        )
        self._last, self._run, self._run_start = carry
        fired = present & (length > self._stuck_limit)
        if stamps is not None:
            at = stamps[:, None] if stamps.ndim == 1 else stamps
            lasted = at.astype(np.float64) - began
            known = np.isfinite(self._stuck_limit_ms) & np.isfinite(began)
            fired &= ~known | (lasted > self._stuck_limit_ms)
        return fired, np.where(fired, length, 0).astype(np.float64)

    def _spike(self, ext: F64) -> tuple[Bools, F64]:
        """``ext``: the carried tail, then this batch's readings."""
        window, longest = self.profile.band_window, self.config.spike_max_readings
        offset = self._tail.shape[0]
        total, width = ext.shape
        n = total - offset
        med = _prev_median(ext, window)
        band = self._band
        back = self.config.spike_return * band
        with np.errstate(invalid="ignore"):
            far_own = np.abs(ext - med) > band
        fired = np.zeros((n, width), np.bool_)
        excursion = np.zeros((n, width))
        for length in range(1, longest + 1):
            first = max(offset, length + 1)
            if first >= total:
                continue
            c = np.arange(first, total)
            t = c - length
            level = med[t]
            ok = ~far_own[t - 1]  # the excursion starts at t
            peak = np.zeros((c.size, width))
            with np.errstate(invalid="ignore"):
                for i in range(length):
                    away = np.abs(ext[t + i] - level)
                    ok &= away > band
                    peak = np.fmax(peak, away)
                ok &= np.abs(ext[c] - level) <= back  # ... and is over at c
            rows = c - offset
            fired[rows] |= ok
            excursion[rows] = np.where(ok, np.fmax(excursion[rows], peak), excursion[rows])
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(fired, excursion / self._scale, 0.0)
        return fired, score

    def _step(self, ext: F64, present: Bools) -> tuple[Bools, F64]:
        """A level that steps and stays, in one signal alone (see :mod:`models.health`).

        A run of consecutive candidate readings (step over the band) is one step, judged
        at its first reading: flagged if no other signal of the asset moved there and it
        does not undo the signal's last step (lands within half the band, or a quarter of
        that step, of where the step began: the end of a sensor's offset or of a fault is
        no news); every reading of the run carries that verdict. Missing readings neither
        extend nor break a run.
        """
        n, width = present.shape
        fired = np.zeros((n, width), np.bool_)
        score = np.zeros((n, width))
        if not self._step_on.any() or n == 0:
            return fired, score
        offset = self._tail.shape[0]
        before, after = _step_levels(ext, self.profile.step_window or 0)
        before, after = before[offset:], after[offset:]
        with np.errstate(invalid="ignore"):
            size = np.abs(after - before)
            z = size / self._step_scale
            moved = np.nan_to_num(z) > self.config.step_alone_z
            candidate = present & (np.nan_to_num(size) > self._step_band)
        alone = _alone(moved, self._block)
        carried = self._step_run & present.any(axis=0)
        for j in np.flatnonzero(candidate.any(axis=0) | carried).tolist():
            rows = np.flatnonzero(present[:, j])
            flags = candidate[rows, j]
            verdict, away = bool(self._step_flag[j]), float(self._step_away[j])
            previous = bool(self._step_run[j])
            for i, row in enumerate(rows.tolist()):
                if not flags[i]:
                    previous = False
                    continue
                if not previous:  # a new run: judge the step at its first reading
                    step = float(after[row, j] - before[row, j])
                    undo = max(self._step_band[j] / 2, _STEP_RETURN * abs(away))
                    if away != 0.0 and abs(away + step) <= undo:
                        verdict, away = False, 0.0  # back by the way it went: no news
                    else:
                        verdict, away = bool(alone[row, j]), step
                previous = True
                fired[row, j] = verdict
            self._step_run[j], self._step_flag[j], self._step_away[j] = previous, verdict, away
        score[fired] = z[fired]
        return fired, score

    def _out_of_range(self, x: F64, present: Bools) -> tuple[Bools, F64]:
        with np.errstate(invalid="ignore"):
            excess = np.maximum(self._low - x, x - self._high)
        distance = np.divide(excess, self._span, out=excess.copy(), where=self._span > 0)
        with np.errstate(invalid="ignore"):
            out = present & self._envelope_on & (distance > self._range_limit)
        length, self._out_run = _consecutive(out, present, self._out_run)
        fired = out & (length > self.config.spike_max_readings)
        return fired, np.where(fired, distance, 0.0)

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The carry state as plain JSON-able data (``null`` for "none yet"), versioned."""
        carry = _Carry(
            self._last,
            self._run,
            self._run_start,
            self._out_run,
            self._tail,
            self._step_away,
            self._step_run,
            self._step_flag,
        )
        return _encode_carry(self.signals, carry)

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Continue from :meth:`snapshot`; ``ValueError`` if it is of another version, of
        other signals, or damaged."""
        carry = _decode_carry(snapshot, self.signals)
        self._last, self._run = carry.last, carry.run
        self._run_start, self._out_run = carry.run_start, carry.out_run
        self._tail = carry.tail[-self._keep :]
        self._step_away, self._step_run = carry.step_away, carry.step_run
        self._step_flag = carry.step_flag


def check_many(
    healths: Sequence[SensorHealth], values: Sequence[npt.ArrayLike], ts_ms: Sequence[npt.ArrayLike]
) -> list[HealthFindings]:
    """:meth:`SensorHealth.check` for several assets' next readings at once.

    ``healths[i]`` judges ``values[i]`` (n_i, signals) at ``ts_ms[i]`` (n_i,); the
    findings and the carry state after are exactly those of ``healths[i].check(values[i],
    ts_ms[i])``. A batch holds a few readings per asset, so one ``check`` per asset pays a
    few dozen numpy calls on tiny arrays each time; here the assets that share a profile and
    config and whose band already holds its full history stand side by side as columns of
    one wide check (every rule is per column and looks only at earlier readings, so rows of
    NaN, no reading, pad the shorter blocks at their end). The others go one by one.
    """
    xs = [_clean(v, len(h.signals), "readings") for h, v in zip(healths, values, strict=True)]
    stamps = [_check_ts(t, x.shape[0]) for t, x in zip(ts_ms, xs, strict=True)]
    found: list[HealthFindings | None] = [None] * len(healths)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, health in enumerate(healths):
        if xs[i].shape[0] and health.config.enabled and health._tail.shape[0] == health._keep:
            groups.setdefault((id(health.profile), id(health.config)), []).append(i)
        else:
            found[i] = health._check(xs[i], stamps[i])
    for members in groups.values():
        if len(members) == 1:
            i = members[0]
            found[i] = healths[i]._check(xs[i], stamps[i])
            continue
        for i, findings in zip(
            members,
            _check_side_by_side(
                [healths[i] for i in members],
                [xs[i] for i in members],
                [stamps[i] for i in members],
            ),
            strict=True,
        ):
            found[i] = findings
    return [f for f in found if f is not None]


def _check_side_by_side(
    healths: list[SensorHealth], xs: list[F64], stamps: list[I64]
) -> list[HealthFindings]:
    first = healths[0]
    profile, width, keep = first.profile, len(first.signals), first._keep
    count = len(healths)
    rows = max(x.shape[0] for x in xs)
    x = np.full((rows, count * width), np.nan)
    ts = np.zeros((rows, count * width), np.int64)
    for k, (block, t) in enumerate(zip(xs, stamps, strict=True)):
        x[: block.shape[0], k * width : (k + 1) * width] = block
        ts[: block.shape[0], k * width : (k + 1) * width] = t[:, None]
    wide = _wide(profile, first.config, count)
    wide._last = np.concatenate([h._last for h in healths])
    wide._run = np.concatenate([h._run for h in healths])
    wide._run_start = np.concatenate([h._run_start for h in healths])
    wide._out_run = np.concatenate([h._out_run for h in healths])
    wide._step_away = np.concatenate([h._step_away for h in healths])
    wide._step_run = np.concatenate([h._step_run for h in healths])
    wide._step_flag = np.concatenate([h._step_flag for h in healths])
    tail = np.hstack([h._tail for h in healths])
    wide._tail = tail
    findings = wide._check(x, ts)
    # Each asset's band history ends at its own last reading, not at the padding.
    ext = np.vstack([tail, x])
    lengths = np.repeat([block.shape[0] for block in xs], width)
    new_tail = np.take_along_axis(ext, lengths[None, :] + np.arange(keep)[:, None], axis=0)
    out = []
    for k, (health, block) in enumerate(zip(healths, xs, strict=True)):
        cols = slice(k * width, (k + 1) * width)
        n = block.shape[0]
        health._last = wide._last[cols].copy()
        health._run = wide._run[cols].copy()
        health._run_start = wide._run_start[cols].copy()
        health._out_run = wide._out_run[cols].copy()
        health._step_away = wide._step_away[cols].copy()
        health._step_run = wide._step_run[cols].copy()
        health._step_flag = wide._step_flag[cols].copy()
        health._tail = new_tail[:, cols].copy()
        out.append(
            HealthFindings(
                health.signals,
                findings.present[:n, cols],
                {rule: findings.fired[rule][:n, cols] for rule in RULES},
                {rule: findings.scores[rule][:n, cols] for rule in RULES},
                dict(health._limits),
            )
        )
    return out


@functools.lru_cache(maxsize=8)
def _wide(profile: SensorHealthProfile, config: SensorHealthConfig, count: int) -> SensorHealth:
    """One health whose signals are ``count`` copies of the profile's, side by side (its
    limits are the profile's, repeated; its carry is set before each use)."""
    tiled: dict[str, Any] = {
        f.name: np.tile(getattr(profile, f.name), count)
        for f in dataclasses.fields(profile)
        if isinstance(getattr(profile, f.name), np.ndarray)
    }
    wide = SensorHealth(
        dataclasses.replace(profile, signals=profile.signals * count, **tiled), config
    )
    wide._block = len(profile.signals)
    return wide


#: A step undoes the signal's last step when it lands within this fraction of that step
#: (or half the band) of where that step began.
_STEP_RETURN = 0.25


def _step_band(profile: SensorHealthProfile, cfg: SensorHealthConfig) -> F64:
    """The step rule's band per signal, in the signal's units: the larger of ``step_z``
    step scales and training's tail of lone steps extended ``step_tail_decades`` decades."""
    return _band(
        profile.step_scale, profile.step_q99, profile.step_q999, cfg.step_z, cfg.step_tail_decades
    )


def _spike_band(profile: SensorHealthProfile, cfg: SensorHealthConfig) -> F64:
    """The spike band's half-width per signal, in the signal's units (see :mod:`models.health`)."""
    return _band(
        profile.residual_scale,
        profile.residual_q99,
        profile.residual_q999,
        cfg.spike_z,
        cfg.spike_tail_decades,
    )


def _band(scale: F64, q99: F64, q999: F64, z: float, decades: float) -> F64:
    """The larger of ``z`` scales and the tail guard: training's tail extended ``decades``
    decades of rarity past its 99.9th percentile, as a power law through the 99th and
    99.9th (``q999 * (q999 / q99) ** decades``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        # No tail to extend where 99 % of the values are 0 (a signal that rarely moves).
        growth = np.where(q99 > 0, q999 / q99, 1.0)
        guard = q999 * growth**decades
        band: F64 = np.fmax(z * scale, guard)
    return band

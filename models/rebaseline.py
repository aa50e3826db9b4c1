"""Re-baselining: a principled way back when the plant moves to a new, steady operating point.

A model trained on last month's history flags a set-point change as long as it lasts, and
protection (nothing learned while an alert is open) then keeps the alert open for hours.
What tells a new operating point from a fault is the *shape* of the move: a set-point
change moves the signals together, the way they moved together in training, while a fault
breaks their relations (one signal shifts alone, a flow stops following its pressure).

So at training the principal subspace of the normalised readings is kept (the directions
that carry ``variance`` of their spread). Online, while an asset's alert is open, the
windows' mean levels are watched. When the level has been steady for ``stable_for_ms`` of
reading time (and at least ``min_windows`` windows) and its shift from the baseline lies
mostly *inside* that subspace (at most ``max_outside_fraction`` of it, by length, outside),
the inside part becomes the asset's new baseline offset: the readings are judged relative
to the new operating point from then on, the open alert is resolved with reason
``rebaselined``, and a notice says so. A shift largely outside the subspace (a broken
relation) is never absorbed, so a fault that shifts one signal stays alerted however long
it lasts. An operator can refuse re-baselining per asset.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> load = rng.normal(size=(2000, 1))
>>> training = np.hstack([load, 2 * load, -load]) + rng.normal(0, 0.05, (2000, 3))
>>> sub = BaselineSubspace.fit(training)
>>> sub.basis.shape  # one direction carries almost all the spread
(1, 3)
>>> sub.inside(np.array([1.0, 2.0, -1.0])).round(2).tolist()  # a set-point move: all of it
[1.0, 2.0, -1.0]
>>> sub.inside(np.array([0.0, 1.0, 0.0])).round(2).tolist()  # one signal alone: a third
[0.33, 0.67, -0.33]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from common.config import Config

SNAPSHOT_VERSION = 1
F64 = npt.NDArray[np.float64]


class RebaselineConfig(Config, frozen=True, kw_only=True):
    """When an open alert may end in a new baseline (see the module docstring)."""

    enabled: bool = True
    #: The level must have been steady this long (reading time) with the alert open.
    stable_for_ms: Annotated[int, msgspec.Meta(gt=0)] = 1_800_000
    #: ... and over at least this many scored windows (coarse data: 30 min is few readings).
    min_windows: Annotated[int, msgspec.Meta(ge=4)] = 30
    #: Steady: the two halves of that stretch differ by at most this fraction of the shift
    #: from the baseline (in normalised units, with a floor of 1).
    steady_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.1
    #: A new baseline only when at most this share of the shift (by length) lies outside
    #: the subspace: a move mostly along normal directions, not a broken relation.
    max_outside_fraction: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.25
    #: The subspace of normal moves: principal directions carrying this share of variance.
    variance: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.9
    #: Assets an operator does not allow to be re-baselined (their alerts stay open).
    refuse_assets: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaselineSubspace:
    """Orthonormal rows spanning the directions normal operation moved in (normalised)."""

    basis: F64  # (k, signals), k < signals

    @classmethod
    def fit(cls, normalised: npt.ArrayLike, variance: float = 0.9) -> BaselineSubspace:
        x = np.asarray(normalised, dtype=np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        n_signals = x.shape[1]
        if x.shape[0] < 2 or n_signals < 2:
            return cls(np.zeros((0, n_signals)))
        centred = x - x.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        share = np.cumsum(singular**2) / max(float((singular**2).sum()), 1e-300)
        k = int(np.searchsorted(share, variance) + 1)
        # Never the whole space: some direction must stay a broken relation.
        k = min(k, n_signals - 1)
        return cls(np.ascontiguousarray(vt[:k]))

    def inside(self, shift: npt.ArrayLike) -> F64:
        """The part of ``shift`` (normalised units) that lies in the subspace."""
        v = np.asarray(shift, dtype=np.float64)
        return np.asarray(self.basis.T @ (self.basis @ v), dtype=np.float64)

    def to_json(self) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.basis.tolist()]

    @classmethod
    def from_json(cls, rows: Any, n_signals: int) -> BaselineSubspace:
        basis = np.asarray(rows, dtype=np.float64).reshape(-1, n_signals)
        if not np.isfinite(basis).all():
            raise ValueError("baseline subspace holds non-finite numbers")
        return cls(basis)


class BaselineWatch:
    """One asset's baseline offset and the watch for a steady new level under an alert."""

    def __init__(self, n_signals: int) -> None:
        self.offset = np.zeros(n_signals, dtype=np.float64)
        #: The current stretch of windows under an open alert: reading times and levels.
        self._ts = np.zeros(0, np.int64)
        self._levels = np.zeros((0, n_signals))

    def observe(
        self,
        ts_ms: npt.NDArray[np.int64],
        levels: F64,
        alert_open: npt.NDArray[np.bool_],
        subspace: BaselineSubspace,
        config: RebaselineConfig,
        accept: Callable[[F64], bool] | None = None,
    ) -> int | None:
        """Feed one batch's windows of the asset (time order): reading time, mean level of
        each window (normalised, before the offset), whether its alert was open after it.

        ``accept(offset)``, when given, has the last word: whether the asset's newest
        window, judged relative to that offset, looks normal to the model (a candidate the
        model still finds abnormal is a fault, not a new operating point).

        Returns the reading time at which the asset was re-baselined, or ``None``.
        """
        if not config.enabled or subspace.basis.shape[0] == 0:
            return None
        # Only the windows after the last one with the alert not open extend the stretch.
        closed = np.flatnonzero(~np.asarray(alert_open, dtype=np.bool_))
        if closed.size:
            self._ts = np.zeros(0, np.int64)
            self._levels = np.zeros((0, self.offset.size))
        start = int(closed[-1]) + 1 if closed.size else 0
        self._ts = np.concatenate([self._ts, np.asarray(ts_ms[start:], np.int64)])
        self._levels = np.concatenate([self._levels, np.asarray(levels[start:], np.float64)])
        if not self._ts.size:
            return None
        now = int(self._ts[-1])
        # Keep just over one stretch of history; judge steadiness once per batch.
        old = np.flatnonzero(self._ts < now - config.stable_for_ms)
        drop = min(int(old[-1]) + 1 if old.size else 0, self._ts.size - config.min_windows)
        if drop > 0:
            self._ts, self._levels = self._ts[drop:], self._levels[drop:]
        if not self._steady(now, config):
            return None
        recent = self._levels[self._levels.shape[0] // 2 :].mean(axis=0)
        inside = subspace.inside(recent)
        outside = float(np.linalg.norm(recent - inside))
        if outside > config.max_outside_fraction * float(np.linalg.norm(recent - self.offset)):
            # A relation is broken (one signal moved alone): a fault, never a new baseline.
            return None
        if accept is not None and not accept(inside):
            return None
        self.offset = inside
        self._ts = np.zeros(0, np.int64)
        self._levels = np.zeros((0, self.offset.size))
        return now

    def _steady(self, now_ms: int, config: RebaselineConfig) -> bool:
        n = self._ts.size
        if n < config.min_windows or now_ms - int(self._ts[0]) < config.stable_for_ms:
            return False
        first, second = self._levels[: n // 2].mean(axis=0), self._levels[n // 2 :].mean(axis=0)
        shift = float(np.linalg.norm(second - self.offset))
        return float(np.linalg.norm(second - first)) <= config.steady_fraction * max(1.0, shift)

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "offset": self.offset.tolist(),
            "ts": self._ts.tolist(),
            "levels": self._levels.tolist(),
        }

    @classmethod
    def restore(cls, snap: Mapping[str, Any], n_signals: int) -> BaselineWatch:
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"baseline snapshot version {snap.get('v')} is not {SNAPSHOT_VERSION}")
        watch = cls(n_signals)
        offset = np.asarray(snap["offset"], dtype=np.float64)
        if offset.shape != (n_signals,) or not np.isfinite(offset).all():
            raise ValueError("baseline snapshot was made for another model (signals)")
        watch.offset = offset
        watch._ts = np.asarray(snap["ts"], dtype=np.int64).reshape(-1)
        watch._levels = np.asarray(snap["levels"], dtype=np.float64).reshape(-1, n_signals)
        if watch._ts.size != watch._levels.shape[0] or not np.isfinite(watch._levels).all():
            raise ValueError("baseline snapshot: times and levels differ in length or are damaged")
        return watch

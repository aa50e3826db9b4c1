"""Re-baselining inside the monitor: per-asset offsets, the steady-level watch, its notices.

The maths is :mod:`models.rebaseline`; this module wires it between the windows (offsets
applied before scoring), the alert policy (the open alert resolved as ``rebaselined``)
and the notices topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.events import AlertEvent
from alerts.notices import Notice
from alerts.policy import AlertPolicy
from common.cadence import Cadence
from common.timestamps import format_ts
from models.artifact import TrainedModel
from models.rebaseline import (
    BaselineSubspace,
    BaselineWatch,
    DriftFollower,
    FollowBasis,
    RebaselineConfig,
    follow_runs,
)

#: ``(asset, start, end)``: one asset's windows in a batch grouped by asset.
Run = tuple[str, int, int]
#: Drift following's time constant is at least this many window lengths (coarse data).
FOLLOW_WINDOWS = 8


class Baselines:
    """Every asset's baseline watch for one model."""

    def __init__(self, model: TrainedModel, config: RebaselineConfig) -> None:
        self.config = config
        self.signals = model.signals
        rows = model.metadata.get("baseline_subspace")
        n = len(model.signals)
        # A model trained before subspaces were kept can never be re-baselined.
        self.subspace = (
            BaselineSubspace(np.zeros((0, n)))
            if rows is None
            else BaselineSubspace.from_json(rows, n)
        )
        self.window = model.window
        # "Slow" is never faster than what the model's window spans: at a coarse cadence the
        # time constant grows to FOLLOW_WINDOWS window lengths of the trained interval.
        cadence = Cadence.from_json(model.metadata.get("cadence") or {}).interval_ms
        span_ms = FOLLOW_WINDOWS * model.window * (cadence or 0.0)
        self.follow_ms = max(float(config.follow_ms), span_ms) if config.follow_ms else 0.0
        # What training says about following drift; a model trained before it was kept
        # follows none.
        raw = model.metadata.get("baseline_follow")
        self.follow_basis = None if raw is None else FollowBasis.from_json(raw, len(self.signals))
        self._watches: dict[str, BaselineWatch] = {}
        #: Follow every asset's run side by side (``follow_runs``); ``False`` one
        #: ``DriftFollower.follow`` per run (the same results; for benchmarks).
        self.side_by_side = True

    @property
    def enabled(self) -> bool:
        return self.config.enabled and self.subspace.basis.shape[0] > 0

    @property
    def following(self) -> bool:
        return self.enabled and self.config.follow_ms > 0 and self.follow_basis is not None

    def follow(
        self,
        runs: Sequence[Run],
        batch: npt.NDArray[np.float32],
        ts_ms: npt.NDArray[np.int64],
        levels: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """Follow each asset's slow drift of the relations: shift its windows (in place) and
        return the levels, both relative to the drift followed up to each window."""
        basis = self.follow_basis
        if basis is None or not self.following:
            return levels
        followers: list[DriftFollower] = []
        bounds: list[tuple[int, int]] = []
        for asset, start, end in runs:
            watch = self._watches.get(asset)
            if watch is None:
                watch = self._watches[asset] = BaselineWatch(len(self.signals))
            if watch.follower is None:
                watch.follower = DriftFollower(len(self.signals), self.window)
            followers.append(watch.follower)
            bounds.append((start, end))
        # Every asset's run side by side: the same as one DriftFollower.follow per run.
        if self.side_by_side:
            offsets = follow_runs(
                followers, bounds, ts_ms, levels, self.subspace, basis, self.follow_ms
            )
        else:
            offsets = np.zeros_like(levels)
            for follower, (start, end) in zip(followers, bounds, strict=True):
                offsets[start:end] = follower.follow(
                    ts_ms[start:end], levels[start:end], self.subspace, basis, self.follow_ms
                )
        batch -= offsets[:, None, :].astype(np.float32)
        return levels - offsets

    def apply(self, runs: Sequence[Run], batch: npt.NDArray[np.float32]) -> None:
        """Shift each asset's windows (``runs``: asset, start, end) by its offset, in place."""
        if not self._watches:
            return
        for asset, start, end in runs:
            watch = self._watches.get(asset)
            if watch is not None and watch.offset.any():
                batch[start:end] -= watch.offset.astype(np.float32)

    def watch(
        self,
        runs: Sequence[Run],
        ts_ms: npt.NDArray[np.int64],
        levels: npt.NDArray[np.float64],
        alert_open: npt.NDArray[np.bool_],
        policy: AlertPolicy,
        now_ms: int,
        accept: Callable[[str, npt.NDArray[np.float64]], bool] | None = None,
    ) -> tuple[list[AlertEvent], list[Notice]]:
        """Watch the scored windows; re-baseline assets whose open alert sits on a steady
        new operating point. Returns the resolve events and the notices."""
        cfg = self.config
        events: list[AlertEvent] = []
        notices: list[Notice] = []
        if not self.enabled:
            return events, notices
        if not alert_open.any() and not self._watches:
            return events, notices
        for asset, start, end in runs:
            if asset in cfg.refuse_assets:
                continue
            watch = self._watches.get(asset)
            if watch is None:
                if not alert_open[start:end].any():
                    continue
                watch = self._watches[asset] = BaselineWatch(len(self.signals))
            check = None if accept is None else partial(accept, asset)
            at = watch.observe(
                ts_ms[start:end], levels[start:end], alert_open[start:end], self.subspace, cfg,
                check,
            )  # fmt: skip
            if at is None:
                continue
            resolved = policy.resolve(asset, ts_ms=at, now_ms=now_ms, reason="rebaselined")
            events.extend(resolved)
            notices.append(
                Notice(
                    notice="rebaselined",
                    asset=asset,
                    at=format_ts(at),
                    detail={
                        "alert_ids": [e.alert_id for e in resolved],
                        "offset": [round(float(v), 6) for v in watch.offset],
                        "signals": list(self.signals),
                        "stable_for_ms": cfg.stable_for_ms,
                    },
                )
            )
        return events, notices

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        watch = self._watches.get(asset)
        return None if watch is None else watch.snapshot()

    def restore_asset(self, asset: str, snap: Mapping[str, Any]) -> None:
        window = self.window if self.following else None
        self._watches[asset] = BaselineWatch.restore(snap, len(self.signals), window)

    def forget(self, assets: Iterable[str]) -> None:
        for asset in assets:
            self._watches.pop(asset, None)

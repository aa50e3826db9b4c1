"""The streaming form of the LSTM forecaster: one LSTM step per new reading, per asset."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from models.deep.scoring import scale_errors
from models.protocol import FloatArray

if TYPE_CHECKING:
    from models.deep.forecaster import LSTMForecasterScorer

STREAM_STATE_VERSION = 1


class ForecasterStream:
    """Scores each new reading with one LSTM step per asset, batched across assets.

    Carries ``(h, c)`` per asset in a pooled tensor, so a reading costs one LSTM step
    instead of re-running ``window - 1`` steps. The pool holds at most ``max_assets``
    assets; a new asset beyond that evicts the least recently stepped one (its state
    restarts from zero if it comes back). ``forget`` drops assets explicitly.

    Relation to :meth:`LSTMForecasterScorer.score_batch`: the score of a reading is the
    scaled squared error of the prediction made from the state *before* the reading. For an
    asset's first ``window`` readings the stream equals the window scorer exactly (both run
    the same readings from a zero state). After that they are different estimators: the
    window re-runs the last ``window - 1`` readings from zero, the stream carries state over
    the asset's whole history. With a forgetting LSTM they stay close (measured in
    ``tests/test_deep.py``), but they are not equal. Scores are NaN, and contributions zero,
    until an asset has seen ``warmup_steps`` readings (default ``window - 1``).

    Snapshots are plain arrays: ``{"version", "h", "c", "steps"}`` per asset.
    """

    def __init__(
        self,
        scorer: LSTMForecasterScorer,
        *,
        max_assets: int = 10_000,
        warmup_steps: int | None = None,
    ) -> None:
        if max_assets < 1:
            raise ValueError(f"max_assets must be at least 1, got {max_assets}")
        self.scorer = scorer
        self.max_assets = max_assets
        self.warmup_steps = scorer.window - 1 if warmup_steps is None else warmup_steps
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}")
        self._layers = scorer.arch.layers
        self._hidden = scorer.arch.hidden
        self._slots: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = []
        self._steps = np.zeros(0, dtype=np.int64)
        self.evicted_total = 0
        # Pools are asset-major (slots, layers, hidden) so a batch is one index_select.
        with torch.inference_mode():
            self._h = torch.zeros(0, self._layers, self._hidden, device=scorer.device)
            self._c = torch.zeros_like(self._h)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def assets(self) -> list[str]:
        """Assets held, least recently stepped first."""
        return list(self._slots)

    def _grow(self) -> None:
        old = self._steps.shape[0]
        new = min(self.max_assets, max(16, 2 * old))
        with torch.inference_mode():
            shape = (new - old, self._layers, self._hidden)
            self._h = torch.cat([self._h, self._h.new_zeros(shape)])
            self._c = torch.cat([self._c, self._c.new_zeros(shape)])
        self._steps = np.concatenate([self._steps, np.zeros(new - old, dtype=np.int64)])
        self._free.extend(range(new - 1, old - 1, -1))

    def _acquire(self, asset_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Slots for distinct assets, allocating (and evicting the stalest) as needed."""
        if len(asset_ids) > self.max_assets:
            raise ValueError(
                f"{len(asset_ids)} assets in one step but max_assets={self.max_assets}; "
                "raise max_assets"
            )
        slots = np.empty(len(asset_ids), dtype=np.int64)
        new: list[int] = []
        # Known assets first move to the recent end, so eviction never takes one of them.
        for i, asset in enumerate(asset_ids):
            slot = self._slots.get(asset)
            if slot is None:
                new.append(i)
            else:
                self._slots.move_to_end(asset)
                slots[i] = slot
        for i in new:
            if not self._free and self._steps.shape[0] < self.max_assets:
                self._grow()
            if self._free:
                slot = self._free.pop()
            else:
                _, slot = self._slots.popitem(last=False)
                self.evicted_total += 1
            with torch.inference_mode():
                self._h[slot] = 0.0
                self._c[slot] = 0.0
            self._steps[slot] = 0
            self._slots[asset_ids[i]] = slot
            slots[i] = slot
        return slots

    def step(
        self, asset_ids: Sequence[str], readings: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Scores one new normalised reading per entry; ``readings`` is (B, signals).

        An asset may appear more than once; its readings are taken in the order given.
        Returns scores (B,) (NaN while the asset warms up) and contributions (B, S).
        """
        x = np.ascontiguousarray(readings, dtype=np.float32)
        n_signals = self.scorer.n_signals
        if x.ndim != 2 or x.shape != (len(asset_ids), n_signals):
            raise ValueError(
                f"readings have shape {x.shape}; expected ({len(asset_ids)}, {n_signals}) "
                "(one normalised reading per asset id)"
            )
        if not np.isfinite(x).all():
            raise ValueError("readings contain NaN or inf; clean them before scoring")
        if len(set(asset_ids)) == len(asset_ids):
            return self._step_distinct(asset_ids, x)
        scores = np.full(len(asset_ids), np.nan, dtype=np.float32)
        contributions = np.zeros((len(asset_ids), n_signals), dtype=np.float32)
        # Repeated assets go in rounds: the k-th reading of an asset in the k-th round.
        seen: dict[str, int] = {}
        rounds: list[list[int]] = []
        for i, asset in enumerate(asset_ids):
            k = seen.get(asset, 0)
            seen[asset] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for positions in rounds:
            s, c = self._step_distinct([asset_ids[i] for i in positions], x[positions])
            scores[positions] = s
            contributions[positions] = c
        return scores, contributions

    def _step_distinct(
        self, asset_ids: Sequence[str], x: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        slots = self._acquire(asset_ids)
        module = self.scorer.forecaster
        device = self.scorer.device
        with torch.inference_mode():
            index = torch.from_numpy(slots).to(device)
            readings = torch.from_numpy(x).to(device)
            pred, h, c = module.step(
                readings, self._h.index_select(0, index), self._c.index_select(0, index)
            )
            self._h.index_copy_(0, index, h)
            self._c.index_copy_(0, index, c)
            errors = ((pred - readings) ** 2).float().cpu().numpy()
        seen_before = self._steps[slots]
        self._steps[slots] += 1
        scores, contributions = scale_errors(errors, self.scorer.error_scale)
        cold = seen_before < self.warmup_steps
        if cold.any():
            scores[cold] = np.nan
            contributions[cold] = 0.0
        return scores, contributions

    def forget(self, asset_ids: Sequence[str]) -> None:
        """Drops the state of these assets (unknown ids are ignored)."""
        for asset in asset_ids:
            slot = self._slots.pop(asset, None)
            if slot is not None:
                self._free.append(slot)

    def snapshot(self, asset: str) -> dict[str, npt.NDArray[Any]]:
        """The asset's state as plain arrays (copies), for checkpointing."""
        slot = self._slots.get(asset)
        if slot is None:
            raise KeyError(f"no stream state for asset {asset!r}")
        with torch.inference_mode():
            h = self._h[slot].cpu().numpy().copy()
            c = self._c[slot].cpu().numpy().copy()
        return {
            "version": np.array(STREAM_STATE_VERSION, dtype=np.int64),
            "h": h,
            "c": c,
            "steps": np.array(self._steps[slot], dtype=np.int64),
        }

    def snapshot_all(self) -> dict[str, dict[str, npt.NDArray[Any]]]:
        """Every asset's state, keyed by asset id."""
        return {asset: self.snapshot(asset) for asset in self._slots}

    def restore(self, asset: str, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Puts back a state from :meth:`snapshot` (replacing any the asset has)."""
        version = int(np.asarray(state.get("version", -1)))
        if version != STREAM_STATE_VERSION:
            raise ValueError(
                f"stream state for {asset!r} has version {version}; this code reads "
                f"version {STREAM_STATE_VERSION}; let the asset warm up afresh instead"
            )
        shape = (self._layers, self._hidden)
        h = np.asarray(state["h"], dtype=np.float32)
        c = np.asarray(state["c"], dtype=np.float32)
        if h.shape != shape or c.shape != shape:
            raise ValueError(
                f"stream state for {asset!r} has h {h.shape}, c {c.shape}; this model "
                f"needs {shape} (was it saved by another model?)"
            )
        slot = int(self._acquire([asset])[0])
        with torch.inference_mode():
            self._h[slot] = torch.from_numpy(h).to(self.scorer.device)
            self._c[slot] = torch.from_numpy(c).to(self.scorer.device)
        self._steps[slot] = int(np.asarray(state["steps"]))

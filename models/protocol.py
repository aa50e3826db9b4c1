"""The small protocols every scorer and threshold follows.

Scoring is batch-first: the run loop gathers every window that became ready in one
consumed batch, across all assets, and makes one ``score_batch`` call.

Windows handed to a scorer are already normalised with the scorer's own
``Normalizer`` (the stream state normalises each reading once, when it arrives).

Online learning (:mod:`models.online`) needs more than scoring: a scorer that offers it
also follows the optional capability :class:`OnlineLearning` (copy, fine-tune, judge
held-out windows), so the learner never asks which class a scorer is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ErrorArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Normalizer:
    """Per-signal centring and scaling learnt from normal history.

    >>> import numpy as np
    >>> n = Normalizer.fit(np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32))
    >>> n.transform(np.array([[2.0, 20.0]], dtype=np.float32)).tolist()
    [[0.0, 0.0]]
    """

    mean: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, data: npt.ArrayLike, *, min_scale: float = 1e-6) -> Normalizer:
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(
                f"need a 2-D array of rows x signals with at least one row, got {arr.shape}"
            )
        mean = np.nanmean(arr, axis=0)
        std = np.nanstd(arr, axis=0)
        # A constant signal (a set-point) would divide by zero; keep it centred, scale 1.
        scale = np.where(np.isfinite(std) & (std > min_scale), std, 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def transform(self, data: npt.ArrayLike) -> FloatArray:
        return ((np.asarray(data, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Sequence[float]]) -> Normalizer:
        return cls(
            np.asarray(obj["mean"], dtype=np.float32), np.asarray(obj["scale"], dtype=np.float32)
        )


def contribution_shares(per_signal: npt.ArrayLike) -> FloatArray:
    """Each signal's share of a window's score: rows (B, S) of non-negative parts summing to 1.

    A row whose parts are all zero (a perfect reconstruction) is shared out evenly, so every
    scorer returns contributions of the same shape and meaning.

    >>> contribution_shares([[3.0, 1.0], [0.0, 0.0]]).tolist()
    [[0.75, 0.25], [0.5, 0.5]]
    """
    parts = np.asarray(per_signal, dtype=np.float64)
    total = parts.sum(axis=1, keepdims=True)
    uniform = np.full_like(parts, 1.0 / parts.shape[1])
    shares: FloatArray = np.divide(parts, total, out=uniform, where=total > 0).astype(np.float32)
    return shares


@runtime_checkable
class Scorer(Protocol):
    """Judges windows of normalised readings.

    ``fit`` takes normal history as a list of contiguous segments, each an array of
    shape (rows, signals) that is *already normalised*; windows never span two segments.
    ``score_batch`` takes windows of shape (batch, window, signals) and returns a score per
    window (higher is more abnormal) and a contribution per signal (batch, signals),
    non-negative and summing to 1 per row, telling which signals explain the score.

    Persistence never pickles: ``get_config`` gives JSON-able hyper-parameters (including
    ``n_signals``), ``state_tensors`` gives every learnt number as named arrays (saved with
    safetensors), and ``from_state`` rebuilds an equal scorer from those two.

    ``fit`` returns a JSON-able dict of training metrics (losses, epochs, seconds).
    """

    name: str
    window: int

    def fit(self, segments: Sequence[FloatArray], *, seed: int = 0) -> dict[str, Any]: ...

    def score_batch(self, windows: FloatArray) -> tuple[FloatArray, FloatArray]: ...

    def get_config(self) -> dict[str, Any]: ...

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]: ...

    @classmethod
    def from_state(
        cls, config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]
    ) -> Scorer: ...


@runtime_checkable
class OnlineLearning(Protocol):
    """The optional capability online learning needs: copy, fine-tune, held-out error.

    ``copy`` gives an independent scorer through the same export and import that artifacts
    use (``get_config`` + ``state_tensors`` → ``from_state``, never pickled), keeping the
    running process's own choices (device, inference options). ``fine_tune`` continues
    learning from recent normal windows (batch, window, signals) *in place* (the learner
    fine-tunes a copy) and returns JSON-able metrics; a scorer without an optimiser may
    ignore ``epochs``, ``lr_scale`` and ``seed``. ``window_errors`` gives one held-out error
    per window (lower is better) on a scale two models of the same class share, which a
    score is not when each model scales it by its own training data; ``pooled_error``
    folds those into one positive number, so that the ratio of two models' pooled errors
    says which fits the held-out windows better.

    A scorer whose score two models cannot compare (Half-Space Trees) leaves this out.
    Methods only, so ``issubclass`` works on registered classes.
    """

    def copy(self) -> Self: ...

    def fine_tune(
        self, windows: FloatArray, *, epochs: int, lr_scale: float, seed: int
    ) -> dict[str, Any]: ...

    def window_errors(self, windows: FloatArray) -> ErrorArray: ...

    def pooled_error(self, window_errors: ErrorArray) -> float: ...


@runtime_checkable
class OnlineScorer(Scorer, OnlineLearning, Protocol):
    """A :class:`Scorer` with the :class:`OnlineLearning` capability."""


@runtime_checkable
class WindowStream(Protocol):
    """Scores a monitor's ready windows from state carried per asset (one step each).

    ``score_windows`` takes windows (B, window, signals) grouped by asset, each asset's in
    time order, and returns what the scorer's ``score_batch`` would return for them (or a
    close estimate of it), at the cost of the newest reading only; ``unshifted`` and
    ``shifts`` are the windows before a per-window offset the caller subtracted, and those
    offsets (B, S); ``forget`` drops assets'
    state; ``snapshot`` and ``restore`` move one asset's state as plain arrays.
    """

    def score_windows(
        self,
        asset_ids: Sequence[str],
        windows: npt.ArrayLike,
        *,
        unshifted: npt.ArrayLike | None = None,
        shifts: npt.ArrayLike | None = None,
    ) -> tuple[FloatArray, FloatArray]: ...

    def forget(self, asset_ids: Sequence[str]) -> None: ...

    def snapshot(self, asset: str) -> dict[str, npt.NDArray[Any]]: ...

    def restore(self, asset: str, state: Mapping[str, npt.NDArray[Any]]) -> None: ...


@runtime_checkable
class Streaming(Protocol):
    """The optional capability to serve windows as a stream (the LSTM forecaster's
    ``ForecasterStream``): what the monitor uses when ``model.stream`` is on."""

    def stream(self, *, max_assets: int = ..., warmup_steps: int | None = ...) -> WindowStream: ...

"""The quality-predictor protocol and the rows it may use.

A predictor maps the recent process history of one asset to the quality value now. Inputs
are normalised readings ``x`` (rows, signals) in time order and, at fit, the normalised
target ``y`` (rows,); a prediction for row ``t`` uses rows ``t - history + 1 … t`` of
``x`` only, never ``y``. ``history`` is 1 for a model of the current readings, more for
lagged and window models (dead time, transport delay). Rows whose history crosses a
segment boundary (another asset, a long gap) or holds a missing reading get no prediction.

Which rows train and which validate is given as end rows (``train_rows``, ``val_rows``):
the caller splits in time order, so validation is always later than training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]
Progress = Callable[[dict[str, float]], None]


@runtime_checkable
class QualityPredictor(Protocol):
    """Fit on end rows, predict at end rows; export as config + tensors (no pickle)."""

    name: str
    n_signals: int

    @property
    def history(self) -> int:
        """Rows of history one prediction reads (the current row included)."""
        ...

    def fit(
        self,
        x: FloatArray,
        y: FloatArray,
        train_rows: IndexArray,
        val_rows: IndexArray,
        *,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Learn ``y[t]`` from ``x[t - history + 1 : t + 1]``; validation picks the
        hyper-parameter or the epoch. Returns JSON-able training metrics."""
        ...

    def predict(self, x: FloatArray, rows: IndexArray) -> FloatArray:
        """Normalised predictions at end rows ``rows`` (each with its full history)."""
        ...

    def get_config(self) -> dict[str, Any]:
        """JSON-able: ``name``, ``n_signals`` and every hyper-parameter."""
        ...

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        """Every learnt number, as numpy arrays."""
        ...

    @classmethod
    def from_state(cls, config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]) -> Self:
        """The predictor that ``get_config`` and ``state_tensors`` describe (strict)."""
        ...


def predictable_rows(
    x: npt.ArrayLike,
    history: int,
    segments: Sequence[tuple[int, int]],
    *,
    y: npt.ArrayLike | None = None,
) -> IndexArray:
    """End rows whose ``history`` rows lie in one segment with every reading present.

    With ``y`` given, rows whose target is missing are left out too (for fitting).

    >>> x = np.array([[1.0], [2.0], [np.nan], [4.0], [5.0], [6.0]])
    >>> predictable_rows(x, 2, [(0, 6)]).tolist()
    [1, 4, 5]
    >>> predictable_rows(x, 2, [(0, 4), (4, 6)]).tolist()
    [1, 5]
    """
    arr = np.asarray(x, dtype=np.float64)
    finite = np.asarray(np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1), dtype=bool)
    out: list[IndexArray] = []
    for start, end in segments:
        ok = finite[start:end].astype(np.int64)
        if ok.size < history:
            continue
        # Rows t with all of t-history+1..t present: a running sum over `history` rows.
        run = np.convolve(ok, np.ones(history, dtype=np.int64), mode="valid")
        ends = np.flatnonzero(run == history) + start + history - 1
        out.append(ends.astype(np.int64))
    rows = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    if y is not None:
        rows = rows[np.isfinite(np.asarray(y, dtype=np.float64)[rows])]
    return rows


def check_tensors(
    name: str, tensors: Mapping[str, npt.NDArray[Any]], expected: Mapping[str, tuple[int, ...]]
) -> None:
    """Refuse tensors with missing, extra or wrongly shaped entries (strict loading)."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tensors[k].shape != expected[k])
    if missing or extra or wrong:
        raise ValueError(
            f"{name} tensors do not match its config (missing {missing}, unexpected {extra}, "
            f"wrong shape {wrong})"
        )

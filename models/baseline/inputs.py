"""Checks on what the baseline scorers take in: windows, training segments, saved state.

Scoring a window of the wrong length or with a NaN in it is a caller bug (the stream state
never emits one), so every check fails loudly with what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def check_windows(windows: npt.ArrayLike, window: int, n_signals: int) -> F64:
    """Return ``windows`` as float64 after checking their shape and that they are finite.

    Shared by the baseline scorers: scoring a window of the wrong length or with a NaN in it
    is a caller bug (the stream state never emits one), so it fails loudly.
    """
    arr = np.asarray(windows, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != window or arr.shape[2] != n_signals:
        raise ValueError(
            f"windows must have shape (batch, {window}, {n_signals}) "
            f"(batch, window, signals); got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(
            "windows contain NaN or infinite values; clean readings (carry values forward) "
            "before scoring"
        )
    return arr


def check_segments(segments: Sequence[npt.ArrayLike], n_signals: int) -> list[F64]:
    """Return the training segments as float64 arrays after checking shape and finiteness."""
    out: list[F64] = []
    for i, seg in enumerate(segments):
        arr = np.asarray(seg, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != n_signals:
            raise ValueError(f"segment {i} must have shape (rows, {n_signals}); got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(
                f"segment {i} contains NaN or infinite values; fill or drop them before "
                "fitting (models.training.train_model does this)"
            )
        out.append(arr)
    return out


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def config_int(config: Mapping[str, Any], key: str) -> int:
    if key not in config:
        raise ValueError(f"scorer config lacks {key!r}; the artifact is incomplete")
    return positive_int(config[key], f"config[{key!r}]")


def state_tensor(
    tensors: Mapping[str, npt.NDArray[Any]], key: str, shape: tuple[int, ...], kind: str
) -> npt.NDArray[Any]:
    if key not in tensors:
        raise ValueError(f"scorer state lacks tensor {key!r}; the artifact is incomplete")
    arr = np.asarray(tensors[key])
    if arr.shape != shape or arr.dtype.kind != kind:
        raise ValueError(
            f"tensor {key!r} has shape {arr.shape} and dtype {arr.dtype}; "
            f"the config needs shape {shape} and dtype kind {kind!r}"
        )
    return arr

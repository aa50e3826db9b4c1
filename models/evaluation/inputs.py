"""What every metric takes: aligned 0/1 columns, row timestamps and asset ids, checked once and
then handed out one asset at a time (``_per_asset``), so no metric re-checks or re-splits them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Metric = float | int | str | None


def _as_binary(name: str, values: npt.ArrayLike, rows: int | None = None) -> BoolArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1 per row, got shape {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but labels has {rows}; pass arrays aligned row by row"
        )
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be bool or numeric 0/1, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)  # NaN is not 0 and not 1, so it lands here too
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must hold only 0 and 1; row {first} holds {arr[first]!r} "
            "(threshold scores into 0/1 first, and fill missing rows with 0)"
        )
    return np.asarray(arr == 1)


def _as_ts(ts_ms: npt.ArrayLike, rows: int) -> IntArray:
    arr = np.asarray(ts_ms)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise ValueError(
            f"ts_ms must be a 1-D array with one timestamp per row ({rows}), got shape {arr.shape}"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("ts_ms holds NaN or infinity; every row needs a timestamp")
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"ts_ms must be integer epoch milliseconds, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_time_order(ts: IntArray, asset: str | None) -> None:
    if ts.size > 1:
        back = np.flatnonzero(np.diff(ts) < 0)
        if back.size:
            where = f" of asset {asset!r}" if asset is not None else ""
            raise ValueError(
                f"ts_ms must not decrease within an asset: row {int(back[0]) + 1}{where} is "
                "earlier than the row before it; sort by (asset, ts_ms) first"
            )


def _groups(assets: npt.ArrayLike | None, rows: int) -> Iterator[tuple[str | None, IntArray]]:
    """Yield (asset, row indices in their original order) per asset; one group if no assets."""
    if assets is None:
        yield None, np.arange(rows, dtype=np.int64)
        return
    arr = np.asarray(assets)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise ValueError(
            f"assets must be a 1-D array with one asset id per row ({rows}), got shape {arr.shape}"
        )
    keys, inverse = np.unique(arr, return_inverse=True)
    # A stable sort keeps each asset's rows in their given (time) order.
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=keys.size))))
    for i, key in enumerate(keys):
        yield str(key), order[bounds[i] : bounds[i + 1]]


@dataclass(frozen=True)
class _Inputs:
    labels: BoolArray
    predictions: BoolArray
    ts: IntArray | None
    changepoints: BoolArray | None


def _prepare(
    labels: npt.ArrayLike,
    predictions: npt.ArrayLike,
    ts_ms: npt.ArrayLike | None,
    changepoints: npt.ArrayLike | None,
    tolerance_ms: int,
) -> _Inputs:
    lab = _as_binary("labels", labels)
    pred = _as_binary("predictions", predictions, lab.size)
    ts = _as_ts(ts_ms, lab.size) if ts_ms is not None else None
    cps = _as_binary("changepoints", changepoints, lab.size) if changepoints is not None else None
    if tolerance_ms < 0:
        raise ValueError(f"tolerance_ms must be 0 or more, got {tolerance_ms}")
    if tolerance_ms > 0 and ts is None:
        raise ValueError("tolerance_ms needs ts_ms: pass the row timestamps, or tolerance_ms=0")
    return _Inputs(lab, pred, ts, cps)


@dataclass(frozen=True)
class _AssetRows:
    """One asset's rows (every row when there are no assets), in their given time order."""

    asset: str | None
    rows: IntArray  # where these rows stand in the inputs
    labels: BoolArray
    predictions: BoolArray
    ts: IntArray | None
    changepoints: BoolArray | None


def _per_asset(inputs: _Inputs, assets: npt.ArrayLike | None) -> Iterator[_AssetRows]:
    for asset, rows in _groups(assets, inputs.labels.size):
        ts = inputs.ts[rows] if inputs.ts is not None else None
        if ts is not None:
            _check_time_order(ts, asset)
        cps = inputs.changepoints[rows] if inputs.changepoints is not None else None
        yield _AssetRows(asset, rows, inputs.labels[rows], inputs.predictions[rows], ts, cps)

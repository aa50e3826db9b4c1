"""Training: from a table of historical readings to a :class:`TrainedModel`.

The history arrives as one array of rows x signals, with ``segments`` marking the row
ranges that are contiguous in time (one per asset, or split at time gaps) and ``exclude``
marking rows known to be abnormal. Each segment's last ``validation_fraction`` of rows (in
time order) is held out; the rest trains. Excluded rows and rows that are still missing a
value after forward-filling cut a segment into *runs*: windows live inside one run, never
across a segment boundary, an excluded row or the train/validation split.

The normaliser is fitted on training rows only; scores of validation windows become the
calibration scores the threshold starts from. Where the validation part is thinner than a
tail needs, a closed-form scorer (PCA) adds its training windows: as scored in-sample when
it has enough readings per feature for that to be honest, else as scored by a blocked
cross-fit (each part of the training rows by a model fitted on the others).
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.cadence import Cadence
from models.artifact import TrainedModel
from models.health import SensorHealthProfile
from models.protocol import FloatArray, Normalizer, Scorer
from models.rebaseline import BaselineSubspace, FollowBasis
from models.registry import DEFAULT_SCORER, create_scorer, scorer_class

# Fewer validation windows than this make a poor threshold start; training windows (a
# little optimistic, but plentiful) are used instead and the metadata says so.
MIN_CALIBRATION_WINDOWS = 100
#: The calibration an adaptive threshold's tail needs at its default level (SPOT/DSPOT's
#: ``min_calibration`` at level 0.98). A validation part thinner than this is pooled with
#: the training windows when the scorer's training scores are as honest as held-out ones.
TAIL_CALIBRATION_WINDOWS = 500
#: ... which a scorer says with ``unbiased_in_sample_rows``: training scores are unbiased
#: once the training readings number at least that many per feature (PCA: a covariance).
#: Below that, such a scorer (fitted in closed form, so a refit is cheap) calibrates on a
#: blocked cross-fit instead: each of this many contiguous parts of the training rows is
#: scored by a model fitted on the others, as held-out data would be.
CROSS_FIT_FOLDS = 5
#: A deep scorer trains on at most about this many windows (see ``train_stride``).
MAX_TRAIN_WINDOWS = 20_000
# Calibration and score summaries use at most this many windows, spread evenly in time,
# so that a long history neither takes long to score nor bloats model.json.
MAX_CALIBRATION_WINDOWS = 10_000
SCORE_CHUNK = 2048

Progress = Callable[[dict[str, Any]], None]


def _check_ranges(segments: Sequence[tuple[int, int]], n_rows: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i, seg in enumerate(segments):
        try:
            start, end = (int(v) for v in seg)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"segment {i} must be a (start, end) pair of row numbers") from exc
        if not 0 <= start < end <= n_rows:
            raise ValueError(
                f"segment {i} = ({start}, {end}) is not a non-empty row range inside 0..{n_rows}"
            )
        out.append((start, end))
    ordered = sorted(out)
    for (_, end_a), (start_b, _) in itertools.pairwise(ordered):
        if start_b < end_a:
            raise ValueError(
                f"segments overlap (one ends at row {end_a}, the next starts at {start_b}); "
                "each row belongs to at most one segment"
            )
    return out


def window_starts(
    segments: Sequence[tuple[int, int]], window: int, stride: int = 1
) -> npt.NDArray[np.int64]:
    """First row of every window inside the ``(start, end)`` row ranges, in order."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    parts = [
        np.arange(start, end - window + 1, stride, dtype=np.int64)
        for start, end in segments
        if end - start >= window
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def windows_from_segments(
    values: npt.ArrayLike, segments: Sequence[tuple[int, int]], window: int, stride: int = 1
) -> FloatArray:
    """Every window of ``window`` rows inside each ``(start, end)`` row range (end exclusive).

    Windows step by ``stride`` rows from each range's start and never span two ranges; a
    range shorter than ``window`` gives none. Returns float32 of shape (n, window, signals).

    >>> import numpy as np
    >>> v = np.arange(10, dtype=np.float32).reshape(5, 2)
    >>> windows_from_segments(v, [(0, 3), (3, 5)], window=2)[:, :, 0].tolist()
    [[0.0, 2.0], [2.0, 4.0], [6.0, 8.0]]
    """
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"values must be rows x signals (2-D), got shape {arr.shape}")
    ranges = _check_ranges(segments, arr.shape[0])
    parts = [
        np.lib.stride_tricks.sliding_window_view(arr[start:end], window, axis=0)[::stride]
        for start, end in ranges
        if end - start >= window
    ]
    if not parts:
        return np.zeros((0, window, arr.shape[1]), np.float32)
    # sliding_window_view puts the window axis last: (n, signals, window) -> (n, window, signals)
    return np.ascontiguousarray(np.concatenate(parts, axis=0).transpose(0, 2, 1))


def _forward_fill(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Carry each signal's last value down over NaNs; NaNs before its first value stay."""
    present = ~np.isnan(rows)
    last = np.where(present, np.arange(rows.shape[0])[:, None], 0)
    np.maximum.accumulate(last, axis=0, out=last)
    return rows[last, np.arange(rows.shape[1])[None, :]]


def _carried_for(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Per row, the most readings any signal's value has been carried forward to it."""
    n = rows.shape[0]
    present = ~np.isnan(rows)
    last = np.maximum.accumulate(np.where(present, np.arange(n)[:, None], -1), axis=0)
    carried: npt.NDArray[np.int64] = (np.arange(n)[:, None] - last).max(axis=1, initial=0)
    return carried


@dataclass
class _Runs:
    """Clean contiguous row blocks of one role (training or validation), with counts.

    ``stale_limit`` (``None``: no limit) is the monitor's ``window.stale_limit``: a row
    where a signal's value has been carried forward for more readings than that is one
    the monitor would not score a window at, so training splits there too, rather than
    learn a long forward-filled stretch (a sensor offline for hours) as a flat normal."""

    window: int
    stale_limit: int | None = None
    blocks: list[npt.NDArray[np.float64]] = field(default_factory=list)
    rows: int = 0
    excluded_rows: int = 0
    stale_rows: int = 0
    filled_values: int = 0
    dropped_rows: int = 0
    short_rows: int = 0

    def add(self, rows: npt.NDArray[np.float64], keep: npt.NDArray[np.bool_]) -> None:
        """Split ``rows`` at excluded rows (``~keep``) and stale rows; clean each piece."""
        self.rows += rows.shape[0]
        self.excluded_rows += int((~keep).sum())
        if self.stale_limit is not None and rows.shape[0]:
            stale = keep & (_carried_for(rows) > self.stale_limit)
            self.stale_rows += int(stale.sum())
            keep = keep & ~stale
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            piece = rows[start:end]
            missing = np.isnan(piece)
            filled = _forward_fill(piece) if missing.any() else piece
            still = np.isnan(filled).any(axis=1)
            self.filled_values += int(missing.sum() - np.isnan(filled).sum())
            # Rows still missing a value are a prefix (before some signal's first value).
            first_ok = int(np.argmin(still)) if not still.all() else filled.shape[0]
            self.dropped_rows += first_ok
            clean = filled[first_ok:]
            if clean.shape[0] >= self.window:
                self.blocks.append(clean)
            else:
                self.short_rows += clean.shape[0]

    @property
    def n_windows(self) -> int:
        return sum(b.shape[0] - self.window + 1 for b in self.blocks)

    def summary(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "excluded_rows": self.excluded_rows,
            "stale_rows": self.stale_rows,
            "filled_values": self.filled_values,
            "dropped_rows": self.dropped_rows,
            "short_run_rows": self.short_rows,
            "used_rows": sum(b.shape[0] for b in self.blocks),
            "runs": len(self.blocks),
        }


def _evenly(n_total: int, limit: int) -> npt.NDArray[np.int64]:
    if n_total <= limit:
        return np.arange(n_total, dtype=np.int64)
    return np.unique(np.linspace(0, n_total - 1, limit).round().astype(np.int64))


def _unbiased_in_sample(scorer: Scorer, blocks: Sequence[FloatArray]) -> bool:
    """Whether ``scorer``'s scores of its own training ``blocks`` are as honest as held-out
    ones: it says so (``unbiased_in_sample_rows`` per feature) and there are enough rows."""
    per_feature = getattr(scorer, "unbiased_in_sample_rows", None)
    features = getattr(scorer, "n_features", None)
    if per_feature is None or features is None:
        return False
    return sum(int(b.shape[0]) for b in blocks) >= int(per_feature) * int(features)


def cross_fit_folds(rows: int, window: int) -> int:
    """Parts a cross-fit cuts ``rows`` training rows into: ``CROSS_FIT_FOLDS``, fewer where
    parts that small would hold no whole window (never under 2).

    >>> cross_fit_folds(400, 32), cross_fit_folds(120, 32), cross_fit_folds(80, 32)
    (5, 3, 2)
    """
    return max(2, min(CROSS_FIT_FOLDS, rows // max(1, window)))


def _cross_fit_scores(
    make: Callable[[], Scorer], blocks: Sequence[FloatArray], window: int, seed: int
) -> FloatArray | None:
    """Scores of the training windows as held-out ones: the rows of ``blocks`` (in time
    order) cut into :func:`cross_fit_folds` contiguous parts, each part's windows scored by
    a fresh scorer (``make``) fitted on the rows of the other parts. None when no part
    holds a whole window.

    Contiguous parts, not shuffled rows: a slow disturbance makes neighbouring readings
    alike, and a model that saw a reading's neighbours scores it as low as one that saw
    the reading itself. A history too short for five parts of a window each is cut into
    fewer: each model then sees less of it than the one deployed, so its held-out scores
    run high, a conservative start; training's own scores would run far low (80 readings
    of 52 signals: a third of what new normal readings score).
    """
    total = sum(int(b.shape[0]) for b in blocks)
    folds = cross_fit_folds(total, window)
    edges = np.linspace(0, total, folds + 1).round().astype(np.int64).tolist()
    starts = np.cumsum([0] + [int(b.shape[0]) for b in blocks]).tolist()
    out = []
    for lo, hi in itertools.pairwise(edges):
        fit, held = [], []
        for block, start in zip(blocks, starts, strict=False):
            a = min(max(lo - start, 0), block.shape[0])
            z = min(max(hi - start, 0), block.shape[0])
            fit += [piece for piece in (block[:a], block[z:]) if piece.shape[0]]
            if z - a >= window:
                held.append(block[a:z])
        if not held or not fit:
            continue
        model = make()
        model.fit(fit, seed=seed)
        out.append(_score_blocks(model, held, window))
    return np.concatenate(out) if out else None


def _score_blocks(scorer: Scorer, blocks: Sequence[FloatArray], window: int) -> FloatArray:
    """Scores of (at most MAX_CALIBRATION_WINDOWS, evenly spread) windows of ``blocks``."""
    if not blocks:
        return np.zeros(0, np.float32)
    rows = np.concatenate(blocks, axis=0)
    bounds = np.cumsum([0] + [b.shape[0] for b in blocks]).tolist()
    starts = window_starts(list(itertools.pairwise(bounds)), window)
    chosen = starts[_evenly(starts.size, MAX_CALIBRATION_WINDOWS)]
    out = []
    offsets = np.arange(window)
    for i in range(0, chosen.size, SCORE_CHUNK):
        batch = rows[chosen[i : i + SCORE_CHUNK, None] + offsets]
        scores, _ = scorer.score_batch(np.ascontiguousarray(batch, dtype=np.float32))
        out.append(np.asarray(scores, dtype=np.float32))
    return np.concatenate(out)


def _quantiles(scores: FloatArray) -> dict[str, float]:
    if scores.size == 0:
        return {}
    q = np.quantile(scores.astype(np.float64), [0.5, 0.9, 0.99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(scores.max())}


def _accepts_progress(fit: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fit).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "progress" or p.kind is p.VAR_KEYWORD for p in params)


def train_model(
    values: npt.ArrayLike,
    signals: Sequence[str],
    *,
    segments: Sequence[tuple[int, int]] | None = None,
    exclude: npt.ArrayLike | None = None,
    scorer: str = DEFAULT_SCORER,
    window: int = 32,
    validation_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    data_summary: Mapping[str, Any] | None = None,
    cadence: Mapping[str, Any] | None = None,
    stale_limit: int | None = None,
    **hyper: Any,
) -> TrainedModel:
    """Fit scorer ``scorer`` on normal history and return the trained model.

    ``values`` (rows x signals, raw units, NaN = missing) lists rows in time order within
    each of ``segments`` (half-open ``(start, end)`` row ranges; default: all rows form one
    segment). Rows flagged in ``exclude`` (known abnormal) are neither trained on nor used
    for calibration. Missing values are carried forward within a run; rows before a
    signal's first value are dropped (both counted in ``metadata["data"]``).
    ``data_summary`` (assets, time range, source file...) is copied into
    ``metadata["data"]``; ``cadence`` (the sampling intervals, ``Table.cadence()``) into
    ``metadata["cadence"]``, where the monitor reads each asset's interval;
    ``stale_limit`` (the monitor's ``window.stale_limit``; ``None``, no limit) the most
    readings a value is carried forward before the row is left out, as the monitor leaves
    such windows unscored; ``hyper`` goes to the scorer's constructor.

    ``progress`` receives ``{"stage": "prepared", ...}`` before fitting, the scorer's own
    events while it fits (the deep scorers send ``epoch``, ``loss``, ``val_loss``) and
    ``{"stage": "calibrated", ...}`` at the end.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> model = train_model(rng.normal(size=(600, 3)), ["a", "b", "c"], window=8)
    >>> model.name, model.window, model.calibration_scores.shape
    ('pca', 8, (586,))
    >>> model.metadata["calibration"]["source"]  # 113 held-out windows are too few alone
    'training+validation'
    """
    started = time.perf_counter()
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"values must be rows x signals (2-D), got shape {arr.shape}")
    n_rows, n_signals = arr.shape
    names = [str(s) for s in signals]
    if len(names) != n_signals:
        raise ValueError(
            f"values have {n_signals} columns but {len(names)} signal names were given; "
            "give one name per column, in column order"
        )
    if n_rows == 0:
        raise ValueError("no rows to train on: the history is empty")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of readings, got {window!r}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ranges = _check_ranges([(0, n_rows)] if segments is None else segments, n_rows)
    if exclude is None:
        keep = np.ones(n_rows, dtype=bool)
    else:
        excluded = np.asarray(exclude)
        if excluded.shape != (n_rows,) or excluded.dtype != np.bool_:
            raise ValueError(
                f"exclude must be a boolean array with one entry per row ({n_rows}), "
                f"got dtype {excluded.dtype} and shape {excluded.shape}"
            )
        keep = ~excluded
    arr[~np.isfinite(arr)] = np.nan

    train, val = _Runs(window, stale_limit), _Runs(window, stale_limit)
    for start, end in ranges:
        n_val = int((end - start) * validation_fraction)
        split = end - n_val
        train.add(arr[start:split], keep[start:split])
        val.add(arr[split:end], keep[split:end])

    if not train.blocks:
        usable = train.summary()
        never_seen = [
            name
            for j, name in enumerate(names)
            if not np.isfinite(arr[np.concatenate([np.arange(a, b) for a, b in ranges]), j]).any()
        ]
        hint = f" Signals with no value at all: {never_seen}." if never_seen else ""
        if usable["stale_rows"] and stale_limit is not None:
            gaps = [
                name
                for j, name in enumerate(names)
                if (_carried_for(arr[:, j : j + 1]) > stale_limit).mean() > 0.25
            ]
            if gaps:
                hint += (
                    f" Signals missing for more than {stale_limit} readings in a row over much "
                    f"of the history: {gaps} (reported less often than the others? The "
                    "monitor does not score a window once a value has been carried that "
                    "long: raise window.stale_limit, or leave them out of the file)."
                )
        found = f"{Cadence.from_json(cadence).describe()}, " if cadence else ""
        raise ValueError(
            f"too few usable rows for window={window}: no run of at least {window} consecutive "
            f"clean training rows ({found}{n_rows} rows in {len(ranges)} segments; "
            f"training rows {usable['rows']}, excluded "
            f"{usable['excluded_rows']}, values carried forward past the stale limit "
            f"{usable['stale_rows']}, dropped for missing values {usable['dropped_rows']}, "
            f"in runs shorter than the window {usable['short_run_rows']}).{hint} Give more "
            "history, a shorter window or a smaller validation_fraction"
        )

    normalizer = Normalizer.fit(np.concatenate(train.blocks, axis=0))
    # The directions normal operation moves in: what re-baselining may absorb.
    subspace = BaselineSubspace.fit(normalizer.transform(np.concatenate(train.blocks, axis=0)))
    train_blocks = [normalizer.transform(b) for b in train.blocks]
    val_blocks = [normalizer.transform(b) for b in val.blocks]
    n_train_windows = train.n_windows
    n_val_windows = val.n_windows
    if progress is not None:
        progress(
            {
                "stage": "prepared",
                "train_windows": n_train_windows,
                "validation_windows": n_val_windows,
            }
        )

    # Long histories: a deep model trains on every k-th window so that one fit sees at most
    # MAX_TRAIN_WINDOWS (neighbouring windows share all but one reading, so little is lost,
    # and a day of 1 s readings from a few pumps otherwise takes tens of minutes on a CPU).
    if (
        "train_stride" not in hyper
        and n_train_windows > MAX_TRAIN_WINDOWS
        and "train_stride" in inspect.signature(scorer_class(scorer)).parameters
    ):
        hyper = {**hyper, "train_stride": math.ceil(n_train_windows / MAX_TRAIN_WINDOWS)}
    model = create_scorer(scorer, n_signals, window, **hyper)
    if progress is not None and _accepts_progress(model.fit):
        fit_fn: Callable[..., dict[str, Any]] = model.fit
        fit_metrics = fit_fn(train_blocks, seed=seed, progress=progress)
    else:
        fit_metrics = model.fit(train_blocks, seed=seed)

    train_scores = _score_blocks(model, train_blocks, window)
    val_scores = _score_blocks(model, val_blocks, window)
    thin = n_val_windows < TAIL_CALIBRATION_WINDOWS
    honest = _unbiased_in_sample(model, train_blocks)
    short = (
        f"{n_val_windows} validation windows are fewer than a tail needs "
        f"({TAIL_CALIBRATION_WINDOWS})"
    )
    cross = None
    if thin and not honest and hasattr(model, "unbiased_in_sample_rows"):
        # Too few readings per feature for honest training scores (a covariance of 52
        # signals from 400 readings scores them ~15 % low, and a slow disturbance makes the
        # next hours score higher still): the training windows are scored as held out.
        cross = _cross_fit_scores(
            lambda: create_scorer(scorer, n_signals, window, **hyper), train_blocks, window, seed
        )
    if thin and honest:
        # A short history: a tail fitted to a few hundred held-out windows under-reaches
        # (measured on univariate streams: thresholds under the normal maximum, a false
        # alert every day or two). Where training scores are as honest as held-out ones,
        # every window calibrates.
        calibration = np.concatenate([train_scores, val_scores])
        source = "training+validation"
        note = (
            f"{short}; calibrated on the training windows too, whose scores a {scorer} "
            "model does not bias"
        )
    elif cross is not None:
        calibration = np.concatenate([cross, val_scores])
        source = "cross-fit+validation"
        readings = sum(b.shape[0] for b in train_blocks)
        note = (
            f"{short} and {readings} training readings too few for "
            f"{getattr(model, 'n_features', n_signals)} features to score honestly; the "
            f"training windows were scored by {cross_fit_folds(readings, window)} models, "
            "each fitted without the part it scored"
        )
    elif n_val_windows >= MIN_CALIBRATION_WINDOWS:
        calibration, source, note = val_scores, "validation", ""
    else:
        calibration, source = train_scores, "training"
        note = (
            f"only {n_val_windows} validation windows (fewer than {MIN_CALIBRATION_WINDOWS}); "
            "calibrated on training windows, whose scores run a little low, so the first "
            "thresholds may be tight"
        )
    if progress is not None:
        progress({"stage": "calibrated", "source": source, "windows": int(calibration.size)})

    metadata: dict[str, Any] = {
        "training": {
            "scorer": scorer,
            "hyper": dict(hyper),
            "seed": seed,
            "validation_fraction": validation_fraction,
            "train_windows": n_train_windows,
            "validation_windows": n_val_windows,
            "fit": fit_metrics,
            "train_score": _quantiles(train_scores),
            "validation_score": _quantiles(val_scores),
            "seconds": time.perf_counter() - started,
        },
        "calibration": {
            "source": source,
            "windows": {
                "validation": n_val_windows,
                "training": n_train_windows,
                "training+validation": n_train_windows + n_val_windows,
                "cross-fit+validation": int(calibration.size),
            }[source],
            "kept": int(calibration.size),
            "note": note,
        },
        "data": {
            **dict(data_summary or {}),
            "rows": n_rows,
            "segments": len(ranges),
            "train": train.summary(),
            "validation": val.summary(),
        },
    }
    if cadence is not None:
        metadata["cadence"] = dict(cadence)
    metadata["baseline_subspace"] = subspace.to_json()
    follow = FollowBasis.fit(train_blocks, subspace, window)
    if follow is not None:
        metadata["baseline_follow"] = follow.to_json()
    # Sensor health learns from the raw readings of the same history (known-bad rows out).
    raw = arr.copy()
    raw[~keep] = np.nan
    metadata["sensor_health"] = SensorHealthProfile.fit(raw, ranges, names).to_json()
    return TrainedModel.create(model, names, normalizer, calibration, metadata)

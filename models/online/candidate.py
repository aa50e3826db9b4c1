"""Making a candidate: fine-tune a copy of the serving scorer, then judge it on held-out windows.

Runs off the scoring path (in the learner's background thread). The scorer is reached only
through :class:`models.protocol.OnlineScorer`: ``fine_tune``, ``window_errors`` and
``pooled_error``; which class it is never matters here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from models.artifact import TrainedModel
from models.online.config import OnlineConfig
from models.protocol import ErrorArray, FloatArray, OnlineScorer


def validation_error(scorer: OnlineScorer, windows: FloatArray) -> float:
    """One positive number per model for held-out windows; lower is better.

    The scorer's ``pooled_error`` of its ``window_errors``: for the deep scorers the mean
    squared error in normalised units, for PCA ``exp(mean negative log-likelihood /
    signals)``. Two models of the same class are compared by the ratio of theirs.
    """
    return _pooled(scorer, scorer.window_errors(windows))


def _pooled(scorer: OnlineScorer, window_errors: ErrorArray) -> float:
    if window_errors.size == 0:
        raise ValueError("no held-out windows to validate on")
    return scorer.pooled_error(window_errors)


@dataclass(frozen=True)
class Result:
    """What a fine-tune produced: a candidate that passed validation, or why not."""

    parent_version: str
    candidate: TrainedModel | None
    reason: str
    validation: dict[str, float]
    failed: bool = False


@dataclass(frozen=True)
class Split:
    """How many of the buffered windows train, are dropped as a gap, and are held out."""

    train: int
    gap: int
    holdout: int


def split_windows(n: int, window: int, holdout_fraction: float) -> Split | None:
    """The split of ``n`` time-ordered windows, or None when no training window is left.

    The newest ``holdout_fraction`` is held out; ``window - 1`` windows before it are
    dropped, so (for one asset at stride 1) no training window shares a reading with a
    held-out one.
    """
    holdout = max(1, round(n * holdout_fraction))
    gap = window - 1
    train = n - holdout - gap
    if train < 1:
        return None
    return Split(train=train, gap=gap, holdout=holdout)


def fine_tune_candidate(
    parent: TrainedModel,
    scorer: OnlineScorer,
    windows: FloatArray,
    ts_ms: npt.NDArray[np.int64],
    config: OnlineConfig,
) -> Result:
    """Fine-tune ``scorer`` (a copy of the parent's) and validate it; runs off the scoring path."""
    started = time.perf_counter()
    split = split_windows(windows.shape[0], parent.window, config.holdout_fraction)
    if split is None:
        raise ValueError(f"{windows.shape[0]} windows are too few to split for validation")
    train = windows[: split.train]
    holdout = windows[windows.shape[0] - split.holdout :]
    # The copy still equals the serving model here: measure the current error first.
    current_windows = scorer.window_errors(holdout)
    current = _pooled(scorer, current_windows)
    fit_started = time.perf_counter()
    metrics = scorer.fine_tune(
        train, epochs=config.epochs, lr_scale=config.lr_scale, seed=config.seed
    )
    fit_seconds = time.perf_counter() - fit_started
    candidate_windows = scorer.window_errors(holdout)
    candidate = _pooled(scorer, candidate_windows)
    ratio = candidate / current if current > 0 else (1.0 if candidate == 0 else math.inf)
    validation: dict[str, float] = {
        "current_error": current,
        "candidate_error": candidate,
        "ratio": ratio,
        "max_score_ratio": config.max_score_ratio,
        "train_windows": float(split.train),
        "gap_windows": float(split.gap),
        "holdout_windows": float(split.holdout),
        "current_window_p50": float(np.quantile(current_windows, 0.5)),
        "current_window_p95": float(np.quantile(current_windows, 0.95)),
        "candidate_window_p50": float(np.quantile(candidate_windows, 0.5)),
        "candidate_window_p95": float(np.quantile(candidate_windows, 0.95)),
        "fine_tune_seconds": fit_seconds,
        "seconds": time.perf_counter() - started,
    }
    n_hold = split.holdout
    if not (math.isfinite(candidate) and candidate <= config.max_score_ratio * current):
        reason = (
            f"candidate rejected: held-out error {candidate:.6g} is above "
            f"{config.max_score_ratio:g} x the current model's {current:.6g} on {n_hold} "
            f"recent normal windows; keeping {parent.version}"
        )
        return Result(parent.version, None, reason, validation)

    calibration, _ = scorer.score_batch(holdout)
    lineage = parent.metadata.get("online")
    parent_online: Mapping[str, Any] = lineage if isinstance(lineage, Mapping) else {}
    generation = parent_online.get("generation", 0)
    origin = parent.metadata.get("origin")
    if not isinstance(origin, Mapping):
        origin = {k: parent.metadata[k] for k in ("training", "data") if k in parent.metadata}
    metadata: dict[str, Any] = {
        "online": {
            "parent_version": parent.version,
            "root_version": parent_online.get("root_version", parent.version),
            "generation": (generation if isinstance(generation, int) else 0) + 1,
            "config": msgspec.structs.asdict(config),
            "fine_tune": metrics,
            "validation": validation,
            "data": {
                "train_first_ts_ms": int(ts_ms[0]),
                "train_last_ts_ms": int(ts_ms[split.train - 1]),
                "holdout_first_ts_ms": int(ts_ms[-n_hold]),
                "holdout_last_ts_ms": int(ts_ms[-1]),
            },
        },
        "calibration": {"source": "online-holdout", "windows": n_hold, "kept": n_hold},
        "origin": dict(origin),
    }
    model = TrainedModel.create(
        scorer, parent.signals, parent.normalizer, calibration, metadata=metadata
    )
    reason = (
        f"fine-tuned {parent.name} {parent.version} -> {model.version} on {split.train} recent "
        f"normal windows: held-out error {candidate:.6g} vs {current:.6g} "
        f"(ratio {ratio:.3f}, limit {config.max_score_ratio:g}) on {n_hold} windows"
    )
    return Result(parent.version, model, reason, validation)

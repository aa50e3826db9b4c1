"""Per-signal errors into a score and contributions, the one way every deep scorer does it.

After ``fit`` a scorer stores, per signal, the median of that signal's error over its
training windows (:func:`error_scale_from`, floored); :func:`scale_errors` divides by it,
so a signal counts by how unusual its error is *for that signal*.
"""

from __future__ import annotations

import numpy as np
import torch

from models.protocol import FloatArray, contribution_shares

# A signal predicted (almost) perfectly in training (a set-point, a constant) would get an
# error scale near zero and turn any later wiggle into an enormous score. Its scale is
# floored at this fraction of the median scale over all signals (and at ABS_ERROR_FLOOR).
ERROR_FLOOR_RATIO = 0.05
ABS_ERROR_FLOOR = 1e-6


def scale_errors(errors: FloatArray, error_scale: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-signal errors (B, S) → (scores (B,), contributions (B, S) with rows summing to 1)."""
    scaled = (errors / error_scale).astype(np.float32)
    scores = scaled.mean(axis=1, dtype=np.float32)
    return scores.astype(np.float32), contribution_shares(scaled)


def error_scale_from(errors: FloatArray) -> FloatArray:
    """Per-signal median of training errors (B, S), floored (see ``ERROR_FLOOR_RATIO``)."""
    median = np.median(errors, axis=0)
    floor = max(ABS_ERROR_FLOOR, ERROR_FLOOR_RATIO * float(np.median(median)))
    return np.maximum(median, floor).astype(np.float32)


def tail_errors(rebuilt: torch.Tensor, windows: torch.Tensor, steps: int) -> torch.Tensor:
    """Squared reconstruction error per signal, averaged over the window's last ``steps``."""
    return ((rebuilt[:, -steps:] - windows[:, -steps:]) ** 2).mean(dim=1)

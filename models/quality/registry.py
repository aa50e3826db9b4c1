"""Quality-model kinds → predictors: the one place that knows every quality model.

>>> sorted(KINDS)
['conv', 'lagged-mlp', 'lstm', 'mlp', 'pls', 'ridge']
>>> create_predictor("ridge", n_signals=3).history
1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt

from models.quality.protocol import QualityPredictor

#: What each kind is, for ``--help`` and the docs.
KINDS: Mapping[str, str] = {
    "pls": "partial least squares over lagged readings (latent components chosen on validation)",
    "ridge": "ridge regression over lagged readings (penalty chosen on validation)",
    "mlp": "a plain MLP on the current readings",
    "lagged-mlp": "four small tanh MLPs with a linear skip over lagged readings (--lags), "
    "trained from four seeds and averaged: ridge plus the curvature it cannot fit",
    "conv": "dilated 1-D convolutions over the last --history rows (dead time, lags)",
    "lstm": "an LSTM over the last --history rows",
}
DEFAULT_KIND = "pls"
DEFAULT_LAGS = (0,)
DEFAULT_HISTORY = 32
#: The kinds that read lagged rows (``--lags``) rather than a window (``--history``).
LAGGED_KINDS = ("pls", "ridge", "lagged-mlp")
#: The lagged MLP's defaults: small members (a few thousand rows train it), several seeds.
LAGGED_MLP_DEFAULTS: Mapping[str, Any] = {"hidden": 16, "members": 4}


def create_predictor(
    kind: str,
    n_signals: int,
    *,
    lags: Sequence[int] | None = None,
    history: int | None = None,
    **hyper: Any,
) -> QualityPredictor:
    """A fresh predictor of ``kind``; ``lags`` for the lagged kinds, ``history`` for windows."""
    if kind not in KINDS:
        raise ValueError(f"unknown quality model {kind!r}; valid: {', '.join(sorted(KINDS))}")
    predictor: QualityPredictor
    if kind in ("pls", "ridge"):
        from models.quality.linear import LinearQuality

        predictor = LinearQuality(n_signals, lags=tuple(lags or DEFAULT_LAGS), kind=kind)
    elif kind == "lagged-mlp":
        from models.quality.neural import NeuralQuality

        options = {**LAGGED_MLP_DEFAULTS, **hyper}
        predictor = NeuralQuality(
            n_signals, architecture=kind, lags=tuple(lags or DEFAULT_LAGS), **options
        )
    else:
        from models.quality.neural import NeuralQuality

        window = 1 if kind == "mlp" and history is None else history or DEFAULT_HISTORY
        predictor = NeuralQuality(n_signals, architecture=kind, history=window, **hyper)
    return predictor


def predictor_from_state(
    config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]
) -> QualityPredictor:
    """Rebuild a trained predictor from its ``get_config()`` and ``state_tensors()``."""
    name = config.get("name")
    if name == "linear":
        from models.quality.linear import LinearQuality

        return LinearQuality.from_state(config, tensors)
    if name == "neural":
        from models.quality.neural import NeuralQuality

        return NeuralQuality.from_state(config, tensors)
    raise ValueError(f"quality predictor config names {name!r}, not 'linear' or 'neural'")

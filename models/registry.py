"""Scorer names → classes: the one place that knows every model.

The run loop, training and the artifact loader go through here, so a new model is a new
entry in :data:`SCORERS`, never a new branch elsewhere.

>>> sorted(SCORERS)
['conv-ae', 'lstm-ae', 'lstm-forecaster', 'pca', 'river-hst']
>>> create_scorer("pca", n_signals=3, window=16).name
'pca'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy.typing as npt

from models.baseline import HalfSpaceTreesScorer, PCAScorer
from models.deep import ConvAutoencoderScorer, LSTMAutoencoderScorer, LSTMForecasterScorer
from models.protocol import Scorer

SCORERS: Mapping[str, type[Scorer]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            PCAScorer,
            HalfSpaceTreesScorer,
            LSTMAutoencoderScorer,
            LSTMForecasterScorer,
            ConvAutoencoderScorer,
        )
    }
)

# The robust default for ``plantwatch train``/``run``; switched to the best deep model once
# the SKAB benchmark says which one that is.
DEFAULT_SCORER = "pca"


def scorer_class(name: str) -> type[Scorer]:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    try:
        return SCORERS[name]
    except KeyError:
        valid = ", ".join(sorted(SCORERS))
        raise ValueError(f"unknown scorer {name!r}; valid scorers are: {valid}") from None


def create_scorer(name: str, n_signals: int, window: int, **hyper: Any) -> Scorer:
    """A fresh, unfitted scorer; ``hyper`` are the class's keyword hyper-parameters."""
    # The protocol fixes no constructor; every registered class takes (n_signals, window).
    cls: Callable[..., object] = scorer_class(name)
    try:
        scorer = cls(n_signals, window, **hyper)
    except TypeError as exc:
        raise ValueError(f"bad hyper-parameters for scorer {name!r}: {exc}") from exc
    if not isinstance(scorer, Scorer):
        raise TypeError(f"scorer {name!r} does not follow the Scorer protocol")
    return scorer


def scorer_from_state(config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]) -> Scorer:
    """Rebuild a trained scorer from its ``get_config()`` and ``state_tensors()``."""
    name = config.get("name")
    if not isinstance(name, str):
        raise ValueError(f"scorer config has no valid 'name' (got {name!r})")
    scorer = scorer_class(name).from_state(config, tensors)
    if not isinstance(scorer, Scorer):
        raise TypeError(f"{name!r}.from_state did not return a Scorer")
    return scorer

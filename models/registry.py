"""Scorer names → classes: the one place that knows every model.

The run loop, training and the artifact loader go through here, so a new model is a new
entry in :data:`SCORERS`, never a new branch elsewhere.

>>> sorted(SCORERS)
['conv-ae', 'lstm-ae', 'lstm-forecaster', 'pca', 'river-hst']
>>> create_scorer("pca", n_signals=3, window=16).name
'pca'
>>> online_scorers()
('conv-ae', 'lstm-ae', 'lstm-forecaster', 'pca')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy.typing as npt

from models.protocol import OnlineLearning, Scorer

#: Where each scorer lives. Classes are imported when first asked for, so that reading
#: settings or ``plantwatch --help`` never pays for importing torch.
_LOCATIONS: dict[str, str] = {
    "pca": "models.baseline:PCAScorer",
    "river-hst": "models.baseline:HalfSpaceTreesScorer",
    "lstm-ae": "models.deep:LSTMAutoencoderScorer",
    "lstm-forecaster": "models.deep:LSTMForecasterScorer",
    "conv-ae": "models.deep:ConvAutoencoderScorer",
}


class _Registry(Mapping[str, type[Scorer]]):
    """A read-only name → class mapping that imports each class on first use."""

    def __init__(self, locations: Mapping[str, str]) -> None:
        self._locations = dict(locations)
        self._loaded: dict[str, type[Scorer]] = {}

    def __getitem__(self, name: str) -> type[Scorer]:
        cls = self._loaded.get(name)
        if cls is None:
            module, _, attr = self._locations[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
            if getattr(cls, "name", None) != name:
                raise TypeError(f"{self._locations[name]} is registered as {name!r}")
            self._loaded[name] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._locations)

    def __len__(self) -> int:
        return len(self._locations)


SCORERS: Mapping[str, type[Scorer]] = _Registry(_LOCATIONS)

# The default of ``plantwatch train`` (docs/BENCHMARKS.md, issue 9). Measured: Conv-AE with
# DSPOT was best on the simulator with set-point steps (event F1 0.82 against PCA's 0.62)
# and on SKAB (F1 0.77 vs 0.74), but detected 2 of 4 faults where PCA found 4 of 4 on the
# 1 s cadence test, needs a window that is a multiple of 4 and minutes of training on a
# CPU; PCA trains in a second on any window. PCA stays the default; --scorer conv-ae is
# the choice for plants with frequent set-point changes.
DEFAULT_SCORER = "pca"


def online_scorers() -> tuple[str, ...]:
    """Names of the registered scorers with the online-learning capability, sorted."""
    return tuple(sorted(name for name, cls in SCORERS.items() if issubclass(cls, OnlineLearning)))


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

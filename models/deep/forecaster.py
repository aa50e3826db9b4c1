"""The LSTM forecaster scorer: scores a window by how well its last reading was predicted."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.deep.base import DeepScorer, InferenceOptions
from models.deep.modules import LSTMForecaster, LSTMForecasterConfig
from models.deep.stream import ForecasterStream
from models.deep.training import TrainConfig


class LSTMForecasterScorer(DeepScorer):
    """LSTM forecaster; score = scaled squared error of the window's last reading.

    The prediction of the last reading is made from the window's first ``window - 1``
    readings, run from a zero state. Training teaches a prediction after *every* step of
    the window (more signal per window, and the short-context predictions are exactly what
    a :class:`ForecasterStream` uses while it warms up).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = LSTMForecasterScorer(2, window=8, hidden=8, epochs=2, device="cpu")
    >>> _ = s.fit([rng.normal(size=(64, 2)).astype(np.float32)])
    >>> stream = s.stream(max_assets=100)
    >>> scores, _ = stream.step(["pump-1"], np.zeros((1, 2), dtype=np.float32))
    >>> bool(np.isnan(scores[0]))  # not warm yet: fewer than window - 1 readings seen
    True
    """

    name = "lstm-forecaster"

    def __init__(
        self,
        n_signals: int,
        window: int = 32,
        *,
        hidden: int = 32,
        layers: int = 1,
        epochs: int = 40,
        batch_size: int = 32,
        lr: float = 3e-3,
        patience: int = 5,
        val_fraction: float = 0.2,
        train_stride: int = 1,
        grad_clip: float = 1.0,
        device: str | None = None,
        inference: InferenceOptions | None = None,
    ) -> None:
        self.arch = LSTMForecasterConfig(n_signals, hidden, layers)
        train = TrainConfig(epochs, batch_size, lr, patience, val_fraction, train_stride, grad_clip)
        super().__init__(n_signals, window, train, device=device, inference=inference)

    def _build_module(self) -> nn.Module:
        return LSTMForecaster(self.arch)

    def _training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        pred, _ = module(windows[:, :-1])
        return nn.functional.mse_loss(pred, windows[:, 1:])

    def _signal_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        pred, _ = module(windows[:, :-1])
        errors: torch.Tensor = (pred[:, -1] - windows[:, -1]) ** 2
        return errors

    def _architecture_config(self) -> dict[str, Any]:
        return {"hidden": self.arch.hidden, "layers": self.arch.layers}

    @property
    def forecaster(self) -> LSTMForecaster:
        """The trained module, typed (for the stream)."""
        if not isinstance(self.module, LSTMForecaster):
            raise TypeError(f"expected an LSTMForecaster module, found {type(self.module)}")
        return self.module

    def stream(
        self, *, max_assets: int = 10_000, warmup_steps: int | None = None
    ) -> ForecasterStream:
        """A :class:`ForecasterStream` over this scorer (make a new one after ``fit``)."""
        return ForecasterStream(self, max_assets=max_assets, warmup_steps=warmup_steps)

"""The LSTM autoencoder scorer: rebuilds the window, scores the newest readings' error."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.deep.base import DeepScorer, InferenceOptions
from models.deep.modules import LSTMAutoencoder, LSTMAutoencoderConfig
from models.deep.scoring import tail_errors
from models.deep.training import TrainConfig


class LSTMAutoencoderScorer(DeepScorer):
    """LSTM autoencoder; score = scaled reconstruction error of the last ``score_steps``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = LSTMAutoencoderScorer(2, window=8, hidden=8, latent=4, epochs=2, device="cpu")
    >>> _ = s.fit([rng.normal(size=(64, 2)).astype(np.float32)])
    >>> scores, contributions = s.score_batch(np.zeros((3, 8, 2), dtype=np.float32))
    >>> scores.shape, contributions.sum(axis=1).round(3).tolist()
    ((3,), [1.0, 1.0, 1.0])
    """

    name = "lstm-ae"

    def __init__(
        self,
        n_signals: int,
        window: int = 32,
        *,
        hidden: int = 32,
        latent: int = 16,
        layers: int = 1,
        score_steps: int = 1,
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
        if not 1 <= score_steps <= window:
            raise ValueError(f"score_steps must be in 1..window ({window}), got {score_steps}")
        self.arch = LSTMAutoencoderConfig(n_signals, window, hidden, latent, layers)
        self.score_steps = score_steps
        train = TrainConfig(epochs, batch_size, lr, patience, val_fraction, train_stride, grad_clip)
        super().__init__(n_signals, window, train, device=device, inference=inference)

    def _build_module(self) -> nn.Module:
        return LSTMAutoencoder(self.arch)

    def _training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(module(windows), windows)

    def _signal_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return tail_errors(module(windows), windows, self.score_steps)

    def _architecture_config(self) -> dict[str, Any]:
        return {
            "hidden": self.arch.hidden,
            "latent": self.arch.latent,
            "layers": self.arch.layers,
            "score_steps": self.score_steps,
        }

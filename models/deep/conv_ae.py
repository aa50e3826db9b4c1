"""The 1-D convolutional autoencoder scorer (SKAB Conv-AE style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models.deep.base import DeepScorer, InferenceOptions
from models.deep.modules import ConvAutoencoder, ConvAutoencoderConfig
from models.deep.scoring import tail_errors
from models.deep.training import TrainConfig


class ConvAutoencoderScorer(DeepScorer):
    """1-D conv autoencoder (SKAB Conv-AE style); score as :class:`LSTMAutoencoderScorer`.

    ``window`` must be a multiple of ``2 ** len(channels)`` (4 with the default two layers).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> s = ConvAutoencoderScorer(2, window=8, channels=(8, 4), epochs=2, device="cpu")
    >>> _ = s.fit([rng.normal(size=(64, 2)).astype(np.float32)])
    >>> s.score_batch(np.zeros((3, 8, 2), dtype=np.float32))[0].shape
    (3,)
    """

    name = "conv-ae"

    def __init__(
        self,
        n_signals: int,
        window: int = 32,
        *,
        channels: Sequence[int] = (32, 16),
        kernel: int = 7,
        dropout: float = 0.2,
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
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.arch = ConvAutoencoderConfig(
            n_signals, window, tuple(int(c) for c in channels), kernel, dropout
        )
        self.score_steps = score_steps
        train = TrainConfig(epochs, batch_size, lr, patience, val_fraction, train_stride, grad_clip)
        super().__init__(n_signals, window, train, device=device, inference=inference)

    def _build_module(self) -> nn.Module:
        return ConvAutoencoder(self.arch)

    def _training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(module(windows), windows)

    def _signal_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return tail_errors(module(windows), windows, self.score_steps)

    def _architecture_config(self) -> dict[str, Any]:
        return {
            "channels": list(self.arch.channels),
            "kernel": self.arch.kernel,
            "dropout": self.arch.dropout,
            "score_steps": self.score_steps,
        }

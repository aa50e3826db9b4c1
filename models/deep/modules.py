"""The ``nn.Module`` architectures behind the deep scorers, one per architecture.

Each module takes its hyper-parameters from a small frozen config dataclass (the
pytorch/examples habit) and knows nothing about training, scaling or scoring; those live
in the rest of :mod:`models.deep`. Tensors are batch-first: ``(batch, time, signals)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LSTMAutoencoderConfig:
    """Sizes of :class:`LSTMAutoencoder`."""

    n_signals: int
    window: int
    hidden: int = 32
    latent: int = 16
    layers: int = 1


class LSTMAutoencoder(nn.Module):
    """Encoder LSTM → latent vector → decoder LSTM that rebuilds the window.

    The encoder's last hidden state is squeezed into a ``latent``-sized bottleneck; the
    decoder reads that vector at every step (SKAB's LSTM-AE "RepeatVector" design) plus a
    learnt position embedding, so it knows which step it rebuilds.

    >>> m = LSTMAutoencoder(LSTMAutoencoderConfig(n_signals=3, window=8))
    >>> m(torch.zeros(2, 8, 3)).shape
    torch.Size([2, 8, 3])
    """

    def __init__(self, config: LSTMAutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.LSTM(config.n_signals, config.hidden, config.layers, batch_first=True)
        self.to_latent = nn.Linear(config.hidden, config.latent)
        self.position = nn.Parameter(torch.zeros(config.window, config.latent))
        self.decoder = nn.LSTM(config.latent, config.hidden, config.layers, batch_first=True)
        self.to_signals = nn.Linear(config.hidden, config.n_signals)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(windows)
        latent = torch.tanh(self.to_latent(h[-1]))  # (batch, latent)
        steps = latent.unsqueeze(1) + self.position[: windows.shape[1]]
        decoded, _ = self.decoder(steps)
        out: torch.Tensor = self.to_signals(decoded)
        return out


@dataclass(frozen=True)
class LSTMForecasterConfig:
    """Sizes of :class:`LSTMForecaster`."""

    n_signals: int
    hidden: int = 32
    layers: int = 1


class LSTMForecaster(nn.Module):
    """LSTM that predicts the next reading after every step it reads.

    ``forward(x)[:, t]`` is the prediction of ``x[:, t + 1]`` made from ``x[:, : t + 1]``.
    The same module serves windows (re-run from a zero state) and streams (one step at a
    time with a carried ``(h, c)``), which is why the state goes in and comes out.

    >>> m = LSTMForecaster(LSTMForecasterConfig(n_signals=3))
    >>> pred, (h, c) = m(torch.zeros(2, 5, 3))
    >>> pred.shape, h.shape
    (torch.Size([2, 5, 3]), torch.Size([1, 2, 32]))
    """

    def __init__(self, config: LSTMForecasterConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.n_signals, config.hidden, config.layers, batch_first=True)
        self.head = nn.Linear(config.hidden, config.n_signals)

    def forward(
        self, readings: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        out, new_state = self.lstm(readings, state)
        pred: torch.Tensor = self.head(out)
        return pred, (new_state[0], new_state[1])

    def step(
        self, readings: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One reading per row through a carried state; for streams.

        ``readings`` is (B, signals); ``h`` and ``c`` are (B, layers, hidden) (asset-major,
        so a pool of assets can be gathered and scattered along dim 0). Returns the
        prediction of ``readings`` made from the state *before* them, and the new state.
        Uses ``torch.lstm_cell`` directly: the same arithmetic as ``nn.LSTM`` for one step,
        at about a fifth of its per-call overhead on CPU.
        """
        pred: torch.Tensor = self.head(h[:, -1])
        x = readings
        hs: list[torch.Tensor] = []
        cs: list[torch.Tensor] = []
        for k in range(self.config.layers):
            x, c_k = torch.lstm_cell(
                x,
                (h[:, k], c[:, k]),
                getattr(self.lstm, f"weight_ih_l{k}"),
                getattr(self.lstm, f"weight_hh_l{k}"),
                getattr(self.lstm, f"bias_ih_l{k}"),
                getattr(self.lstm, f"bias_hh_l{k}"),
            )
            hs.append(x)
            cs.append(c_k)
        return pred, torch.stack(hs, dim=1), torch.stack(cs, dim=1)


@dataclass(frozen=True)
class ConvAutoencoderConfig:
    """Sizes of :class:`ConvAutoencoder`; ``window`` must divide by ``2 ** len(channels)``."""

    n_signals: int
    window: int
    channels: tuple[int, ...] = (32, 16)
    kernel: int = 7
    dropout: float = 0.2


class ConvAutoencoder(nn.Module):
    """1-D convolutional autoencoder over time, after SKAB's Conv-AE baseline.

    Each encoder layer is ``Conv1d(stride 2) + ReLU`` (halving the time axis); the decoder
    mirrors it with ``ConvTranspose1d(stride 2)`` and ends with a stride-1 convolution back
    to the signals. Dropout after the first layer of each half, as in the baseline.

    >>> m = ConvAutoencoder(ConvAutoencoderConfig(n_signals=3, window=16))
    >>> m(torch.zeros(2, 16, 3)).shape
    torch.Size([2, 16, 3])
    """

    def __init__(self, config: ConvAutoencoderConfig) -> None:
        super().__init__()
        if config.kernel % 2 != 1:
            raise ValueError(f"kernel must be odd so time stays aligned, got {config.kernel}")
        if not config.channels:
            raise ValueError("channels needs at least one encoder layer, e.g. (32, 16)")
        factor = 2 ** len(config.channels)
        if config.window % factor != 0:
            raise ValueError(
                f"window {config.window} must be a multiple of {factor} for "
                f"{len(config.channels)} stride-2 layers; use e.g. window={factor * 8}"
            )
        self.config = config
        pad = config.kernel // 2
        encoder: list[nn.Module] = []
        c_in = config.n_signals
        for i, c_out in enumerate(config.channels):
            encoder += [nn.Conv1d(c_in, c_out, config.kernel, stride=2, padding=pad), nn.ReLU()]
            if i == 0 and config.dropout > 0:
                encoder.append(nn.Dropout(config.dropout))
            c_in = c_out
        decoder: list[nn.Module] = []
        # Mirror: up-sample through the encoder's widths in reverse, then map to signals.
        for i, c_out in enumerate(config.channels[::-1]):
            decoder += [
                nn.ConvTranspose1d(
                    c_in, c_out, config.kernel, stride=2, padding=pad, output_padding=1
                ),
                nn.ReLU(),
            ]
            if i == 0 and config.dropout > 0:
                decoder.append(nn.Dropout(config.dropout))
            c_in = c_out
        decoder.append(nn.Conv1d(c_in, config.n_signals, config.kernel, padding=pad))
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        z = self.encoder(windows.transpose(1, 2))  # (batch, signals, time) for Conv1d
        out: torch.Tensor = self.decoder(z).transpose(1, 2)
        return out

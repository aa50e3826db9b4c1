"""Neural soft sensors: a plain MLP on the current readings, a 1-D conv over a window, and
an ensemble of small MLPs over lagged readings.

The MLP is the classic soft sensor (one row of readings in, the quality value out). The
window model reads the last ``history`` rows through dilated 1-D convolutions, so a
transport delay or a slow response of the target to a process input is something it can
learn rather than something the features must already hold. The lagged MLP reads the
rows ridge reads (``lags``) through one small tanh layer beside a linear skip: ridge plus
the saturation a linear model cannot bend to; several are trained from different seeds and
averaged, since on a few thousand rows of drifting process data the initialisation decides
as much as the architecture. All train with Adam on the mean squared error of the
normalised target, with early stopping on the later validation rows (the loop of
:mod:`models.deep.training`), and keep the best epoch's weights.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(400, 2)).astype(np.float32)
>>> y = np.tanh(x[:, 0]).astype(np.float32)
>>> model = NeuralQuality(n_signals=2, architecture="mlp", epochs=30)
>>> rows = np.arange(400)
>>> stats = model.fit(x, y, rows[:300], rows[300:])
>>> float(np.sqrt(np.mean((model.predict(x, rows[300:]) - y[300:]) ** 2))) < 0.2
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.deep.training import TrainConfig, WindowSet, pick_device, seeded, train_module
from models.quality.protocol import FloatArray, IndexArray, Progress, check_tensors

ARCHITECTURES = ("mlp", "conv", "lstm", "lagged-mlp")


@dataclass(frozen=True)
class QualityNetConfig:
    """Sizes of the quality networks; ``history`` is 1 for the plain MLP."""

    n_signals: int
    history: int = 1
    hidden: int = 64
    channels: int = 16
    dropout: float = 0.1
    #: The lagged MLP's rows back from the newest (``history`` is their largest + 1).
    lags: tuple[int, ...] = (0,)


class QualityMLP(nn.Module):
    """The rows of the window, flattened → two hidden layers → the value.

    >>> QualityMLP(QualityNetConfig(n_signals=3))(torch.zeros(4, 1, 3)).shape
    torch.Size([4])
    """

    def __init__(self, config: QualityNetConfig) -> None:
        super().__init__()
        self.config = config
        width = config.n_signals * config.history
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width, config.hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 1),
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(windows).squeeze(-1)
        return out


class QualityConv(nn.Module):
    """Dilated 1-D convolutions over the window → flattened → the value.

    Flattening, not pooling, keeps *when* in the window a change happened: the delay
    between an input move and the quality response is what the head learns.

    >>> QualityConv(QualityNetConfig(n_signals=3, history=16))(torch.zeros(4, 16, 3)).shape
    torch.Size([4])
    """

    def __init__(self, config: QualityNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.features = nn.Sequential(
            nn.Conv1d(config.n_signals, c, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv1d(c, c, kernel_size=3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv1d(c, c, kernel_size=3, padding=4, dilation=4),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(c * config.history, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 1),
        )
        # The current readings straight to the output: the window adds what they miss.
        self.skip = nn.Linear(config.n_signals, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        feats = self.features(windows.transpose(1, 2))
        out: torch.Tensor = (self.head(feats) + self.skip(windows[:, -1])).squeeze(-1)
        return out


class QualityLSTM(nn.Module):
    """An LSTM over the window; its last hidden state → the value.

    >>> QualityLSTM(QualityNetConfig(n_signals=3, history=8))(torch.zeros(4, 8, 3)).shape
    torch.Size([4])
    """

    def __init__(self, config: QualityNetConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.n_signals, config.hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden, 1))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(windows)
        out: torch.Tensor = self.head(h[-1]).squeeze(-1)
        return out


class QualityLaggedMLP(nn.Module):
    """The window's rows at ``lags`` → one tanh layer, plus a linear skip → the value.

    >>> config = QualityNetConfig(n_signals=3, history=10, hidden=16, lags=(0, 4, 9))
    >>> QualityLaggedMLP(config)(torch.zeros(4, 10, 3)).shape
    torch.Size([4])
    """

    def __init__(self, config: QualityNetConfig) -> None:
        super().__init__()
        self.config = config
        self.rows: torch.Tensor
        rows = [config.history - 1 - lag for lag in config.lags]
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        width = config.n_signals * len(config.lags)
        self.net = nn.Sequential(
            nn.Linear(width, config.hidden),
            nn.Tanh(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )
        self.skip = nn.Linear(width, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        feats = windows.index_select(1, self.rows).flatten(1)
        out: torch.Tensor = (self.net(feats) + self.skip(feats)).squeeze(-1)
        return out


class QualityEnsemble(nn.Module):
    """The mean of independently trained members.

    >>> config = QualityNetConfig(n_signals=3)
    >>> QualityEnsemble([QualityMLP(config), QualityMLP(config)])(torch.zeros(4, 1, 3)).shape
    torch.Size([4])
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(windows) for m in self.members]).mean(dim=0)


_MODULES: dict[str, type[nn.Module]] = {
    "mlp": QualityMLP,
    "conv": QualityConv,
    "lstm": QualityLSTM,
    "lagged-mlp": QualityLaggedMLP,
}


def _runs(rows: IndexArray, history: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, end)`` whose every end row from ``start + history - 1`` is in
    ``rows``: consecutive end rows become one segment of readings."""
    if rows.size == 0:
        return []
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = [0, *cut.tolist()]
    ends = [*cut.tolist(), rows.size]
    return [
        (int(rows[s]) - history + 1, int(rows[e - 1]) + 1)
        for s, e in zip(starts, ends, strict=True)
    ]


def _of_member(progress: Progress | None, member: int, members: int) -> Progress | None:
    """Training's progress events, saying which member of an ensemble they are about."""
    if progress is None or members == 1:
        return progress
    report = progress

    def tagged(event: dict[str, float]) -> None:
        report({**event, "member": float(member), "members": float(members)})

    return tagged


class NeuralQuality:
    """An MLP, 1-D conv, LSTM or lagged-MLP quality model behind the
    :class:`QualityPredictor` protocol; with ``members`` > 1, that many trained from seeds
    ``seed``, ``seed + 1``, … and averaged."""

    name = "neural"

    def __init__(
        self,
        n_signals: int,
        *,
        architecture: str = "mlp",
        history: int = 1,
        hidden: int = 64,
        channels: int = 16,
        dropout: float = 0.1,
        lags: tuple[int, ...] | list[int] = (0,),
        members: int = 1,
        epochs: int = 200,
        batch_size: int = 64,
        lr: float = 1e-3,
        patience: int = 20,
        device: str | None = None,
    ) -> None:
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if history < 1:
            raise ValueError(f"history must be at least 1 row, got {history}")
        lag_rows = tuple(int(lag) for lag in lags)
        if architecture == "lagged-mlp":
            if not lag_rows or min(lag_rows) < 0 or len(set(lag_rows)) != len(lag_rows):
                raise ValueError(f"lags must be distinct non-negative integers, got {list(lags)}")
            history = max(lag_rows) + 1
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.members = int(members)
        self.n_signals = int(n_signals)
        self.architecture = architecture
        self.net_config = QualityNetConfig(
            n_signals=self.n_signals,
            history=int(history),
            hidden=int(hidden),
            channels=int(channels),
            dropout=float(dropout),
            lags=lag_rows,
        )
        self.train_config = TrainConfig(
            epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), patience=int(patience)
        )
        self.device = pick_device(device)
        self.module: nn.Module = self._build().to(self.device)
        self.module.eval()

    def _build(self) -> nn.Module:
        make = _MODULES[self.architecture]
        if self.members == 1:
            return make(self.net_config)
        return QualityEnsemble([make(self.net_config) for _ in range(self.members)])

    @property
    def history(self) -> int:
        return self.net_config.history

    def fit(
        self,
        x: FloatArray,
        y: FloatArray,
        train_rows: IndexArray,
        val_rows: IndexArray,
        *,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        # Rows carry [readings, target]; a window's last row holds the value to predict.
        # Only windows whose end row is a fit row are built (runs of consecutive end rows),
        # and those ending in validation rows are the tail train_module holds out.
        # The target of a history row is never read (only the end row's), so a missing
        # one is filled to keep the window finite.
        target = np.nan_to_num(np.asarray(y, np.float32), nan=0.0)
        table = np.concatenate([np.asarray(x, np.float32), target[:, None]], axis=1)
        h = self.history
        train_runs = _runs(np.sort(train_rows), h)
        val_runs = _runs(np.sort(val_rows), h)
        segments = [table[s:e] for s, e in train_runs + val_runs]
        n_val = int(val_rows.size)
        n_all = int(train_rows.size) + n_val
        config = TrainConfig(
            **{**asdict(self.train_config), "val_fraction": (n_val + 0.5) / n_all if n_val else 0.0}
        )
        s = self.n_signals

        def loss_fn(module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
            return torch.mean((module(windows[:, :, :s]) - windows[:, -1, s]) ** 2)

        make = _MODULES[self.architecture]
        trained: list[nn.Module] = []
        runs: list[dict[str, Any]] = []
        for k in range(self.members):
            with seeded(seed + k, self.device):
                module = make(self.net_config).to(self.device)
                windows = WindowSet.from_segments(segments, h, s + 1, device=self.device)
                generator = torch.Generator().manual_seed(seed + k)
                stats = train_module(
                    module, windows, loss_fn, config, generator=generator,
                    progress=_of_member(progress, k + 1, self.members),
                )  # fmt: skip
            stats.pop("loss_history", None)
            stats.pop("val_loss_history", None)
            trained.append(module)
            runs.append(stats)
        if self.members == 1:
            self.module = trained[0]
            return runs[0]
        self.module = QualityEnsemble(trained).to(self.device).eval()
        return {"members": runs}

    def predict(self, x: FloatArray, rows: IndexArray) -> FloatArray:
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        offsets = torch.arange(-self.history + 1, 1, device=self.device)
        index = torch.from_numpy(np.asarray(rows, np.int64)).to(self.device)
        out: list[torch.Tensor] = []
        self.module.eval()
        with torch.inference_mode():
            for start in range(0, int(index.shape[0]), 4096):
                part = index[start : start + 4096]
                out.append(self.module(data[part.unsqueeze(1) + offsets]))
        return torch.cat(out).cpu().numpy().astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        net = asdict(self.net_config)
        # Only where they mean something, so that the configs (and content versions) of
        # the other architectures are what they were before the lagged MLP.
        del net["lags"]
        if self.architecture == "lagged-mlp":
            net["lags"] = list(self.net_config.lags)
        extra = {"members": self.members} if self.members != 1 else {}
        train = asdict(self.train_config)
        del train["val_fraction"], train["train_stride"], train["grad_clip"]
        return {"name": self.name, "architecture": self.architecture, **extra, **net, **train}

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.module.state_dict().items()}

    @classmethod
    def from_state(
        cls,
        config: Mapping[str, Any],
        tensors: Mapping[str, npt.NDArray[Any]],
        *,
        device: str | None = None,
    ) -> Self:
        kwargs = dict(config)
        if kwargs.pop("name", None) != cls.name:
            raise ValueError(f"config is not a {cls.name!r} quality model")
        try:
            model = cls(int(kwargs.pop("n_signals")), device=device, **kwargs)
        except TypeError as exc:
            raise ValueError(f"bad {cls.name} config: {exc}") from exc
        expected = {k: tuple(v.shape) for k, v in model.module.state_dict().items()}
        check_tensors(cls.name, tensors, expected)
        model.module.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True
        )
        model.module.eval()
        return model

"""The training loop of the deep scorers, kept outside the modules (pytorch/examples habit).

:func:`train_module` runs Adam with early stopping over a :class:`WindowSet` (windows as
views into the training rows, never copied out); :func:`seeded` fixes torch's global
generators for the length of a fit without leaking that into the rest of the process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.protocol import FloatArray

Progress = Callable[[dict[str, float]], None]
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def pick_device(device: str | None = None) -> torch.device:
    """The device to use: the one named, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_module`.

    ``val_fraction`` of the windows, taken from the *end* of the (time-ordered) training
    windows, is held out for early stopping: training stops after ``patience`` epochs
    without a better validation loss, and the best epoch's weights are kept.
    ``train_stride`` > 1 trains on every n-th window only (for long histories).
    """

    epochs: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    patience: int = 5
    val_fraction: float = 0.2
    train_stride: int = 1
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {self.patience}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.train_stride < 1:
            raise ValueError(f"train_stride must be at least 1, got {self.train_stride}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip}")


@dataclass(frozen=True)
class WindowSet:
    """Training windows as (concatenated rows, start index per window), never copied out.

    Windows start only where ``window`` rows fit inside one segment, so none spans two
    segments; starts are in time order (segment order, then row order).
    """

    rows: torch.Tensor
    starts: torch.Tensor
    window: int

    @classmethod
    def from_segments(
        cls,
        segments: Sequence[npt.ArrayLike],
        window: int,
        n_signals: int,
        *,
        stride: int = 1,
        device: torch.device | None = None,
    ) -> WindowSet:
        arrays: list[FloatArray] = []
        starts: list[npt.NDArray[np.int64]] = []
        offset = 0
        for i, segment in enumerate(segments):
            arr = np.asarray(segment, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != n_signals:
                raise ValueError(
                    f"segment {i} has shape {arr.shape}; expected (rows, {n_signals}) "
                    "normalised readings"
                )
            if not np.isfinite(arr).all():
                raise ValueError(
                    f"segment {i} contains NaN or inf; split the history at gaps or fill "
                    "them before fitting"
                )
            if arr.shape[0] >= window:
                starts.append(offset + np.arange(0, arr.shape[0] - window + 1, stride))
            arrays.append(arr)
            offset += arr.shape[0]
        if not starts:
            raise ValueError(
                f"no segment has at least window={window} rows; give longer history or a "
                "smaller window"
            )
        rows = torch.from_numpy(np.concatenate(arrays)).to(device)
        return cls(rows, torch.from_numpy(np.concatenate(starts)).to(device), window)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Windows ``(len(index), window, signals)`` for positions ``index`` into starts."""
        offsets = torch.arange(self.window, device=self.rows.device)
        return self.rows[self.starts[index].unsqueeze(1) + offsets]


def _mean_loss(
    module: nn.Module, windows: WindowSet, index: torch.Tensor, loss_fn: LossFn, batch: int
) -> float:
    total = 0.0
    with torch.no_grad():
        for start in range(0, int(index.shape[0]), batch):
            part = index[start : start + batch]
            total += float(loss_fn(module, windows.gather(part))) * int(part.shape[0])
    return total / max(1, int(index.shape[0]))


def train_module(
    module: nn.Module,
    windows: WindowSet,
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Adam with early stopping on the time-ordered validation tail; keeps the best weights.

    Shuffles training windows each epoch with ``generator`` (so the data order is fixed by
    the seed). When the validation tail would be empty the training loss is monitored.
    Returns JSON-able metrics; ``module`` is left in eval mode with the best weights.
    """
    n = len(windows)
    n_val = int(n * config.val_fraction)
    n_train = n - n_val
    if n_train < 1:
        raise ValueError(f"only {n} training windows; give more history")
    device = windows.rows.device
    train_index = torch.arange(n_train, device=device)
    val_index = torch.arange(n_train, n, device=device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    best_loss = math.inf
    best_epoch = 0
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    losses: list[float] = []
    val_losses: list[float] = []
    stale = 0
    stopped_early = False
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        module.train()
        order = train_index[torch.randperm(n_train, generator=generator).to(device)]
        total = torch.zeros((), device=device)
        for start in range(0, n_train, config.batch_size):
            part = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module, windows.gather(part))
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            optimizer.step()
            total += loss.detach() * int(part.shape[0])
        train_loss = float(total) / n_train
        module.eval()
        eval_batch = max(config.batch_size, 1024)
        val_loss = (
            _mean_loss(module, windows, val_index, loss_fn, eval_batch) if n_val else train_loss
        )
        losses.append(train_loss)
        val_losses.append(val_loss)
        if progress is not None:
            progress({"epoch": float(epoch), "loss": train_loss, "val_loss": val_loss})
        if val_loss < best_loss - 1e-4 * abs(best_loss) or best_epoch == 0:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                stopped_early = True
                break
    module.load_state_dict(best_state)
    module.eval()
    return {
        "epochs_run": len(losses),
        "best_epoch": best_epoch,
        "loss": losses[-1],
        "val_loss": val_losses[-1],
        "best_val_loss": best_loss,
        "stopped_early": stopped_early,
        "seconds": time.perf_counter() - started,
        "n_train_windows": n_train,
        "n_val_windows": n_val,
        "loss_history": losses,
        "val_loss_history": val_losses,
    }


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seeds torch's global generators inside, and restores them after (no side effects)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield

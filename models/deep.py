"""Deep scorers: LSTM autoencoder, LSTM forecaster (plus a stateful stream), conv autoencoder.

All three follow :class:`models.protocol.Scorer`. They share one training loop
(:func:`train_module`, outside the modules), one way of turning per-signal errors into a
score and contributions, and one persistence format (JSON config + named arrays).

Scoring choices, written down once:

* **Per-signal error scale.** After ``fit`` every scorer stores, per signal, the median of
  that signal's error over all training windows (floored, see ``ERROR_FLOOR_RATIO``). Errors
  are divided by it before they are summed, so a signal that is simply noisy (large error
  even when the plant is healthy) does not dominate the score or the contributions; a signal
  counts by how unusual its error is *for that signal*. The median rather than the mean so
  that the few abnormal stretches that slip into "normal" history do not inflate the scale.
* **Score** = mean over signals of the scaled error (1.0 is about a typical training
  window); **contributions** = each signal's share of the summed scaled error (uniform when
  the error is exactly zero, so rows always sum to 1).
* **Autoencoders score the last ``score_steps`` readings of the window** (default 1: the
  newest reading), not the whole window. In streaming use with stride 1 every reading is
  scored once, as the newest reading of its window. A mean over all W steps dilutes a fresh
  fault to k/W of its size in the k-th step after it starts (so it takes ~W readings to
  reach full strength) and keeps echoing for W readings after it ends (slow alert
  resolution); the newest reading reacts at once. It also ranked better: over all 34 SKAB
  files (first 400 rows train, window 32, row-wise ROC AUC against the labels, mean over
  files) the LSTM-AE gave 0.786 / 0.768 / 0.731 / 0.731 and the conv-AE 0.800 / 0.797 /
  0.770 / 0.761 for score_steps 1 / 2 / 4 / 32. The noise a one-reading score keeps is left
  to the threshold and alert debounce layers. ``score_steps=window`` gives the whole-window
  mean.

* **Contributions are sharpest at a fault's onset.** When one signal shifts, its share is
  0.95-0.99 on the first shifted reading; a few readings later the models are reading
  shifted input and part of the error spreads to correlated signals (share 0.47-0.68 eight
  readings in, on the test data of ``tests/test_deep.py``), though it stays the largest.

Defaults fit SKAB-sized training (8 signals, 400-2,000 rows, window 32) on one thread:
with early stopping, ``fit`` takes ~0.3-0.9 s (forecaster), ~1.8-3 s (LSTM-AE) and
~1.6-3.4 s (conv-AE) (``bench/bench_inference.py --train``).

Threads: ``torch.set_num_threads`` is process-global, so this module never calls it; the
process that runs the scorer sets it (tests use 1; ``bench/bench_inference.py --threads``).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.deep_modules import (
    ConvAutoencoder,
    ConvAutoencoderConfig,
    LSTMAutoencoder,
    LSTMAutoencoderConfig,
    LSTMForecaster,
    LSTMForecasterConfig,
)
from models.protocol import FloatArray, contribution_shares

Progress = Callable[[dict[str, float]], None]
LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]

# A signal predicted (almost) perfectly in training (a set-point, a constant) would get an
# error scale near zero and turn any later wiggle into an enormous score. Its scale is
# floored at this fraction of the median scale over all signals (and at ABS_ERROR_FLOOR).
ERROR_FLOOR_RATIO = 0.05
ABS_ERROR_FLOOR = 1e-6

_MODEL_PREFIX = "model."
_ERROR_SCALE_KEY = "error_scale"


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
class InferenceOptions:
    """How a scorer runs ``score_batch``: choices of the running process, never saved.

    ``score_chunk`` bounds the windows per forward pass (memory). ``bf16_min_batch``, when
    set, scores chunks of at least that many windows under bf16 autocast. Off by default:
    it changes scores slightly (median 0.1 %, 99th percentile 1 % relative on SKAB, ranks
    unchanged) and only pays on CPUs with native bf16 (AVX512-BF16/AMX) and large chunks.
    Measured with ``bench/bench_inference.py`` on one such core: conv-ae 1.3x at 64 and
    1.6x at 1024 windows, LSTMs 1.1-1.2x at 1024, and 1.4-3x *slower* at batch 1; so 64
    suits the conv-ae, 512 the LSTMs. ``torch.compile`` gave no gain (0.6-1.1x) and is not
    offered.
    """

    score_chunk: int = 1024
    bf16_min_batch: int | None = None

    def __post_init__(self) -> None:
        if self.score_chunk < 1:
            raise ValueError(f"score_chunk must be at least 1, got {self.score_chunk}")
        if self.bf16_min_batch is not None and self.bf16_min_batch < 1:
            raise ValueError(
                f"bf16_min_batch must be at least 1 or None, got {self.bf16_min_batch}"
            )


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


def scale_errors(errors: FloatArray, error_scale: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-signal errors (B, S) → (scores (B,), contributions (B, S) with rows summing to 1)."""
    scaled = (errors / error_scale).astype(np.float32)
    scores = scaled.mean(axis=1, dtype=np.float32)
    return scores.astype(np.float32), contribution_shares(scaled)


def _error_scale_from(errors: FloatArray) -> FloatArray:
    median = np.median(errors, axis=0)
    floor = max(ABS_ERROR_FLOOR, ERROR_FLOOR_RATIO * float(np.median(median)))
    return np.maximum(median, floor).astype(np.float32)


def _tail_errors(rebuilt: torch.Tensor, windows: torch.Tensor, steps: int) -> torch.Tensor:
    """Squared reconstruction error per signal, averaged over the window's last ``steps``."""
    return ((rebuilt[:, -steps:] - windows[:, -steps:]) ** 2).mean(dim=1)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seeds torch's global generators inside, and restores them after (no side effects)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class DeepScorer(ABC):
    """What the three deep scorers share: fitting, scaled scoring, persistence.

    A subclass names its architecture (``_build_module``), its training loss and its
    per-signal error for scoring, and lists its architecture hyper-parameters. ``module``
    stays in eval mode outside ``fit`` (scoring does not switch modes per call).
    """

    name: str = "deep"

    def __init__(
        self,
        n_signals: int,
        window: int,
        train: TrainConfig,
        *,
        device: str | None = None,
        inference: InferenceOptions | None = None,
    ) -> None:
        if n_signals < 1:
            raise ValueError(f"n_signals must be at least 1, got {n_signals}")
        if window < 2:
            raise ValueError(f"window must be at least 2 readings, got {window}")
        self.n_signals = n_signals
        self.window = window
        self.train_config = train
        self.device = pick_device(device)
        self.inference = InferenceOptions() if inference is None else inference
        self.error_scale: FloatArray = np.ones(n_signals, dtype=np.float32)
        self.module: nn.Module = self._build_module().to(self.device).eval()

    @abstractmethod
    def _build_module(self) -> nn.Module:
        """A freshly initialised module for this scorer's hyper-parameters."""

    @abstractmethod
    def _training_loss(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Scalar loss on a batch of windows (B, W, S)."""

    @abstractmethod
    def _signal_errors(self, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """Unscaled squared error per window and signal (B, S) that the score is built on."""

    @abstractmethod
    def _architecture_config(self) -> dict[str, Any]:
        """JSON-able architecture and scoring hyper-parameters (constructor keywords)."""

    def fit(
        self, segments: Sequence[FloatArray], *, seed: int = 0, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Trains from scratch on normalised segments; deterministic for a given seed (CPU)."""
        cfg = self.train_config
        windows = WindowSet.from_segments(
            segments, self.window, self.n_signals, stride=cfg.train_stride, device=self.device
        )
        started = time.perf_counter()
        with _seeded(seed, self.device):
            module = self._build_module().to(self.device)
            generator = torch.Generator().manual_seed(seed)
            metrics = train_module(
                module,
                windows,
                self._training_loss,
                cfg,
                generator=generator,
                progress=progress,
            )
        self.module = module
        parts: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(windows), 4096):
                index = torch.arange(start, min(start + 4096, len(windows)))
                batch = windows.gather(index.to(self.device))
                parts.append(self._signal_errors(module, batch).float().cpu())
        errors = torch.cat(parts).numpy()
        self.error_scale = _error_scale_from(errors)
        scores, _ = scale_errors(errors, self.error_scale)
        metrics["score_p50"] = float(np.quantile(scores, 0.5))
        metrics["score_p99"] = float(np.quantile(scores, 0.99))
        metrics["seconds"] = time.perf_counter() - started
        return metrics

    def fine_tune(
        self, windows: npt.ArrayLike, *, epochs: int = 3, lr_scale: float = 0.3, seed: int = 0
    ) -> dict[str, Any]:
        """Continues training from the current weights on recent normal windows (B, W, S).

        For online learning (:mod:`models.online`), which fine-tunes a *copy* of the serving
        scorer: this changes the scorer in place. A fresh Adam at ``lr_scale`` times the
        training ``lr`` runs ``epochs`` epochs over every window (no validation split and no
        early stopping: the caller holds out its own recent windows and judges the result).
        Few epochs at a reduced rate keep the weights near the ones that were trusted, so the
        model follows a slow change of the plant without forgetting everything else. The
        per-signal error scale is then re-estimated on these windows, as ``fit`` does on its
        history, so a typical window of the new regime scores about 1.0 again.
        """
        arr = self._check_windows(windows)
        if arr.shape[0] < 1:
            raise ValueError("fine_tune needs at least one window")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        if not lr_scale > 0:
            raise ValueError(f"lr_scale must be positive, got {lr_scale!r}")
        base = self.train_config
        config = TrainConfig(
            epochs=epochs,
            batch_size=base.batch_size,
            lr=base.lr * lr_scale,
            patience=epochs,
            val_fraction=0.0,
            train_stride=1,
            grad_clip=base.grad_clip,
        )
        started = time.perf_counter()
        # Each window becomes its own run of rows, so WindowSet gathers exactly these windows.
        rows = torch.from_numpy(arr.reshape(-1, self.n_signals)).to(self.device)
        starts = (torch.arange(arr.shape[0], dtype=torch.int64) * self.window).to(self.device)
        window_set = WindowSet(rows, starts, self.window)
        with _seeded(seed, self.device):
            generator = torch.Generator().manual_seed(seed)
            metrics = train_module(
                self.module, window_set, self._training_loss, config, generator=generator
            )
        errors = self.signal_errors(arr)
        self.error_scale = _error_scale_from(errors)
        scores, _ = scale_errors(errors, self.error_scale)
        metrics["windows"] = int(arr.shape[0])
        metrics["lr"] = config.lr
        metrics["score_p50"] = float(np.quantile(scores, 0.5))
        metrics["score_p99"] = float(np.quantile(scores, 0.99))
        metrics["seconds"] = time.perf_counter() - started
        return metrics

    def _check_windows(self, windows: npt.ArrayLike) -> FloatArray:
        arr = np.ascontiguousarray(windows, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[1:] != (self.window, self.n_signals):
            raise ValueError(
                f"windows have shape {arr.shape}; {self.name} expects "
                f"(batch, {self.window}, {self.n_signals})"
            )
        if not np.isfinite(arr).all():
            raise ValueError(
                "windows contain NaN or inf; the stream's cleaner must fill gaps before scoring"
            )
        return arr

    def signal_errors(self, windows: npt.ArrayLike) -> FloatArray:
        """Unscaled per-signal squared errors (B, S), in chunks (see :class:`InferenceOptions`)."""
        arr = self._check_windows(windows)
        out = np.empty((arr.shape[0], self.n_signals), dtype=np.float32)
        chunk = self.inference.score_chunk
        bf16_from = self.inference.bf16_min_batch
        with torch.inference_mode():
            for start in range(0, arr.shape[0], chunk):
                stop = min(start + chunk, arr.shape[0])
                batch = torch.from_numpy(arr[start:stop]).to(self.device)
                bf16 = bf16_from is not None and stop - start >= bf16_from
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                    errors = self._signal_errors(self.module, batch)
                out[start:stop] = errors.float().cpu().numpy()
        return out

    def score_batch(self, windows: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Scores (B,) and per-signal contributions (B, S) for windows (B, window, signals)."""
        return scale_errors(self.signal_errors(windows), self.error_scale)

    def get_config(self) -> dict[str, Any]:
        """JSON-able: ``name``, ``n_signals``, ``window`` and every hyper-parameter."""
        train = asdict(self.train_config)
        return {
            "name": self.name,
            "n_signals": self.n_signals,
            "window": self.window,
            **self._architecture_config(),
            **train,
        }

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        """Every learnt number as CPU numpy arrays: module weights and the error scale."""
        tensors: dict[str, npt.NDArray[Any]] = {
            _MODEL_PREFIX + k: v.detach().cpu().numpy().copy()
            for k, v in self.module.state_dict().items()
        }
        tensors[_ERROR_SCALE_KEY] = self.error_scale.copy()
        return tensors

    @classmethod
    def from_state(
        cls,
        config: Mapping[str, Any],
        tensors: Mapping[str, npt.NDArray[Any]],
        *,
        device: str | None = None,
        inference: InferenceOptions | None = None,
    ) -> Self:
        """Rebuilds the scorer saved by ``get_config`` + ``state_tensors``; checks every key.

        ``device`` and ``inference`` are choices of the process that loads it, not saved.
        """
        kwargs = dict(config)
        name = kwargs.pop("name", None)
        if name != cls.name:
            raise ValueError(f"config is for scorer {name!r}, not {cls.name!r}")
        try:
            scorer = cls(**kwargs, device=device, inference=inference)
        except TypeError as exc:
            raise ValueError(f"config for {cls.name!r} does not fit this version: {exc}") from exc
        expected = {k: v.shape for k, v in scorer.state_tensors().items()}
        got = {k: np.shape(v) for k, v in tensors.items()}
        missing = sorted(expected.keys() - got.keys())
        unexpected = sorted(got.keys() - expected.keys())
        wrong = sorted(
            f"{k}: saved {got[k]}, expected {expected[k]}"
            for k in expected.keys() & got.keys()
            if tuple(got[k]) != tuple(expected[k])
        )
        if missing or unexpected or wrong:
            raise ValueError(
                f"saved tensors do not match a {cls.name!r} built from its config "
                f"(missing {missing}, unexpected {unexpected}, wrong shapes {wrong}); "
                "the artifact is damaged or from another model version"
            )
        state = {
            k[len(_MODEL_PREFIX) :]: torch.from_numpy(np.array(v))
            for k, v in tensors.items()
            if k.startswith(_MODEL_PREFIX)
        }
        scorer.module.load_state_dict(state, strict=True)
        scorer.module.eval()
        scorer.error_scale = np.array(tensors[_ERROR_SCALE_KEY], dtype=np.float32)
        return scorer


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
        return _tail_errors(module(windows), windows, self.score_steps)

    def _architecture_config(self) -> dict[str, Any]:
        return {
            "hidden": self.arch.hidden,
            "latent": self.arch.latent,
            "layers": self.arch.layers,
            "score_steps": self.score_steps,
        }


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
        return _tail_errors(module(windows), windows, self.score_steps)

    def _architecture_config(self) -> dict[str, Any]:
        return {
            "channels": list(self.arch.channels),
            "kernel": self.arch.kernel,
            "dropout": self.arch.dropout,
            "score_steps": self.score_steps,
        }


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


STREAM_STATE_VERSION = 1


class ForecasterStream:
    """Scores each new reading with one LSTM step per asset, batched across assets.

    Carries ``(h, c)`` per asset in a pooled tensor, so a reading costs one LSTM step
    instead of re-running ``window - 1`` steps. The pool holds at most ``max_assets``
    assets; a new asset beyond that evicts the least recently stepped one (its state
    restarts from zero if it comes back). ``forget`` drops assets explicitly.

    Relation to :meth:`LSTMForecasterScorer.score_batch`: the score of a reading is the
    scaled squared error of the prediction made from the state *before* the reading. For an
    asset's first ``window`` readings the stream equals the window scorer exactly (both run
    the same readings from a zero state). After that they are different estimators: the
    window re-runs the last ``window - 1`` readings from zero, the stream carries state over
    the asset's whole history. With a forgetting LSTM they stay close (measured in
    ``tests/test_deep.py``), but they are not equal. Scores are NaN, and contributions zero,
    until an asset has seen ``warmup_steps`` readings (default ``window - 1``).

    Snapshots are plain arrays: ``{"version", "h", "c", "steps"}`` per asset.
    """

    def __init__(
        self,
        scorer: LSTMForecasterScorer,
        *,
        max_assets: int = 10_000,
        warmup_steps: int | None = None,
    ) -> None:
        if max_assets < 1:
            raise ValueError(f"max_assets must be at least 1, got {max_assets}")
        self.scorer = scorer
        self.max_assets = max_assets
        self.warmup_steps = scorer.window - 1 if warmup_steps is None else warmup_steps
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}")
        self._layers = scorer.arch.layers
        self._hidden = scorer.arch.hidden
        self._slots: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = []
        self._steps = np.zeros(0, dtype=np.int64)
        self.evicted_total = 0
        # Pools are asset-major (slots, layers, hidden) so a batch is one index_select.
        with torch.inference_mode():
            self._h = torch.zeros(0, self._layers, self._hidden, device=scorer.device)
            self._c = torch.zeros_like(self._h)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def assets(self) -> list[str]:
        """Assets held, least recently stepped first."""
        return list(self._slots)

    def _grow(self) -> None:
        old = self._steps.shape[0]
        new = min(self.max_assets, max(16, 2 * old))
        with torch.inference_mode():
            shape = (new - old, self._layers, self._hidden)
            self._h = torch.cat([self._h, self._h.new_zeros(shape)])
            self._c = torch.cat([self._c, self._c.new_zeros(shape)])
        self._steps = np.concatenate([self._steps, np.zeros(new - old, dtype=np.int64)])
        self._free.extend(range(new - 1, old - 1, -1))

    def _acquire(self, asset_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Slots for distinct assets, allocating (and evicting the stalest) as needed."""
        if len(asset_ids) > self.max_assets:
            raise ValueError(
                f"{len(asset_ids)} assets in one step but max_assets={self.max_assets}; "
                "raise max_assets"
            )
        slots = np.empty(len(asset_ids), dtype=np.int64)
        new: list[int] = []
        # Known assets first move to the recent end, so eviction never takes one of them.
        for i, asset in enumerate(asset_ids):
            slot = self._slots.get(asset)
            if slot is None:
                new.append(i)
            else:
                self._slots.move_to_end(asset)
                slots[i] = slot
        for i in new:
            if not self._free and self._steps.shape[0] < self.max_assets:
                self._grow()
            if self._free:
                slot = self._free.pop()
            else:
                _, slot = self._slots.popitem(last=False)
                self.evicted_total += 1
            with torch.inference_mode():
                self._h[slot] = 0.0
                self._c[slot] = 0.0
            self._steps[slot] = 0
            self._slots[asset_ids[i]] = slot
            slots[i] = slot
        return slots

    def step(
        self, asset_ids: Sequence[str], readings: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Scores one new normalised reading per entry; ``readings`` is (B, signals).

        An asset may appear more than once; its readings are taken in the order given.
        Returns scores (B,) (NaN while the asset warms up) and contributions (B, S).
        """
        x = np.ascontiguousarray(readings, dtype=np.float32)
        n_signals = self.scorer.n_signals
        if x.ndim != 2 or x.shape != (len(asset_ids), n_signals):
            raise ValueError(
                f"readings have shape {x.shape}; expected ({len(asset_ids)}, {n_signals}) "
                "(one normalised reading per asset id)"
            )
        if not np.isfinite(x).all():
            raise ValueError("readings contain NaN or inf; clean them before scoring")
        if len(set(asset_ids)) == len(asset_ids):
            return self._step_distinct(asset_ids, x)
        scores = np.full(len(asset_ids), np.nan, dtype=np.float32)
        contributions = np.zeros((len(asset_ids), n_signals), dtype=np.float32)
        # Repeated assets go in rounds: the k-th reading of an asset in the k-th round.
        seen: dict[str, int] = {}
        rounds: list[list[int]] = []
        for i, asset in enumerate(asset_ids):
            k = seen.get(asset, 0)
            seen[asset] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for positions in rounds:
            s, c = self._step_distinct([asset_ids[i] for i in positions], x[positions])
            scores[positions] = s
            contributions[positions] = c
        return scores, contributions

    def _step_distinct(
        self, asset_ids: Sequence[str], x: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        slots = self._acquire(asset_ids)
        module = self.scorer.forecaster
        device = self.scorer.device
        with torch.inference_mode():
            index = torch.from_numpy(slots).to(device)
            readings = torch.from_numpy(x).to(device)
            pred, h, c = module.step(
                readings, self._h.index_select(0, index), self._c.index_select(0, index)
            )
            self._h.index_copy_(0, index, h)
            self._c.index_copy_(0, index, c)
            errors = ((pred - readings) ** 2).float().cpu().numpy()
        seen_before = self._steps[slots]
        self._steps[slots] += 1
        scores, contributions = scale_errors(errors, self.scorer.error_scale)
        cold = seen_before < self.warmup_steps
        if cold.any():
            scores[cold] = np.nan
            contributions[cold] = 0.0
        return scores, contributions

    def forget(self, asset_ids: Sequence[str]) -> None:
        """Drops the state of these assets (unknown ids are ignored)."""
        for asset in asset_ids:
            slot = self._slots.pop(asset, None)
            if slot is not None:
                self._free.append(slot)

    def snapshot(self, asset: str) -> dict[str, npt.NDArray[Any]]:
        """The asset's state as plain arrays (copies), for checkpointing."""
        slot = self._slots.get(asset)
        if slot is None:
            raise KeyError(f"no stream state for asset {asset!r}")
        with torch.inference_mode():
            h = self._h[slot].cpu().numpy().copy()
            c = self._c[slot].cpu().numpy().copy()
        return {
            "version": np.array(STREAM_STATE_VERSION, dtype=np.int64),
            "h": h,
            "c": c,
            "steps": np.array(self._steps[slot], dtype=np.int64),
        }

    def snapshot_all(self) -> dict[str, dict[str, npt.NDArray[Any]]]:
        """Every asset's state, keyed by asset id."""
        return {asset: self.snapshot(asset) for asset in self._slots}

    def restore(self, asset: str, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Puts back a state from :meth:`snapshot` (replacing any the asset has)."""
        version = int(np.asarray(state.get("version", -1)))
        if version != STREAM_STATE_VERSION:
            raise ValueError(
                f"stream state for {asset!r} has version {version}; this code reads "
                f"version {STREAM_STATE_VERSION}; let the asset warm up afresh instead"
            )
        shape = (self._layers, self._hidden)
        h = np.asarray(state["h"], dtype=np.float32)
        c = np.asarray(state["c"], dtype=np.float32)
        if h.shape != shape or c.shape != shape:
            raise ValueError(
                f"stream state for {asset!r} has h {h.shape}, c {c.shape}; this model "
                f"needs {shape} (was it saved by another model?)"
            )
        slot = int(self._acquire([asset])[0])
        with torch.inference_mode():
            self._h[slot] = torch.from_numpy(h).to(self.scorer.device)
            self._c[slot] = torch.from_numpy(c).to(self.scorer.device)
        self._steps[slot] = int(np.asarray(state["steps"]))

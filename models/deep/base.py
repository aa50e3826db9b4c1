"""What the deep scorers share: fitting, scaled scoring, fine-tuning, persistence.

:class:`DeepScorer` follows :class:`models.protocol.Scorer` and the optional
:class:`models.protocol.OnlineLearning` capability; a subclass only names its
architecture, its training loss and its per-signal error.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.deep.scoring import error_scale_from, scale_errors
from models.deep.training import (
    Progress,
    TrainConfig,
    WindowSet,
    pick_device,
    seeded,
    train_module,
)
from models.protocol import ErrorArray, FloatArray

log = logging.getLogger(__name__)

_MODEL_PREFIX = "model."
_ERROR_SCALE_KEY = "error_scale"


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


class DeepScorer(ABC):
    """What the three deep scorers share: fitting, scaled scoring, fine-tuning, persistence.

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
        #: Why bf16 autocast could not run this model here (then every chunk is fp32).
        self.bf16_unavailable: str | None = None
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
        with seeded(seed, self.device):
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
        self.error_scale = error_scale_from(errors)
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
        with seeded(seed, self.device):
            generator = torch.Generator().manual_seed(seed)
            metrics = train_module(
                self.module, window_set, self._training_loss, config, generator=generator
            )
        errors = self.signal_errors(arr)
        self.error_scale = error_scale_from(errors)
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
                bf16 = (
                    bf16_from is not None
                    and stop - start >= bf16_from
                    and self.bf16_unavailable is None
                )
                errors = self._chunk_errors(batch, bf16)
                out[start:stop] = errors.float().cpu().numpy()
        return out

    def _chunk_errors(self, batch: torch.Tensor, bf16: bool) -> torch.Tensor:
        """One chunk's errors, under bf16 autocast when asked and this platform runs it:
        some CPU builds have no bf16 kernel for a layer (oneDNN's LSTM on CPUs without
        native bf16), which is said once and answered in fp32 from then on."""
        if bf16:
            try:
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    return self._signal_errors(self.module, batch)
            except RuntimeError as exc:
                self.bf16_unavailable = str(exc).splitlines()[0]
                log.warning(
                    "%s: bf16 inference is not available on this %s (%s); scoring in fp32",
                    self.name,
                    self.device.type,
                    self.bf16_unavailable,
                )
        return self._signal_errors(self.module, batch)

    def window_errors(self, windows: npt.ArrayLike) -> ErrorArray:
        """Per-window held-out error (B,) for online validation: mean unscaled squared error.

        The unscaled per-signal error the score is built on (``signal_errors``), averaged
        over signals. Unscaled because the score divides by a per-signal error scale that
        each model estimates on its own training windows: a fine-tuned candidate
        re-estimates it on the new windows, so its scores are about 1.0 there by
        construction, and comparing scores would compare the two scales, not the two fits.
        In normalised units (the normaliser is shared) the raw error is a common currency.
        """
        errors: ErrorArray = self.signal_errors(windows).astype(np.float64).mean(axis=1)
        return errors

    def pooled_error(self, window_errors: ErrorArray) -> float:
        """The mean of :meth:`window_errors` (mean squared error in normalised units).

        The mean rather than the median, because false alerts come from the tail: a
        candidate that fits typical windows better but some normal windows much worse must
        not win.
        """
        return float(window_errors.mean())

    def copy(self) -> Self:
        """An independent copy through ``get_config`` + ``state_tensors`` (never pickled).

        It stays on the same device with the same inference options, which are the running
        process's choices and not part of the saved state.
        """
        return self.from_state(
            self.get_config(),
            self.state_tensors(),
            device=str(self.device),
            inference=self.inference,
        )

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

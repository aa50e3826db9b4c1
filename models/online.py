"""Guarded online learning: fine-tune the scorer on recent normal windows, validate, swap.

A plant changes (seasons, wear, new set-points) and a model trained once slowly turns every
window of the new normal into an alert. :class:`OnlineLearner` lets the scorer follow such
changes without learning the faults it is there to report:

* **Only what the Monitor vouches for.** ``offer`` keeps a window only if the Monitor marked
  it eligible: judged normal, its asset had no open or cooling alert, and no anomalous window
  within a guard interval before it. The learner never decides eligibility itself, so what
  can be learnt is exactly what the alerting layer called normal.
* **Bounded memory, newest first.** Eligible windows go into a ring buffer of the newest
  ``buffer_windows``. A ring rather than a reservoir: the point is to follow the plant *now*;
  a reservoir samples all history since start uniformly, so after a change the old regime
  would dominate it for a long time, and it loses the time order that picking "the most
  recent windows" for validation needs. Memory is ``buffer_windows x window x signals``
  float32 (20,000 x 32 x 8 is 20 MB), plus one copy of it while a fine-tune runs.
* **Rate-limited and off the scoring path.** ``maybe_start`` starts at most one fine-tune
  per ``min_interval_s`` and only after ``min_windows`` new eligible windows, on a *copy* of
  the serving scorer, in a background thread that reads only a snapshot of the buffer taken
  when it starts. The fine-tune competes with scoring for the CPU (PyTorch's intra-op thread
  pool is process-wide, and this module sets no thread count), which is why it is rare.
  At production size (window 32, 8 signals, 16,000 training windows, 3 epochs, default
  model sizes, one thread) a fine-tune took 6.5 s (LSTM forecaster), 9 s (LSTM-AE), 11.5 s
  (conv-AE) and 0.1 s (PCA). The deep fine-tune seeds torch's global generator (for
  dropout) inside ``torch.random.fork_rng``; scoring draws no random numbers, so it is not
  disturbed, but a background fine-tune is reproducible only while nothing else in the
  process draws from that generator (``background=False`` always is).
* **Validated before it serves.** The snapshot is put in time order; its newest
  ``holdout_fraction`` is held out (never trained on), ``window - 1`` windows before that are
  dropped (so, for one asset at stride 1, no training window shares a reading with a held-out
  one), and the rest is trained on. Both models are then judged on the same held-out windows
  by :func:`validation_error`, and the candidate replaces the current model only if its error
  is at most ``max_score_ratio`` times the current model's.
* **Watched after it serves.** For the ``rollback_windows`` verdicts after a swap, the
  anomalous rate is compared with the rate over the same number of verdicts before it; at
  ``rollback_anomaly_ratio`` times that rate (floored at ``ROLLBACK_MIN_BASE_RATE``) the
  previous model comes back. A real fault right after a swap also trips this; going back to
  the model that was trusted before is the safe answer then too. After a rollback the buffer
  is emptied (windows the rejected model judged normal are not trusted) and the rate limit
  restarts.

The normaliser is never changed: every window already in the stream state's ring buffers was
normalised with it, so a new one would shift them all. A candidate is a new
:class:`~models.artifact.TrainedModel` (new content-hash version) with the parent's signals,
window and normaliser, calibration scores from the held-out windows, and its lineage in
``metadata["online"]``. It lives in memory; saving it is the caller's choice.

Only scorers with a ``fine_tune`` step and a held-out error that compares two models fairly
take part: the deep scorers and PCA. Half-Space Trees' score is a mass ratio that each model
normalises by its own training data, so two of them cannot be compared on held-out windows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from models.artifact import TrainedModel
from models.baseline import PCAScorer
from models.deep import DeepScorer
from models.protocol import FloatArray, Scorer
from models.registry import scorer_from_state

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: The pre-swap anomalous rate the rollback watch compares with is at least this: with a
#: near-zero rate before the swap, a handful of anomalous windows would otherwise trip it.
ROLLBACK_MIN_BASE_RATE = 0.01

_SUPPORTED = "lstm-ae, lstm-forecaster, conv-ae and pca"


@runtime_checkable
class FineTunable(Protocol):
    """A scorer that can continue learning from recent windows, in place."""

    def fine_tune(
        self, windows: FloatArray, *, epochs: int, lr_scale: float, seed: int
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OnlineConfig:
    """Settings of :class:`OnlineLearner`; off unless ``enabled``.

    ``min_interval_s`` is the least time between fine-tune starts (also after start-up and
    after a rollback); ``min_windows`` the new eligible windows needed since the last start;
    ``buffer_windows`` the newest eligible windows kept; ``holdout_fraction`` the newest part
    of them held out for validation; ``epochs`` and ``lr_scale`` go to ``fine_tune`` (the
    learning rate is the training one times ``lr_scale``); a candidate is accepted when its
    held-out error is at most ``max_score_ratio`` times the current model's; after a swap the
    next ``rollback_windows`` verdicts are watched and an anomalous rate of at least
    ``rollback_anomaly_ratio`` times the rate before the swap rolls it back.
    """

    enabled: bool = False
    min_interval_s: float = 3600.0
    min_windows: int = 2000
    buffer_windows: int = 20000
    holdout_fraction: float = 0.2
    epochs: int = 3
    lr_scale: float = 0.3
    max_score_ratio: float = 1.0
    rollback_windows: int = 2000
    rollback_anomaly_ratio: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"online.enabled must be true or false, got {self.enabled!r}")
        if not (math.isfinite(self.min_interval_s) and self.min_interval_s >= 0):
            raise ValueError(
                f"online.min_interval_s must be a non-negative number of seconds, got "
                f"{self.min_interval_s!r}"
            )
        for name in ("min_windows", "buffer_windows", "epochs", "rollback_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"online.{name} must be a positive integer, got {value!r}")
        if self.min_windows > self.buffer_windows:
            raise ValueError(
                f"online.min_windows ({self.min_windows}) exceeds online.buffer_windows "
                f"({self.buffer_windows}); the buffer could never hold that many. Raise "
                "buffer_windows or lower min_windows"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(
                f"online.holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}"
            )
        if not (math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ValueError(f"online.lr_scale must be positive, got {self.lr_scale!r}")
        if not (math.isfinite(self.max_score_ratio) and self.max_score_ratio > 0):
            raise ValueError(
                f"online.max_score_ratio must be positive, got {self.max_score_ratio!r}"
            )
        if not (math.isfinite(self.rollback_anomaly_ratio) and self.rollback_anomaly_ratio >= 1):
            raise ValueError(
                "online.rollback_anomaly_ratio must be at least 1 (a rate that many times the "
                f"rate before the swap rolls it back), got {self.rollback_anomaly_ratio!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"online.seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class ModelSwap:
    """A change of the served model, for the caller to apply, log and export.

    ``model`` is the model to serve from now on: the new version on a ``swap``, the previous
    one on a ``rollback``. ``previous_version`` is the version it replaces.
    """

    kind: Literal["swap", "rollback"]
    model: TrainedModel
    previous_version: str
    reason: str
    validation: dict[str, float]


def copy_scorer(scorer: Scorer) -> Scorer:
    """An independent copy through ``get_config`` + ``state_tensors`` (never pickled).

    A deep scorer's copy stays on the same device with the same inference options, which
    are the running process's choices and not part of its saved state.
    """
    config = scorer.get_config()
    tensors = scorer.state_tensors()
    if isinstance(scorer, DeepScorer):
        return type(scorer).from_state(
            config, tensors, device=str(scorer.device), inference=scorer.inference
        )
    return scorer_from_state(config, tensors)


def supports_online(scorer: Scorer) -> bool:
    """Whether ``scorer`` can be fine-tuned and validated by :class:`OnlineLearner`."""
    return isinstance(scorer, DeepScorer | PCAScorer) and isinstance(scorer, FineTunable)


def window_errors(scorer: Scorer, windows: FloatArray) -> F64:
    """Per-window validation error (lower is better), on a scale shared by two models.

    Deep scorers: the unscaled squared error per signal that their score is built on
    (``signal_errors``), averaged over signals. Unscaled because the score divides by a
    per-signal error scale that each model estimates on its own training windows: a
    candidate re-estimates it on the new windows, so its scores are about 1.0 there by
    construction, and comparing scores would compare the two scales, not the two fits. In
    normalised units (the normaliser is shared) the raw error is a common currency.

    PCA: the negative log-likelihood (nats) of each window's newest reading under the
    model's Gaussian (probabilistic PCA: the kept components with their eigenvalues, the
    residual directions sharing the variance left over). Not the PCA score, which is
    divided by its own training means, so a candidate fitted on broad, noisy windows would
    score everything low and win; the log-likelihood charges for that breadth.
    """
    if isinstance(scorer, DeepScorer):
        errors: F64 = scorer.signal_errors(windows).astype(np.float64).mean(axis=1)
        return errors
    if isinstance(scorer, PCAScorer):
        return _pca_nll(scorer, np.asarray(windows, dtype=np.float64)[:, -1, :])
    raise ValueError(
        f"online learning has no held-out error for scorer {scorer.name!r}; it supports "
        f"{_SUPPORTED}"
    )


def validation_error(scorer: Scorer, windows: FloatArray) -> float:
    """One positive number per model for held-out windows; lower is better.

    Deep scorers: the mean of :func:`window_errors` (mean squared error in normalised
    units). The mean rather than the median, because false alerts come from the tail: a
    candidate that fits typical windows better but some normal windows much worse must not
    win. PCA: ``exp(mean negative log-likelihood / signals)``, positive so that a ratio of
    two errors means something (it is the per-signal likelihood ratio; ratio <= 1 is exactly
    "at least as likely").
    """
    per_window = window_errors(scorer, windows)
    if per_window.size == 0:
        raise ValueError("no held-out windows to validate on")
    mean = float(per_window.mean())
    if isinstance(scorer, PCAScorer):
        return math.exp(mean / scorer.n_signals)
    return mean


def _pca_nll(scorer: PCAScorer, readings: F64) -> F64:
    state = scorer.state_tensors()
    mean = np.asarray(state["mean"], np.float64)
    components = np.asarray(state["components"], np.float64)
    eigvals = np.asarray(state["eigvals"], np.float64)
    q_scale = float(np.asarray(state["scales"], np.float64)[1])
    n_signals, k = components.shape
    centred = readings - mean
    t = centred @ components
    quad = (t * t / eigvals).sum(axis=1) if k else np.zeros(centred.shape[0])
    log_det = float(np.log(eigvals).sum())
    n_residual = n_signals - k
    if n_residual > 0:
        # q_scale is the mean squared residual on the training readings, i.e. the sum of the
        # dropped directions' variances: each gets an equal share (the PPCA estimate).
        residual = centred - t @ components.T
        variance = q_scale / n_residual
        quad = quad + (residual * residual).sum(axis=1) / variance
        log_det += n_residual * math.log(variance)
    nll: F64 = 0.5 * (quad + log_det + n_signals * math.log(2 * math.pi))
    return nll


class _WindowRing:
    """The newest ``capacity`` windows with their timestamps; allocated on first use."""

    def __init__(self, capacity: int, window: int, n_signals: int) -> None:
        self.capacity = capacity
        self._shape = (window, n_signals)
        self._windows: FloatArray | None = None
        self._ts_ms = np.zeros(0, np.int64)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, windows: FloatArray, ts_ms: npt.NDArray[np.int64]) -> None:
        if windows.shape[0] == 0:
            return
        if self._windows is None:
            self._windows = np.empty((self.capacity, *self._shape), np.float32)
            self._ts_ms = np.empty(self.capacity, np.int64)
        windows, ts_ms = windows[-self.capacity :], ts_ms[-self.capacity :]
        slots = (self._next + np.arange(windows.shape[0])) % self.capacity
        self._windows[slots] = windows
        self._ts_ms[slots] = ts_ms
        self._next = int(slots[-1] + 1) % self.capacity
        self._size = min(self.capacity, self._size + windows.shape[0])

    def snapshot(self) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Copies in time order (timestamp, then arrival for equal timestamps)."""
        if self._windows is None or self._size == 0:
            return np.zeros((0, *self._shape), np.float32), np.zeros(0, np.int64)
        arrival = (self._next - self._size + np.arange(self._size)) % self.capacity
        order = arrival[np.argsort(self._ts_ms[arrival], kind="stable")]
        return self._windows[order], self._ts_ms[order]

    def clear(self) -> None:
        self._next = 0
        self._size = 0


class _VerdictRing:
    """The anomalous count over the newest ``capacity`` verdicts (the pre-swap rate)."""

    def __init__(self, capacity: int) -> None:
        self._flags = np.zeros(capacity, np.bool_)
        self._next = 0
        self._filled = 0
        self._count = 0

    def add(self, anomalous: npt.NDArray[np.bool_]) -> None:
        capacity = self._flags.shape[0]
        anomalous = anomalous[-capacity:]
        if anomalous.shape[0] == 0:
            return
        slots = (self._next + np.arange(anomalous.shape[0])) % capacity
        # Slots never written hold False, so subtracting them is harmless.
        self._count += int(anomalous.sum()) - int(self._flags[slots].sum())
        self._flags[slots] = anomalous
        self._next = int(slots[-1] + 1) % capacity
        self._filled = min(capacity, self._filled + anomalous.shape[0])

    @property
    def rate(self) -> float:
        return self._count / self._filled if self._filled else 0.0

    @property
    def filled(self) -> int:
        return self._filled


@dataclass
class _Watch:
    """The rollback watch after a swap."""

    previous: TrainedModel
    base_rate: float
    base_windows: int
    trip_count: int
    seen: int = 0
    anomalous: int = 0


@dataclass(frozen=True)
class _Result:
    """What a fine-tune produced: a candidate that passed validation, or why not."""

    parent_version: str
    candidate: TrainedModel | None
    reason: str
    validation: dict[str, float]
    failed: bool = False


@dataclass(frozen=True)
class _Split:
    train: int
    gap: int
    holdout: int


def _split(n: int, window: int, holdout_fraction: float) -> _Split | None:
    holdout = max(1, round(n * holdout_fraction))
    gap = window - 1
    train = n - holdout - gap
    if train < 1:
        return None
    return _Split(train=train, gap=gap, holdout=holdout)


def _fine_tune(
    parent: TrainedModel,
    scorer: Scorer,
    windows: FloatArray,
    ts_ms: npt.NDArray[np.int64],
    config: OnlineConfig,
) -> _Result:
    """Fine-tune ``scorer`` (a copy of the parent's) and validate it; runs off the scoring path."""
    started = time.perf_counter()
    split = _split(windows.shape[0], parent.window, config.holdout_fraction)
    if split is None:
        raise ValueError(f"{windows.shape[0]} windows are too few to split for validation")
    train = windows[: split.train]
    holdout = windows[windows.shape[0] - split.holdout :]
    # The copy still equals the serving model here: measure the current error first.
    current_windows = window_errors(scorer, holdout)
    current = validation_error(scorer, holdout)
    if not isinstance(scorer, FineTunable):
        raise ValueError(f"scorer {scorer.name!r} has no fine_tune step; supported: {_SUPPORTED}")
    fit_started = time.perf_counter()
    metrics = scorer.fine_tune(
        train, epochs=config.epochs, lr_scale=config.lr_scale, seed=config.seed
    )
    fit_seconds = time.perf_counter() - fit_started
    candidate_windows = window_errors(scorer, holdout)
    candidate = validation_error(scorer, holdout)
    ratio = candidate / current if current > 0 else (1.0 if candidate == 0 else math.inf)
    validation: dict[str, float] = {
        "current_error": current,
        "candidate_error": candidate,
        "ratio": ratio,
        "max_score_ratio": config.max_score_ratio,
        "train_windows": float(split.train),
        "gap_windows": float(split.gap),
        "holdout_windows": float(split.holdout),
        "current_window_p50": float(np.quantile(current_windows, 0.5)),
        "current_window_p95": float(np.quantile(current_windows, 0.95)),
        "candidate_window_p50": float(np.quantile(candidate_windows, 0.5)),
        "candidate_window_p95": float(np.quantile(candidate_windows, 0.95)),
        "fine_tune_seconds": fit_seconds,
        "seconds": time.perf_counter() - started,
    }
    n_hold = split.holdout
    if not (math.isfinite(candidate) and candidate <= config.max_score_ratio * current):
        reason = (
            f"candidate rejected: held-out error {candidate:.6g} is above "
            f"{config.max_score_ratio:g} x the current model's {current:.6g} on {n_hold} "
            f"recent normal windows; keeping {parent.version}"
        )
        return _Result(parent.version, None, reason, validation)

    calibration, _ = scorer.score_batch(holdout)
    lineage = parent.metadata.get("online")
    parent_online: Mapping[str, Any] = lineage if isinstance(lineage, Mapping) else {}
    generation = parent_online.get("generation", 0)
    origin = parent.metadata.get("origin")
    if not isinstance(origin, Mapping):
        origin = {k: parent.metadata[k] for k in ("training", "data") if k in parent.metadata}
    metadata: dict[str, Any] = {
        "online": {
            "parent_version": parent.version,
            "root_version": parent_online.get("root_version", parent.version),
            "generation": (generation if isinstance(generation, int) else 0) + 1,
            "config": asdict(config),
            "fine_tune": metrics,
            "validation": validation,
            "data": {
                "train_first_ts_ms": int(ts_ms[0]),
                "train_last_ts_ms": int(ts_ms[split.train - 1]),
                "holdout_first_ts_ms": int(ts_ms[-n_hold]),
                "holdout_last_ts_ms": int(ts_ms[-1]),
            },
        },
        "calibration": {"source": "online-holdout", "windows": n_hold, "kept": n_hold},
        "origin": dict(origin),
    }
    model = TrainedModel.create(
        scorer, parent.signals, parent.normalizer, calibration, metadata=metadata
    )
    reason = (
        f"fine-tuned {parent.name} {parent.version} -> {model.version} on {split.train} recent "
        f"normal windows: held-out error {candidate:.6g} vs {current:.6g} "
        f"(ratio {ratio:.3f}, limit {config.max_score_ratio:g}) on {n_hold} windows"
    )
    return _Result(parent.version, model, reason, validation)


class OnlineLearner:
    """Fine-tunes the served model on what the Monitor judged normal; validates; rolls back.

    Call ``observe`` with every judged window's verdict and ``offer`` with the windows and
    their eligibility, then ``maybe_start`` and ``poll`` once per batch, all from the scoring
    thread; serve ``poll``'s :class:`ModelSwap` model from the next batch on. With
    ``background=False`` the fine-tune runs inside ``maybe_start`` (deterministic, for tests).

    >>> import numpy as np
    >>> from models.baseline import PCAScorer
    >>> from models.protocol import Normalizer
    >>> rng = np.random.default_rng(0)
    >>> scorer = PCAScorer(n_signals=2, window=4)
    >>> _ = scorer.fit([rng.normal(size=(500, 2)).astype(np.float32)])
    >>> unit = Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32))
    >>> model = TrainedModel.create(scorer, ("temp", "flow"), unit, np.ones(10, np.float32))
    >>> now_s = [0.0]
    >>> config = OnlineConfig(enabled=True, min_interval_s=60, min_windows=200,
    ...                       buffer_windows=1000)
    >>> learner = OnlineLearner(model, config, clock=lambda: now_s[0], background=False)
    >>> new_set_point = rng.normal(loc=(2.0, 0.0), size=(300, 4, 2)).astype(np.float32)
    >>> learner.offer(new_set_point, np.ones(300, bool), np.arange(300))
    >>> learner.maybe_start()  # too soon after start-up
    False
    >>> now_s[0] = 60.0
    >>> learner.maybe_start()
    True
    >>> swap = learner.poll()
    >>> swap.kind, swap.previous_version == model.version, learner.model is swap.model
    ('swap', True, True)
    """

    def __init__(
        self,
        model: TrainedModel,
        config: OnlineConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        if config.enabled:
            if not supports_online(model.scorer):
                raise ValueError(
                    f"online learning is enabled but model {model.name} {model.version} uses "
                    f"scorer {model.scorer.name!r}, which it does not support (supported: "
                    f"{_SUPPORTED}). Set online.enabled to false or train a supported scorer"
                )
            if _split(config.min_windows, model.window, config.holdout_fraction) is None:
                raise ValueError(
                    f"online.min_windows={config.min_windows} leaves no training windows "
                    f"after holding out {config.holdout_fraction:g} of them and a gap of "
                    f"window - 1 = {model.window - 1}; raise min_windows"
                )
        self._config = config
        self._clock = clock
        self._background = background
        self._model = model
        self._buffer = _WindowRing(config.buffer_windows, model.window, model.n_signals)
        self._verdicts = _VerdictRing(config.rollback_windows)
        self._new_windows = 0
        self._last_start_s = clock()
        self._thread: threading.Thread | None = None
        self._result: _Result | None = None
        self._watch: _Watch | None = None
        self._rollback: ModelSwap | None = None
        self._closed = False
        self._fine_tunes = 0
        self._swaps = 0
        self._rollbacks = 0
        self._rejected = 0
        self._failed = 0
        self._last_seconds = 0.0
        self._last_outcome = "none"

    @property
    def model(self) -> TrainedModel:
        """The model to serve now."""
        return self._model

    @property
    def config(self) -> OnlineConfig:
        return self._config

    # -- fed from the scoring thread ----------------------------------------------------------

    def offer(
        self,
        windows: npt.ArrayLike,
        eligible: npt.ArrayLike,
        ts_ms: npt.ArrayLike,
    ) -> None:
        """Keep the eligible ones of judged windows (n, W, S), normalised as scored."""
        if not self._config.enabled:
            return
        arr = np.asarray(windows)
        flags = np.asarray(eligible)
        stamps = np.asarray(ts_ms)
        shape = (self._model.window, self._model.n_signals)
        if arr.ndim != 3 or arr.shape[1:] != shape:
            raise ValueError(
                f"windows have shape {arr.shape}; expected (n, {shape[0]}, {shape[1]})"
            )
        n = arr.shape[0]
        if flags.dtype != np.bool_ or flags.shape != (n,):
            raise ValueError(
                f"eligible must be a boolean array with one flag per window ({n}), got dtype "
                f"{flags.dtype} and shape {flags.shape}"
            )
        if stamps.shape != (n,) or stamps.dtype.kind not in "iu":
            raise ValueError(
                f"ts_ms must be integer epoch milliseconds, one per window ({n}), got dtype "
                f"{stamps.dtype} and shape {stamps.shape}"
            )
        kept = np.asarray(arr[flags], dtype=np.float32)
        if not np.isfinite(kept).all():
            raise ValueError("eligible windows contain NaN or inf; they cannot be learnt")
        self._buffer.add(kept, stamps[flags].astype(np.int64))
        self._new_windows += int(kept.shape[0])

    def observe(self, anomalous: npt.ArrayLike) -> None:
        """Every judged window's verdict, in order: the rollback watch and its baseline."""
        if not self._config.enabled:
            return
        flags = np.asarray(anomalous)
        if flags.dtype != np.bool_ or flags.ndim != 1:
            raise ValueError(
                f"anomalous must be a 1-D boolean array, got dtype {flags.dtype} and shape "
                f"{flags.shape}"
            )
        watch = self._watch
        if watch is not None and self._rollback is None:
            watched = flags[: self._config.rollback_windows - watch.seen]
            watch.seen += int(watched.shape[0])
            watch.anomalous += int(watched.sum())
            if watch.anomalous >= watch.trip_count:
                self._rollback = self._rollback_swap(watch)
            elif watch.seen >= self._config.rollback_windows:
                logger.info(
                    "model %s %s kept after its watch: %d of %d windows anomalous "
                    "(rolls back at %d)",
                    self._model.name,
                    self._model.version,
                    watch.anomalous,
                    watch.seen,
                    watch.trip_count,
                )
                self._watch = None  # the previous model is no longer needed
        self._verdicts.add(flags)

    def maybe_start(self) -> bool:
        """Start a fine-tune if enabled, due, fed enough and nothing else is in progress."""
        cfg = self._config
        busy = (
            self._thread is not None
            or self._result is not None
            or self._watch is not None
            or self._rollback is not None
        )
        if not cfg.enabled or self._closed or busy:
            return False
        now_s = self._clock()
        if now_s - self._last_start_s < cfg.min_interval_s or self._new_windows < cfg.min_windows:
            return False
        windows, ts_ms = self._buffer.snapshot()
        if _split(windows.shape[0], self._model.window, cfg.holdout_fraction) is None:
            return False
        parent = self._model
        scorer = copy_scorer(parent.scorer)
        self._last_start_s = now_s
        self._new_windows = 0
        self._fine_tunes += 1
        logger.info(
            "fine-tuning %s %s on %d recent normal windows (%s)",
            parent.name,
            parent.version,
            windows.shape[0],
            "in the background" if self._background else "now",
        )

        def work() -> None:
            try:
                self._result = _fine_tune(parent, scorer, windows, ts_ms, cfg)
            except Exception as exc:  # a failed fine-tune must never stop the monitor
                logger.exception("fine-tuning %s %s failed", parent.name, parent.version)
                self._result = _Result(
                    parent.version, None, f"fine-tune failed: {exc!r}", {}, failed=True
                )

        if self._background:
            self._thread = threading.Thread(target=work, name="plantwatch-fine-tune", daemon=True)
            self._thread.start()
        else:
            work()
        return True

    def poll(self) -> ModelSwap | None:
        """A model change to apply now (a validated swap or a rollback), else None."""
        if self._rollback is not None:
            return self._apply_rollback(self._rollback)
        if self._thread is not None:
            if self._thread.is_alive():
                return None
            self._thread.join()
            self._thread = None
        result, self._result = self._result, None
        if result is None:
            return None
        self._last_seconds = result.validation.get("seconds", 0.0)
        if result.failed:
            self._failed += 1
            self._last_outcome = "failed"
            return None
        if result.candidate is None:
            self._rejected += 1
            self._last_outcome = "rejected"
            logger.info("%s", result.reason)
            return None
        if result.parent_version != self._model.version:
            # Cannot happen while the learner alone changes the model (no fine-tune starts
            # during a rollback watch); kept so a stale candidate can never be served.
            self._rejected += 1
            self._last_outcome = "rejected"
            logger.warning(
                "discarding candidate of %s: the served model is now %s",
                result.parent_version,
                self._model.version,
            )
            return None
        previous = self._model
        base = max(self._verdicts.rate, ROLLBACK_MIN_BASE_RATE)
        limit = self._config.rollback_anomaly_ratio * base * self._config.rollback_windows
        self._watch = _Watch(
            previous=previous,
            base_rate=self._verdicts.rate,
            base_windows=self._verdicts.filled,
            trip_count=max(1, math.ceil(limit - 1e-9)),
        )
        self._model = result.candidate
        self._swaps += 1
        self._last_outcome = "swap"
        logger.info("model swap: %s", result.reason)
        return ModelSwap(
            kind="swap",
            model=result.candidate,
            previous_version=previous.version,
            reason=result.reason,
            validation=dict(result.validation),
        )

    # -- rollback -----------------------------------------------------------------------------

    def _rollback_swap(self, watch: _Watch) -> ModelSwap:
        cfg = self._config
        rate = watch.anomalous / watch.seen if watch.seen else 0.0
        base = max(watch.base_rate, ROLLBACK_MIN_BASE_RATE)
        reason = (
            f"rollback: {watch.anomalous} of the {watch.seen} windows judged since the swap to "
            f"{self._model.version} were anomalous, which reaches {cfg.rollback_anomaly_ratio:g}"
            f" x the rate before it ({watch.base_rate:.2%} over {watch.base_windows} windows, "
            f"floored at {ROLLBACK_MIN_BASE_RATE:.0%}) over {cfg.rollback_windows} windows; "
            f"back to {watch.previous.version}"
        )
        return ModelSwap(
            kind="rollback",
            model=watch.previous,
            previous_version=self._model.version,
            reason=reason,
            validation={
                "rate_before": watch.base_rate,
                "windows_before": float(watch.base_windows),
                "rate_after": rate,
                "windows_after": float(watch.seen),
                "anomalous_after": float(watch.anomalous),
                "trip_count": float(watch.trip_count),
                "limit_rate": cfg.rollback_anomaly_ratio * base,
            },
        )

    def _apply_rollback(self, swap: ModelSwap) -> ModelSwap:
        self._rollback = None
        self._watch = None
        self._model = swap.model
        self._rollbacks += 1
        self._last_outcome = "rollback"
        # What the rolled-back model judged normal is not trusted, nor what it was made from.
        self._buffer.clear()
        self._new_windows = 0
        self._last_start_s = self._clock()
        logger.warning("model %s", swap.reason)
        return swap

    # -- introspection and shutdown -----------------------------------------------------------

    def buffered(self) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Copies of the buffered windows and their timestamps, in time order."""
        return self._buffer.snapshot()

    def stats(self) -> dict[str, int | float | str]:
        """Counters and state for logs and metrics."""
        watch = self._watch
        return {
            "enabled": int(self._config.enabled),
            "model_version": self._model.version,
            "buffer_windows": len(self._buffer),
            "buffer_capacity": self._buffer.capacity,
            "new_windows": self._new_windows,
            "fine_tunes": self._fine_tunes,
            "swaps": self._swaps,
            "rollbacks": self._rollbacks,
            "rejected": self._rejected,
            "failed": self._failed,
            "running": int(self._thread is not None and self._thread.is_alive()),
            "watch_windows_left": (
                0 if watch is None else self._config.rollback_windows - watch.seen
            ),
            "last_seconds": self._last_seconds,
            "last_outcome": self._last_outcome,
        }

    def close(self) -> None:
        """Start no more fine-tunes and wait for a running one (its result stays pollable).

        A fine-tune is not interruptible, so this can block for its length (seconds).
        """
        self._closed = True
        if self._thread is not None:
            self._thread.join()

"""The online learner: buffer what the Monitor vouches for, fine-tune rarely, swap, watch.

See :mod:`models.online` for the guards. The learner works on any scorer with the
:class:`models.protocol.OnlineLearning` capability and asks nothing else about it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.artifact import TrainedModel
from models.online.buffers import VerdictRing, WindowRing
from models.online.candidate import Result, fine_tune_candidate, split_windows
from models.online.config import OnlineConfig
from models.protocol import FloatArray, OnlineScorer
from models.registry import online_scorers

logger = logging.getLogger(__name__)

#: The pre-swap anomalous rate the rollback watch compares with is at least this: with a
#: near-zero rate before the swap, a handful of anomalous windows would otherwise trip it.
ROLLBACK_MIN_BASE_RATE = 0.01


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


@dataclass
class _Watch:
    """The rollback watch after a swap."""

    previous: TrainedModel
    base_rate: float
    base_windows: int
    trip_count: int
    seen: int = 0
    anomalous: int = 0


def _online_scorer(model: TrainedModel) -> OnlineScorer:
    """The model's scorer as an :class:`OnlineScorer`, or an error saying what to do."""
    scorer = model.scorer
    if not isinstance(scorer, OnlineScorer):
        raise ValueError(
            f"online learning is enabled but model {model.name} {model.version} uses "
            f"scorer {scorer.name!r}, which does not learn online (supported: "
            f"{', '.join(online_scorers())}). Set online.enabled to false or train a "
            "supported scorer"
        )
    return scorer


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
    >>> config = OnlineConfig(enabled=True, min_interval_s=60.0, min_windows=200,
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
            _online_scorer(model)
            if split_windows(config.min_windows, model.window, config.holdout_fraction) is None:
                raise ValueError(
                    f"online.min_windows={config.min_windows} leaves no training windows "
                    f"after holding out {config.holdout_fraction:g} of them and a gap of "
                    f"window - 1 = {model.window - 1}; raise min_windows"
                )
        self._config = config
        self._clock = clock
        self._background = background
        self._model = model
        self._buffer = WindowRing(config.buffer_windows, model.window, model.n_signals)
        self._verdicts = VerdictRing(config.rollback_windows)
        self._new_windows = 0
        self._last_start_s = clock()
        self._thread: threading.Thread | None = None
        self._result: Result | None = None
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
        if split_windows(windows.shape[0], self._model.window, cfg.holdout_fraction) is None:
            return False
        parent = self._model
        scorer = _online_scorer(parent).copy()
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
                self._result = fine_tune_candidate(parent, scorer, windows, ts_ms, cfg)
            except Exception as exc:  # a failed fine-tune must never stop the monitor
                logger.exception("fine-tuning %s %s failed", parent.name, parent.version)
                self._result = Result(
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

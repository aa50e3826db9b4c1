"""The PCA T²+Q scorer: classic multivariate statistical process monitoring, fully numpy."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from models.baseline.inputs import (
    F64,
    check_segments,
    check_windows,
    config_int,
    positive_int,
    state_tensor,
)
from models.protocol import ErrorArray, FloatArray, contribution_shares

#: The time-delay embedding of a univariate model: each reading with the 7 before it.
UNIVARIATE_LAGS = 8
#: With ``separate`` statistics, each is scaled so that this quantile of it over the
#: training windows equals the combined index's.
SEPARATE_MATCH_QUANTILE = 0.99
#: ``separate`` by default from this many signals: the combined index dilutes one signal's
#: deviation by its share of the residual directions, which only many signals make small.
SEPARATE_MIN_SIGNALS = 10


class PCAScorer:
    """Hotelling T² plus Q (squared prediction error) on a PCA model of normal readings.

    PCA is fitted on every reading of the normal history (already normalised, so the
    covariance is close to the correlation matrix); it keeps the fewest components that
    explain ``variance`` of the total. A reading's T² measures how unusual it is *inside* the
    normal subspace, Q how far it falls *outside* it (a broken correlation). Each is divided by
    its mean on the training readings so that both count equally and normal data scores
    about 2.

    The score of a window is the mean of that per-reading score over the window's last
    ``tail`` readings (default 4). Averaging a few readings cuts the noise variance of the
    statistic about ``tail``-fold, so a single noisy reading does not trip the threshold,
    while a real fault is seen within ``tail - 1`` readings; older readings in the window
    would only dilute a fresh fault.

    Per reading the score is the combined index ``x' Phi x`` with
    ``Phi = P diag(1/lambda) P' / t2_scale + (I - P P') / q_scale``. Contributions are its
    reconstruction-based contributions (Alcala & Qin 2009), ``(Phi x)_j² / Phi_jj``, averaged
    over the same tail and normalised to shares. They are non-negative and, unlike plain
    shares of the squared residual, they do not smear a fault in one signal onto whichever
    correlated signal has the largest residual loading.

    **Many signals: each statistic also on its own** (``separate``, the default from
    ``SEPARATE_MIN_SIGNALS`` = 10 signals). The combined index adds T² and Q, each over its
    whole dimension, so one signal off among fifty moves it by that signal's share of every
    residual direction (a sensor 8 noise-sd off raises a 52-signal index from ~2 to ~3.5),
    and a move inside the subspace is diluted by Q's noise. So three more statistics are
    judged: T² alone, Q alone, and the largest reconstruction-based contribution of one
    signal divided by that signal's mean contribution in training (the same sensor: ~20
    times its normal level). Each is scaled so that its ``SEPARATE_MATCH_QUANTILE`` (99 %)
    quantile over the training windows equals the combined index's, and counts only past
    that level: below it the score is the combined index, above it the largest of the four.
    Normal data thus scores as before. Measured (docs/BENCHMARKS.md): many-variable process
    data at minute cadence, detection rate 40 -> 48 % at under a third of the false-alarm
    rate. Where it loses: a step of one slow disturbance inside the subspace (T²'s fault) is
    found less often; and with few signals, where the combined index dilutes little, T² alone
    and one signal's contribution judge an operating point the history never reached far
    harder than the combined index (5 signals: 6 false alerts in 20 minutes against none),
    hence the default.

    A constant signal (normalised to 0 in training) has no variance, so it never enters the
    principal subspace: any later movement shows up in Q and is attributed to it.

    **One signal: a time-delay embedding.** With one signal, PCA of single readings is only
    a check of the value against its training range: a spike or a burst of noise inside the
    range, the common anomalies of a univariate stream, scores as normal. So each reading is
    taken with the ``lags - 1`` readings before it, and the model is fitted on those
    ``lags x signals`` vectors (the trajectory matrix of singular spectrum analysis): the
    subspace holds the signal's normal local shape (level, slope, the cycle), Q whatever
    breaks it. ``lags`` defaults to 8 for one signal and to 1 (plain readings) for more,
    where the relations between signals carry the information (measured: bench/univariate.py
    for one signal; SKAB and the simulator, 5-8 signals, are the evidence for plain
    readings; nothing was measured between). Contributions of a signal's lags are summed, so
    they stay per signal.

    A single signal has no relations to keep, and its level is what drifts in the streams
    one signal comes in (traffic that grows, a temperature that wanders, a level that moves
    and stays): a model of the level floods for as long as the new level lasts. So by
    default (``centre``) a univariate model takes each embedded vector relative to its own
    mean and judges the local shape alone: a spike, a burst of noise, a step's edge, a
    change of the cycle. How far the level itself may go is the sensor-health envelope's
    call (``out_of_range``), which sits beside every model.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(500, 1))
    >>> normal = np.hstack([base, base, rng.normal(size=(500, 1))]).astype(np.float32)
    >>> normal += 0.1 * rng.normal(size=normal.shape).astype(np.float32)
    >>> scorer = PCAScorer(n_signals=3, window=8)
    >>> _ = scorer.fit([normal])
    >>> broken = normal[:8].copy()
    >>> broken[-4:, 1] -= 3.0  # signal 1 stops following signal 0
    >>> scores, contributions = scorer.score_batch(np.stack([normal[8:16], broken]))
    >>> bool(scores[1] > 10 * scores[0]), int(contributions[1].argmax())
    (True, 1)
    """

    name = "pca"
    #: A covariance from this many readings per feature scores its own training readings
    #: about as it scores new ones (T²'s in-sample bias is ~features/readings), so training
    #: windows may calibrate a threshold when held-out ones are few (models.training).
    unbiased_in_sample_rows = 20

    def __init__(
        self,
        n_signals: int,
        window: int = 32,
        *,
        variance: float = 0.95,
        tail: int = 4,
        max_components: int | None = None,
        lags: int | None = None,
        centre: bool | None = None,
        separate: bool | None = None,
    ) -> None:
        self.n_signals = positive_int(n_signals, "n_signals")
        self.window = positive_int(window, "window")
        if not (isinstance(variance, int | float) and 0.0 < float(variance) <= 1.0):
            raise ValueError(f"variance must be in (0, 1], got {variance!r}")
        self.variance = float(variance)
        self.tail = min(positive_int(tail, "tail"), self.window)
        self.max_components = (
            None if max_components is None else positive_int(max_components, "max_components")
        )
        wanted = (UNIVARIATE_LAGS if self.n_signals == 1 else 1) if lags is None else lags
        # Every scored reading of the tail needs its lags inside the window.
        self.lags = min(positive_int(wanted, "lags"), self.window - self.tail + 1)
        #: The dimension PCA works in: every signal at each of its lags.
        self.n_features = self.n_signals * self.lags
        #: Each embedded vector taken relative to its own mean: the local shape only (never
        #: for plain readings, which centring would make all zero).
        wants_centre = self.n_signals == 1 if centre is None else bool(centre)
        self.centre = wants_centre and self.lags > 1
        #: Judge T², Q and each signal's contribution also on their own, beside the
        #: combined index (see the class docstring): by default with many signals, never
        #: with one (no relations to break).
        wants_separate = self.n_signals >= SEPARATE_MIN_SIGNALS if separate is None else separate
        self.separate = wants_separate and self.n_signals > 1
        self._mean: F64 | None = None
        self._components: F64 = np.zeros((self.n_features, 0))
        self._eigvals: F64 = np.zeros(0)
        self._scales: F64 = np.ones(2)
        self._phi: F64 = np.eye(self.n_features)
        self._phi_diag: F64 = np.ones(self.n_features)
        #: ``separate``: each signal's mean contribution on the training readings, the
        #: divisors of T² alone, Q alone and the largest scaled contribution, and last the
        #: combined index's level they are matched at.
        self._statistic_scales: F64 = np.ones(self.n_signals + 4)

    @property
    def n_components(self) -> int:
        return int(self._components.shape[1])

    def _embed(self, rows: F64) -> F64:
        """Each reading of ``rows`` (..., steps, signals) with its ``lags - 1`` predecessors:
        (..., steps - lags + 1, lags * signals), lag-major (oldest first)."""
        if self.lags == 1:
            return rows
        view = np.lib.stride_tricks.sliding_window_view(rows, self.lags, axis=-2)
        # view: (..., steps - lags + 1, signals, lags) -> (..., steps - lags + 1, lags, signals)
        view = np.swapaxes(view, -1, -2)
        if self.centre:
            view = view - view.mean(axis=-2, keepdims=True)
        return view.reshape(*view.shape[:-2], self.n_features)

    def fit(self, segments: Sequence[FloatArray], *, seed: int = 0) -> dict[str, Any]:
        """Fit the PCA model on every reading of ``segments``; ``seed`` is unused (no
        randomness) and accepted for the protocol."""
        started = time.perf_counter()
        segs = check_segments(segments, self.n_signals)
        vectors = [self._embed(seg) for seg in segs if seg.shape[0] >= self.lags]
        readings = np.concatenate(vectors, axis=0) if vectors else np.zeros((0, self.n_features))
        if readings.shape[0] < 2:
            raise ValueError(
                f"PCA needs at least 2 normal readings to estimate a covariance; got "
                f"{readings.shape[0]}"
                + (f" (each with its {self.lags - 1} predecessors)" if self.lags > 1 else "")
            )
        mean = readings.mean(axis=0)
        centred = readings - mean
        cov = centred.T @ centred / (readings.shape[0] - 1)
        eigvals, eigvecs = np.linalg.eigh(cov)
        order = np.argsort(eigvals)[::-1]
        eigvals = np.clip(eigvals[order], 0.0, None)
        eigvecs = eigvecs[:, order]
        total = float(eigvals.sum())
        if total <= 1e-12:
            k = 0  # every signal constant: nothing varies, all deviation is residual
        else:
            ratio = np.cumsum(eigvals) / total
            k = int(np.searchsorted(ratio, self.variance - 1e-12) + 1)
            # Never keep a direction without variance: T² would divide by ~0 there.
            k = min(k, int((eigvals > 1e-9 * total).sum()))
            if self.max_components is not None:
                k = min(k, self.max_components)
            k = max(k, 1)
        components = np.ascontiguousarray(eigvecs[:, :k])
        lam = eigvals[:k].copy()
        self._set_model(mean, components, lam, np.ones(2))
        t2, resid = self._decompose(centred[:, None, :])
        q = (resid * resid).sum(axis=-1)
        # Floors keep the ratio finite when an index is identically ~0 in training (no
        # components, or data exactly inside the subspace): then any deviation is a big score.
        q_floor = 1e-6 * max(total / self.n_features, 1.0)
        scales = np.array([max(float(t2.mean()), 1e-6), max(float(q.mean()), q_floor)])
        self._set_model(mean, components, lam, scales)
        per_reading = t2[:, 0] / scales[0] + q[:, 0] / scales[1]
        if self.separate:
            self._statistic_scales = self._fit_statistic_scales(
                centred, [v.shape[0] for v in vectors]
            )
        explained = float(lam.sum() / total) if total > 0 else 1.0
        return {
            "readings": int(readings.shape[0]),
            "n_components": k,
            "explained_variance": explained,
            "t2_scale": float(scales[0]),
            "q_scale": float(scales[1]),
            "train_reading_score_p50": float(np.quantile(per_reading, 0.5)),
            "train_reading_score_p99": float(np.quantile(per_reading, 0.99)),
            "seconds": time.perf_counter() - started,
        }

    def _statistics(self, centred: F64) -> tuple[F64, F64, F64]:
        """Per centred embedded reading (..., features): T² and Q, each divided by its mean
        on the training readings, and the reconstruction-based contribution of each signal
        to their sum, ``(Phi x)_j² / Phi_jj`` (a signal's lags summed) -> (...), (...),
        (..., signals)."""
        t2, resid = self._decompose(centred)
        phi_x = centred @ self._phi
        rbc = phi_x * phi_x / self._phi_diag
        per_signal = rbc.reshape(*rbc.shape[:-1], self.lags, self.n_signals).sum(axis=-2)
        q = (resid * resid).sum(axis=-1)
        return t2 / self._scales[0], q / self._scales[1], per_signal

    def _separate_scores(self, t2: F64, q: F64, per_signal: F64) -> F64:
        """T² alone, Q alone and the largest contribution, each scaled to its own training
        level, for statistics already averaged over a window's tail: (..., 3)."""
        levels = self._statistic_scales
        n = self.n_signals
        own = (per_signal / levels[:n]).max(axis=-1)
        return np.stack([t2, q, own], axis=-1) / levels[n : n + 3]

    def _fit_statistic_scales(self, centred: F64, lengths: Sequence[int]) -> F64:
        """``separate``: each signal's mean contribution on the training readings, then the
        divisors of T² alone, Q alone and the largest contribution so scaled that make each
        one's ``SEPARATE_MATCH_QUANTILE`` quantile over the training windows (their last
        ``tail`` readings, within a segment) equal the combined index's, and that level."""
        t2, q, per_signal = self._statistics(centred)
        readings = np.column_stack([t2, q, per_signal])
        tails = []
        start = 0
        for length in lengths:
            seg = readings[start : start + length]
            start += length
            if seg.shape[0] >= self.tail:
                view = np.lib.stride_tricks.sliding_window_view(seg, self.tail, axis=0)
                tails.append(view.mean(axis=-1))
        means = np.concatenate(tails) if tails else readings
        floor = 1e-9 * max(float(per_signal.mean()), 1e-12)
        self._statistic_scales = np.concatenate(
            [np.maximum(per_signal.mean(axis=0), floor), np.ones(4)]
        )
        combined = means[:, 0] + means[:, 1]
        alone = self._separate_scores(means[:, 0], means[:, 1], means[:, 2:])
        quantile = SEPARATE_MATCH_QUANTILE
        top = np.maximum(np.quantile(alone, quantile, axis=0), 1e-12)
        level = max(float(np.quantile(combined, quantile)), 1e-12)
        return np.concatenate([self._statistic_scales[: self.n_signals], top / level, [level]])

    def fine_tune(
        self, windows: FloatArray, *, epochs: int = 3, lr_scale: float = 0.3, seed: int = 0
    ) -> dict[str, Any]:
        """Refits the PCA model on the newest reading of each of ``windows`` (B, W, S).

        For online learning (:mod:`models.online`), which fine-tunes a *copy* of the serving
        scorer. PCA has no weights to nudge, so this is a refit from scratch with the same
        ``variance``, ``tail`` and ``max_components`` (the number of components may change).
        Only each window's newest reading (with its lags) is used: with stride-1 windows that
        counts every reading of the stream once instead of ``window`` times. ``epochs``,
        ``lr_scale`` and ``seed`` are accepted for the common fine-tune signature and unused.
        """
        arr = check_windows(windows, self.window, self.n_signals)
        if self.lags == 1:
            segments = [arr[:, -1, :].astype(np.float32)]
        else:
            # One segment per window, its newest reading with the lags before it.
            segments = list(arr[:, -self.lags :, :].astype(np.float32))
        metrics = self.fit(segments, seed=seed)
        metrics["windows"] = int(arr.shape[0])
        return metrics

    def window_errors(self, windows: FloatArray) -> ErrorArray:
        """Per-window held-out error (B,) for online validation: a negative log-likelihood.

        The negative log-likelihood (nats) of each window's newest reading (with its lags)
        under the model's Gaussian (probabilistic PCA: the kept components with their eigenvalues,
        the residual directions sharing the variance left over). Not the PCA score, which
        is divided by its own training means, so a candidate fitted on broad, noisy windows
        would score everything low and win; the log-likelihood charges for that breadth.
        """
        if self._mean is None:
            raise RuntimeError("PCAScorer is not fitted; call fit() or load a trained model")
        arr = check_windows(windows, self.window, self.n_signals)
        readings = self._embed(arr[:, -self.lags :, :])[:, -1, :]
        n_signals, k = self._components.shape
        centred = readings - self._mean
        t = centred @ self._components
        quad = (t * t / self._eigvals).sum(axis=1) if k else np.zeros(centred.shape[0])
        log_det = float(np.log(self._eigvals).sum())
        n_residual = n_signals - k
        if n_residual > 0:
            # q_scale is the mean squared residual on the training readings, i.e. the sum of
            # the dropped directions' variances: each gets an equal share (the PPCA estimate).
            residual = centred - t @ self._components.T
            variance = float(self._scales[1]) / n_residual
            quad = quad + (residual * residual).sum(axis=1) / variance
            log_det += n_residual * math.log(variance)
        nll: ErrorArray = 0.5 * (quad + log_det + n_signals * math.log(2 * math.pi))
        return nll

    def pooled_error(self, window_errors: ErrorArray) -> float:
        """``exp(mean negative log-likelihood / dimension)``: the per-dimension likelihood
        ratio (a dimension is a signal at one lag).

        Positive, so that a ratio of two models' errors means something; a ratio <= 1 is
        exactly "at least as likely".
        """
        return math.exp(float(window_errors.mean()) / self.n_features)

    def copy(self) -> Self:
        """An independent copy through ``get_config`` + ``state_tensors`` (never pickled)."""
        return self.from_state(self.get_config(), self.state_tensors())

    def _set_model(self, mean: F64, components: F64, lam: F64, scales: F64) -> None:
        self._mean = mean
        self._components = components
        self._eigvals = lam
        self._scales = scales
        t2_matrix = (components / lam) @ components.T if lam.size else 0.0
        residual_matrix = np.eye(self.n_features) - components @ components.T
        self._phi = t2_matrix / scales[0] + residual_matrix / scales[1]
        # Phi_jj > 0 for every signal (it lies in the subspace or off it); the floor only
        # guards rounding.
        self._phi_diag = np.maximum(np.diag(self._phi), 1e-12)

    def _decompose(self, centred: F64) -> tuple[F64, F64]:
        """T² and the residual per reading, for centred readings (batch, steps, signals)."""
        t = centred @ self._components
        t2 = (t * t / self._eigvals).sum(axis=-1) if self._eigvals.size else t.sum(axis=-1)
        return t2, centred - t @ self._components.T

    def score_batch(self, windows: FloatArray) -> tuple[FloatArray, FloatArray]:
        if self._mean is None:
            raise RuntimeError("PCAScorer is not fitted; call fit() or load a trained model")
        arr = check_windows(windows, self.window, self.n_signals)
        batch = arr.shape[0]
        if batch == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.n_signals), np.float32)
        x = self._embed(arr[:, -(self.tail + self.lags - 1) :, :]) - self._mean
        t2, q, rbc = self._statistics(x)
        t2, q, per_signal = t2.mean(axis=1), q.mean(axis=1), rbc.mean(axis=1)
        scores = t2 + q
        if self.separate:
            # One signal off among many moves the combined index by its share of all the
            # residual directions, a move inside the subspace by its share of both: each
            # judged against its own training level stands out.
            alone = self._separate_scores(t2, q, per_signal).max(axis=-1)
            # Below its own 99th percentile a separate statistic says nothing: the score's
            # body stays the combined index's, only an exceedance raises it.
            scores = np.where(alone > self._statistic_scales[-1], np.maximum(scores, alone), scores)
        # Contributions: the reconstruction-based contributions of the combined index, per
        # reading x' Phi x, where RBC_j = (Phi x)_j^2 / Phi_jj is how much the score drops when
        # signal j alone is reconstructed. Non-negative, and for a fault in one signal that
        # signal gets the largest share (Cauchy-Schwarz on the positive semi-definite Phi).
        return scores.astype(np.float32), contribution_shares(per_signal)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_signals": self.n_signals,
            "window": self.window,
            "variance": self.variance,
            "tail": self.tail,
            "max_components": self.max_components,
            "n_components": self.n_components,
            "lags": self.lags,
            "centre": self.centre,
            "separate": self.separate,
        }

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        if self._mean is None:
            raise RuntimeError("PCAScorer is not fitted; there is no state to save")
        return {
            "mean": self._mean.copy(),
            "components": self._components.copy(),
            "eigvals": self._eigvals.copy(),
            "scales": self._scales.copy(),
            **({"statistic_scales": self._statistic_scales.copy()} if self.separate else {}),
        }

    @classmethod
    def from_state(cls, config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]) -> Self:
        if config.get("name") != cls.name:
            raise ValueError(f"config is for scorer {config.get('name')!r}, not {cls.name!r}")
        n_signals = config_int(config, "n_signals")
        max_components = config.get("max_components")
        scorer = cls(
            n_signals,
            config_int(config, "window"),
            variance=float(config.get("variance", 0.95)),
            tail=config_int(config, "tail"),
            max_components=None if max_components is None else int(max_components),
            # Artifacts from before the embedding scored plain readings.
            lags=config_int(config, "lags") if "lags" in config else 1,
            centre=bool(config.get("centre", False)),
            # Artifacts from before the separate statistics scored the combined index alone.
            separate=bool(config.get("separate", False)),
        )
        dim = scorer.n_features
        k = config.get("n_components")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= dim:
            raise ValueError(f"config['n_components'] must be in 0..{dim}, got {k!r}")
        mean = state_tensor(tensors, "mean", (dim,), "f").astype(np.float64)
        comps = state_tensor(tensors, "components", (dim, k), "f").astype(np.float64)
        lam = state_tensor(tensors, "eigvals", (k,), "f").astype(np.float64)
        scales = state_tensor(tensors, "scales", (2,), "f").astype(np.float64)
        finite = all(np.isfinite(a).all() for a in (mean, comps, lam, scales))
        if not finite or (lam <= 0).any() or (scales <= 0).any():
            raise ValueError(
                "PCA state is invalid: eigenvalues and scales must be finite and positive"
            )
        scorer._set_model(mean, comps, lam, scales)
        if scorer.separate:
            levels = state_tensor(tensors, "statistic_scales", (n_signals + 4,), "f")
            if not np.isfinite(levels).all() or (levels <= 0).any():
                raise ValueError(
                    "PCA state is invalid: statistic scales must be finite and positive"
                )
            scorer._statistic_scales = levels.astype(np.float64)
        return scorer

"""River's Half-Space Trees, trained on normal windows and scored by an exact numpy walk."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.baseline.inputs import (
    F64,
    I64,
    check_segments,
    check_windows,
    config_int,
    positive_int,
    state_tensor,
)
from models.protocol import FloatArray, contribution_shares


def sample_windows(
    segments: Sequence[F64], window: int, max_windows: int, rng: np.random.Generator
) -> tuple[F64, int]:
    """Up to ``max_windows`` stride-1 windows drawn evenly at random from ``segments``.

    Windows never span two segments. Only the drawn windows are materialised, so a long
    history does not need ``rows x window`` memory. Returns the windows (in time order) and
    how many windows the segments hold in all.
    """
    counts = np.array([max(seg.shape[0] - window + 1, 0) for seg in segments], np.int64)
    total = int(counts.sum())
    if total == 0:
        longest = max((seg.shape[0] for seg in segments), default=0)
        raise ValueError(
            f"no segment is long enough for window={window}: the longest has {longest} rows; "
            "give more history or a shorter window"
        )
    if total > max_windows:
        chosen = np.sort(rng.choice(total, max_windows, replace=False))
    else:
        chosen = np.arange(total)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(bounds, chosen, side="right") - 1
    offsets = np.arange(window)
    parts = []
    for s in np.unique(which):
        starts = chosen[which == s] - bounds[s]
        parts.append(segments[s][starts[:, None] + offsets])
    return np.concatenate(parts, axis=0), total


class HalfSpaceTreesScorer:
    """River's Half-Space Trees, trained on normal windows and frozen for scoring.

    Features per window: the last reading's normalised values, plus each signal's standard
    deviation over the window when ``window_stats`` is on (catches a signal that starts to
    shake without moving its level). River's ``HalfSpaceTrees`` learns mass profiles in
    windows of ``window_size`` observations; here that window is the whole training sample
    (up to ``max_samples`` windows, drawn evenly at random with ``seed``), so the reference
    masses describe all of the normal history rather than its last 250 readings.

    Feature limits are the training range widened by ``margin`` times its width on each
    side (default 1.0). The original algorithm (Tan et al. 2011) likewise works in a space
    about twice the data's range: splits that fall outside the normal data create empty
    cells, so a value far beyond anything seen lands in a cell with no mass and scores as
    anomalous; with a thin margin it shares the edge cell with the most extreme normal
    readings. On SKAB (each file's first 400 rows train, window 16) the mean per-file ROC
    AUC is 0.73 at margin 0.25 and 0.78 at 1.0; the window statistics did not help there.

    After ``fit`` every tree is exported in heap order (node ``i`` has children ``2i+1`` and
    ``2i+2``) into flat arrays: split feature, threshold, ``l_mass``, ``r_mass``. Scoring runs
    River's ``score_one`` walk on those arrays for the whole batch at once, with the same
    integer arithmetic, so scores equal River's exactly; ``to_river()`` rebuilds the River
    object from the arrays.

    Contributions: each signal's share of the absolute deviation of the last reading (and of
    the window's standard deviation, with ``window_stats``) from its training mean, in
    training standard deviations. HST itself says nothing about which feature isolated a
    window.

    No online learning: this class leaves out :class:`models.protocol.OnlineLearning` on
    purpose. Its score is a mass ratio that each model normalises by its own training data,
    so a fine-tuned candidate and the serving model cannot be compared on held-out windows;
    :class:`models.online.OnlineLearner` refuses it when online learning is enabled.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(600, 3)).astype(np.float32)
    >>> scorer = HalfSpaceTreesScorer(n_signals=3, window=4, n_trees=10, max_samples=500)
    >>> _ = scorer.fit([normal])
    >>> odd = normal[:4].copy()
    >>> odd[-1, 2] = 6.0
    >>> scores, contributions = scorer.score_batch(np.stack([normal[10:14], odd]))
    >>> bool(scores[1] > scores[0]), int(contributions[1].argmax())
    (True, 2)
    """

    name = "river-hst"

    def __init__(
        self,
        n_signals: int,
        window: int = 32,
        *,
        n_trees: int = 25,
        height: int = 8,
        max_samples: int = 2048,
        window_stats: bool = False,
        margin: float = 1.0,
    ) -> None:
        self.n_signals = positive_int(n_signals, "n_signals")
        self.window = positive_int(window, "window")
        self.n_trees = positive_int(n_trees, "n_trees")
        self.height = positive_int(height, "height")
        if self.height > 20:
            raise ValueError(f"height must be at most 20 (2**21 nodes per tree), got {height}")
        self.max_samples = positive_int(max_samples, "max_samples")
        if not isinstance(window_stats, bool):
            raise ValueError(f"window_stats must be true or false, got {window_stats!r}")
        self.window_stats = window_stats
        if not (isinstance(margin, int | float) and 0.0 <= float(margin) <= 10.0):
            raise ValueError(f"margin must be in [0, 10], got {margin!r}")
        self.margin = float(margin)
        self.n_features = self.n_signals * (2 if window_stats else 1)
        self.window_size = 0  # River's mass window: the number of training samples learnt
        self.seed = 0
        n_nodes = 2 ** (self.height + 1) - 1
        self._feature: I64 = np.full((self.n_trees, n_nodes), -1, np.int64)
        self._threshold: F64 = np.zeros((self.n_trees, n_nodes))
        self._l_mass: I64 = np.zeros((self.n_trees, n_nodes), np.int64)
        self._r_mass: I64 = np.zeros((self.n_trees, n_nodes), np.int64)
        self._limits: F64 = np.zeros((self.n_features, 2))
        self._center: F64 = np.zeros(self.n_features)
        self._spread: F64 = np.ones(self.n_features)

    @property
    def fitted(self) -> bool:
        return self.window_size > 0

    def features(self, windows: FloatArray) -> F64:
        """The feature vectors fed to the trees, shape (batch, n_features), float64."""
        arr = check_windows(windows, self.window, self.n_signals)
        last = arr[:, -1, :]
        if not self.window_stats:
            return np.ascontiguousarray(last)
        return np.concatenate([last, arr.std(axis=1)], axis=1)

    def fit(self, segments: Sequence[FloatArray], *, seed: int = 0) -> dict[str, Any]:
        """Train River's HalfSpaceTrees on (a seeded sample of) the normal windows."""
        from river import anomaly

        started = time.perf_counter()
        segs = check_segments(segments, self.n_signals)
        rng = np.random.default_rng(seed)
        windows, n_windows = sample_windows(segs, self.window, self.max_samples, rng)
        feats = self.features(windows.astype(np.float32))
        lo, hi = feats.min(axis=0), feats.max(axis=0)
        width = hi - lo
        # A feature that never moved gets a hairline range: River picks split features in
        # proportion to their range, so it is (almost) never split on, and a zero total
        # weight (every feature constant) cannot happen.
        pad = np.where(width > 1e-9, self.margin * width, 5e-7)
        limits = np.stack([lo - pad, hi + pad], axis=1)
        window_size = feats.shape[0]
        hst: Any = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=window_size,
            limits={i: (float(limits[i, 0]), float(limits[i, 1])) for i in range(len(limits))},
            seed=seed,
        )
        for row in feats:
            hst.learn_one(dict(enumerate(row.tolist())))
        self._export(hst)
        self._limits = limits
        self._center = feats.mean(axis=0)
        std = feats.std(axis=0)
        self._spread = np.where(std > 1e-6, std, 1.0)
        self.window_size = window_size
        self.seed = int(seed)
        train_scores = self._score_features(feats)
        return {
            "windows": int(n_windows),
            "samples": int(window_size),
            "n_trees": self.n_trees,
            "height": self.height,
            "train_score_p50": float(np.quantile(train_scores, 0.5)),
            "train_score_p99": float(np.quantile(train_scores, 0.99)),
            "seconds": time.perf_counter() - started,
        }

    def _export(self, hst: Any) -> None:
        """Copy River's trees into the flat heap-ordered arrays."""
        from river.tree.padded import PaddedBranch

        if getattr(hst, "_first_window", True) or len(hst.trees) != self.n_trees:
            raise RuntimeError(
                "River's HalfSpaceTrees did not complete its mass window; cannot export it"
            )
        n_nodes = self._feature.shape[1]
        feature = np.full((self.n_trees, n_nodes), -1, np.int64)
        threshold = np.zeros((self.n_trees, n_nodes))
        l_mass = np.zeros((self.n_trees, n_nodes), np.int64)
        r_mass = np.zeros((self.n_trees, n_nodes), np.int64)
        for t, root in enumerate(hst.trees):
            stack: list[tuple[Any, int, int]] = [(root, 0, 0)]
            while stack:
                node, idx, depth = stack.pop()
                l_mass[t, idx] = int(node.l_mass)
                r_mass[t, idx] = int(node.r_mass)
                if depth == self.height:
                    if isinstance(node, PaddedBranch):
                        raise RuntimeError("River HST tree is deeper than its height")
                    continue
                if not isinstance(node, PaddedBranch) or len(node.children) != 2:
                    raise RuntimeError(
                        "River HST tree is not a complete binary tree of PaddedBranch nodes; "
                        "this River version changed its internals and the export needs updating"
                    )
                feature[t, idx] = int(node.feature)
                threshold[t, idx] = float(node.threshold)
                stack.append((node.children[0], 2 * idx + 1, depth + 1))
                stack.append((node.children[1], 2 * idx + 2, depth + 1))
        self._feature, self._threshold = feature, threshold
        self._l_mass, self._r_mass = l_mass, r_mass

    def to_river(self) -> Any:
        """Rebuild an equal River ``anomaly.HalfSpaceTrees`` object from the arrays."""
        from river import anomaly
        from river.tree import padded

        if not self.fitted:
            raise RuntimeError("HalfSpaceTreesScorer is not fitted")
        # River's tree classes are untyped; Any keeps mypy --strict honest about that.
        branch: Any = padded.PaddedBranch
        leaf: Any = padded.PaddedLeaf
        hst: Any = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=self.window_size,
            limits={i: (float(a), float(b)) for i, (a, b) in enumerate(self._limits)},
            seed=self.seed,
        )

        def build(t: int, idx: int, depth: int) -> Any:
            masses = {"l_mass": int(self._l_mass[t, idx]), "r_mass": int(self._r_mass[t, idx])}
            if depth == self.height:
                return leaf(**masses)
            return branch(
                left=build(t, 2 * idx + 1, depth + 1),
                right=build(t, 2 * idx + 2, depth + 1),
                feature=int(self._feature[t, idx]),
                threshold=float(self._threshold[t, idx]),
                **masses,
            )

        hst.trees = [build(t, 0, 0) for t in range(self.n_trees)]
        hst._tree_nodes = [list(tree.iter_dfs()) for tree in hst.trees]
        hst.counter = 0
        hst._first_window = False
        return hst

    def _score_features(self, feats: F64) -> F64:
        """River's ``_walk_score`` summed over trees, for a whole batch at once."""
        batch = feats.shape[0]
        size_limit = 0.1 * self.window_size
        trees = np.arange(self.n_trees)[None, :]
        rows = np.arange(batch)[:, None]
        idx = np.zeros((batch, self.n_trees), np.int64)
        mass = np.zeros((batch, self.n_trees), np.int64)
        active = np.ones((batch, self.n_trees), bool)
        for depth in range(self.height):
            r = self._r_mass[trees, idx]
            mass += np.where(active, r << depth, 0)
            active &= r >= size_limit
            value = feats[rows, self._feature[trees, idx]]
            # River goes left on ``value < threshold`` and right otherwise (NaN goes right).
            idx = 2 * idx + 1 + ~(value < self._threshold[trees, idx])
        mass += np.where(active, self._r_mass[trees, idx] << self.height, 0)
        max_score = self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)
        # Integer masses summed exactly, then River's own float normalisation and flip.
        scores: F64 = 1.0 - mass.sum(axis=1).astype(np.float64) / float(max_score)
        return scores

    def score_batch(self, windows: FloatArray) -> tuple[FloatArray, FloatArray]:
        if not self.fitted:
            raise RuntimeError(
                "HalfSpaceTreesScorer is not fitted; call fit() or load a trained model"
            )
        feats = self.features(windows)
        if feats.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.n_signals), np.float32)
        scores = self._score_features(feats)
        dev = np.abs(feats - self._center) / self._spread
        per_signal = dev.reshape(feats.shape[0], -1, self.n_signals).sum(axis=1)
        return scores.astype(np.float32), contribution_shares(per_signal)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_signals": self.n_signals,
            "window": self.window,
            "n_trees": self.n_trees,
            "height": self.height,
            "max_samples": self.max_samples,
            "window_stats": self.window_stats,
            "margin": self.margin,
            "window_size": self.window_size,
            "seed": self.seed,
        }

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        if not self.fitted:
            raise RuntimeError("HalfSpaceTreesScorer is not fitted; there is no state to save")
        return {
            "feature": self._feature.copy(),
            "threshold": self._threshold.copy(),
            "l_mass": self._l_mass.copy(),
            "r_mass": self._r_mass.copy(),
            "limits": self._limits.copy(),
            "center": self._center.copy(),
            "spread": self._spread.copy(),
        }

    @classmethod
    def from_state(
        cls, config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]
    ) -> HalfSpaceTreesScorer:
        if config.get("name") != cls.name:
            raise ValueError(f"config is for scorer {config.get('name')!r}, not {cls.name!r}")
        window_stats = config.get("window_stats", False)
        if not isinstance(window_stats, bool):
            raise ValueError(f"config['window_stats'] must be a boolean, got {window_stats!r}")
        scorer = cls(
            config_int(config, "n_signals"),
            config_int(config, "window"),
            n_trees=config_int(config, "n_trees"),
            height=config_int(config, "height"),
            max_samples=config_int(config, "max_samples"),
            window_stats=window_stats,
            margin=float(config.get("margin", 1.0)),
        )
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"config['seed'] must be an integer, got {seed!r}")
        nodes = (scorer.n_trees, 2 ** (scorer.height + 1) - 1)
        nf = scorer.n_features
        feature = state_tensor(tensors, "feature", nodes, "i").astype(np.int64)
        threshold = state_tensor(tensors, "threshold", nodes, "f").astype(np.float64)
        l_mass = state_tensor(tensors, "l_mass", nodes, "i").astype(np.int64)
        r_mass = state_tensor(tensors, "r_mass", nodes, "i").astype(np.int64)
        limits = state_tensor(tensors, "limits", (nf, 2), "f").astype(np.float64)
        center = state_tensor(tensors, "center", (nf,), "f").astype(np.float64)
        spread = state_tensor(tensors, "spread", (nf,), "f").astype(np.float64)
        n_branches = 2**scorer.height - 1
        branch_feats = feature[:, :n_branches]
        if (
            (branch_feats < 0).any()
            or (branch_feats >= nf).any()
            or (feature[:, n_branches:] != -1).any()
            or (l_mass < 0).any()
            or (r_mass < 0).any()
            or not all(np.isfinite(a).all() for a in (threshold, limits, center, spread))
            or (spread <= 0).any()
        ):
            raise ValueError(
                "Half-Space Trees state is invalid (split features out of range, negative "
                "masses or non-finite numbers)"
            )
        scorer._feature, scorer._threshold = feature, threshold
        scorer._l_mass, scorer._r_mass = l_mass, r_mass
        scorer._limits, scorer._center, scorer._spread = limits, center, spread
        scorer.window_size = config_int(config, "window_size")
        scorer.seed = seed
        if (r_mass[:, 0] != scorer.window_size).any():
            raise ValueError(
                "Half-Space Trees state is invalid: every root's reference mass must equal "
                "config['window_size']"
            )
        return scorer

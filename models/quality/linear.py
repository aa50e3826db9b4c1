"""Linear soft sensors over lagged readings: ridge regression and PLS, in numpy.

What a process engineer tries first. The features of row ``t`` are the readings at lags
``t - l`` for each ``l`` in ``lags`` (0 = now), so a transport delay of a few samples is a
coefficient on the right lag. Ridge picks its penalty, PLS its number of latent
components, by the RMSE on the (later) validation rows; the final model is refitted on the
training rows with that choice.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(300, 3)).astype(np.float32)
>>> y = (2 * x[:, 0] - np.roll(x[:, 1], 2)).astype(np.float32)
>>> model = LinearQuality(n_signals=3, lags=(0, 2), kind="ridge")
>>> rows = np.arange(2, 300)
>>> _ = model.fit(x, y, rows[:200], rows[200:])
>>> float(np.abs(model.predict(x, rows[200:]) - y[rows[200:]]).max()) < 0.05
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from models.quality.protocol import FloatArray, IndexArray, Progress, check_tensors

F64 = npt.NDArray[np.float64]
RIDGE_ALPHAS = tuple(10.0**p for p in np.arange(-4.0, 4.01, 0.5))
KINDS = ("ridge", "pls")


def lagged(x: npt.ArrayLike, rows: IndexArray, lags: Sequence[int]) -> F64:
    """Features ``[x[t - l] for l in lags]`` of each end row, lag-major.

    >>> lagged(np.arange(6.0).reshape(3, 2), np.array([2]), (0, 2)).tolist()
    [[4.0, 5.0, 0.0, 1.0]]
    """
    arr = np.asarray(x, dtype=np.float64)
    return np.concatenate([arr[rows - lag] for lag in lags], axis=1)


def ridge_fit(features: F64, y: F64, alpha: float) -> tuple[F64, float]:
    """Coefficients and intercept of ridge regression (intercept not penalised)."""
    mean_x = features.mean(axis=0)
    mean_y = float(y.mean())
    xc = features - mean_x
    gram = xc.T @ xc + alpha * features.shape[0] * np.eye(features.shape[1])
    coef = np.linalg.solve(gram, xc.T @ (y - mean_y))
    return coef, mean_y - float(mean_x @ coef)


def pls_fit(features: F64, y: F64, components: int) -> tuple[F64, float]:
    """Coefficients and intercept of PLS1 (NIPALS) with ``components`` latent variables."""
    mean_x = features.mean(axis=0)
    mean_y = float(y.mean())
    xk = features - mean_x
    yk = y - mean_y
    n_feat = features.shape[1]
    weights = np.zeros((n_feat, components))
    loadings = np.zeros((n_feat, components))
    y_loadings = np.zeros(components)
    for k in range(components):
        w = xk.T @ yk
        norm = float(np.linalg.norm(w))
        if norm < 1e-12:
            weights, loadings, y_loadings = weights[:, :k], loadings[:, :k], y_loadings[:k]
            break
        w /= norm
        t = xk @ w
        tt = float(t @ t)
        p = xk.T @ t / tt
        q = float(yk @ t) / tt
        xk = xk - np.outer(t, p)
        yk = yk - q * t
        weights[:, k], loadings[:, k], y_loadings[k] = w, p, q
    if weights.shape[1] == 0:
        return np.zeros(n_feat), mean_y
    coef = weights @ np.linalg.solve(loadings.T @ weights, y_loadings)
    return coef, mean_y - float(mean_x @ coef)


class LinearQuality:
    """Ridge or PLS over lagged readings; the penalty or the components chosen on validation."""

    name = "linear"

    def __init__(
        self,
        n_signals: int,
        *,
        lags: Sequence[int] = (0,),
        kind: str = "pls",
        alpha: float | None = None,
        components: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not lags or any(int(lag) < 0 for lag in lags) or len(set(lags)) != len(lags):
            raise ValueError(f"lags must be distinct non-negative integers, got {list(lags)}")
        self.n_signals = int(n_signals)
        self.lags = tuple(int(lag) for lag in lags)
        self.kind = kind
        self.alpha = alpha
        self.components = components
        n_feat = self.n_signals * len(self.lags)
        self.coef: F64 = np.zeros(n_feat)
        self.intercept = 0.0

    @property
    def history(self) -> int:
        return max(self.lags) + 1

    def _solver(self) -> tuple[Sequence[float], Callable[[F64, F64, float], tuple[F64, float]]]:
        if self.kind == "ridge":
            return RIDGE_ALPHAS, ridge_fit
        most = self.n_signals * len(self.lags)
        return [float(c) for c in range(1, min(most, 30) + 1)], (
            lambda f, y, c: pls_fit(f, y, int(c))
        )

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
        del seed  # deterministic
        f_train = lagged(x, train_rows, self.lags)
        y_train = np.asarray(y, dtype=np.float64)[train_rows]
        grid, solve = self._solver()
        chosen = self.alpha if self.kind == "ridge" else self.components
        scores: dict[str, float] = {}
        if chosen is None:
            if val_rows.size == 0:
                raise ValueError("choosing the penalty or components needs validation rows")
            f_val = lagged(x, val_rows, self.lags)
            y_val = np.asarray(y, dtype=np.float64)[val_rows]
            best = math.inf
            for value in grid:
                coef, icpt = solve(f_train, y_train, value)
                rmse = math.sqrt(float(np.mean((f_val @ coef + icpt - y_val) ** 2)))
                scores[f"{value:g}"] = rmse
                if rmse < best:
                    best, chosen = rmse, value
            if progress is not None:
                progress({"step": 1.0, "val_rmse": best})
        if chosen is None:
            raise ValueError("validation chose nothing (every fit failed)")
        if self.kind == "ridge":
            self.alpha = float(chosen)
        else:
            self.components = int(chosen)
        self.coef, self.intercept = solve(f_train, y_train, float(chosen))
        return {
            "kind": self.kind,
            "chosen": float(chosen),
            "val_rmse_by_choice": scores,
            "n_train": int(train_rows.size),
            "n_val": int(val_rows.size),
        }

    def predict(self, x: FloatArray, rows: IndexArray) -> FloatArray:
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        out = lagged(x, rows, self.lags) @ self.coef + self.intercept
        return out.astype(np.float32)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_signals": self.n_signals,
            "lags": list(self.lags),
            "kind": self.kind,
            "alpha": self.alpha,
            "components": self.components,
        }

    def state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "coef": self.coef.astype(np.float64),
            "intercept": np.array([self.intercept], dtype=np.float64),
        }

    @classmethod
    def from_state(cls, config: Mapping[str, Any], tensors: Mapping[str, npt.NDArray[Any]]) -> Self:
        kwargs = dict(config)
        if kwargs.pop("name", None) != cls.name:
            raise ValueError(f"config is not a {cls.name!r} quality model")
        model = cls(
            int(kwargs.pop("n_signals")),
            lags=tuple(kwargs.pop("lags")),
            kind=str(kwargs.pop("kind")),
            alpha=kwargs.pop("alpha"),
            components=kwargs.pop("components"),
        )
        if kwargs:
            raise ValueError(f"unknown {cls.name} config keys {sorted(kwargs)}")
        check_tensors(cls.name, tensors, {"coef": model.coef.shape, "intercept": (1,)})
        model.coef = np.asarray(tensors["coef"], dtype=np.float64).copy()
        model.intercept = float(tensors["intercept"][0])
        return model

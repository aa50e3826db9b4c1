"""Generalised Pareto (GPD) tail maths for SPOT: the fit and the tail's quantile and survival.

:func:`fit_gpd` is a maximum-likelihood fit (Grimshaw's equation, with the exponential and
method-of-moments fits as fallbacks); given caps it maximises the truncated likelihood by
Nelder–Mead. Everything is deterministic and needs nothing beyond numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from models.thresholds.base import FloatArray

#: |gamma| under which the generalised Pareto tail is treated as exponential.
_GAMMA_EPS = 1e-9
#: Range of the GPD shape γ searched. Above 1 the tail has no mean. Below -1/2 the maximum
#: likelihood fit is not regular (Smith 1985): its bound sits at the largest calibration peak,
#: and from the ~20 peaks of a short history that bound is too tight; live normal scores went
#: 15-50 % past it and flooded (bench/univariate.py --train-fraction 0.15: 34 false alerts at
#: -1, 25 at -1/2; docs/BENCHMARKS.md, "A short history floods").
_GAMMA_MIN, _GAMMA_MAX = -0.5, 1.0
#: Smallest GPD scale used, so a constant calibration stream still gives a usable tail.
MIN_SIGMA = 1e-12
#: Points per side of the grid on which Grimshaw's equation is scanned for sign changes.
_GRID_POINTS = 24


def _gpd_loglik(y: FloatArray, gamma: float, sigma: float) -> float:
    if not (sigma > 0.0 and math.isfinite(sigma) and _GAMMA_MIN <= gamma <= _GAMMA_MAX):
        return -math.inf
    if abs(gamma) < _GAMMA_EPS:
        return -y.size * math.log(sigma) - float(y.sum()) / sigma
    z = 1.0 + gamma * y / sigma
    if not bool(np.all(z > 0.0)):
        return -math.inf
    return -y.size * math.log(sigma) - (1.0 + 1.0 / gamma) * float(np.log(z).sum())


def _grimshaw_w(y: FloatArray, thetas: FloatArray) -> FloatArray:
    """Grimshaw's function w(θ) = (1 + mean log(1+θy)) · mean 1/(1+θy) − 1 per θ."""
    s = 1.0 + np.outer(thetas, y)
    u = 1.0 + np.log(s).mean(axis=1)
    v = (1.0 / s).mean(axis=1)
    out: FloatArray = u * v - 1.0
    return out


def _refine_root(y: FloatArray, lo: float, hi: float, w_lo: float, w_hi: float) -> float:
    """A root of w in [lo, hi] (w changes sign there) by regula falsi, Illinois variant."""
    for _ in range(100):
        mid = hi - w_hi * (hi - lo) / (w_hi - w_lo)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        w_mid = float(_grimshaw_w(y, np.array([mid]))[0])
        if w_mid == 0.0 or abs(hi - lo) <= 1e-9 * max(abs(lo), abs(hi)):
            return mid
        if (w_mid > 0.0) == (w_hi > 0.0):
            hi, w_hi = mid, w_mid
            w_lo *= 0.5
        else:
            lo, w_lo = mid, w_mid
            w_hi *= 0.5
    return 0.5 * (lo + hi)


def _grimshaw_roots(y: FloatArray) -> list[float]:
    """Non-zero roots of Grimshaw's equation: θ = γ/σ of the likelihood's stationary points.

    The roots lie in (−1/max, 0) and (0, 2(mean − min)/min²) (Grimshaw 1993). Each side is
    scanned on a geometric grid (roots cluster near 0 for near-exponential tails; below
    |θ|·max = 1e-4 the exponential candidate covers them) and each sign change refined.
    """
    y_max, y_min, y_mean = float(y.max()), float(y.min()), float(y.mean())
    unit = np.geomspace(1e-4, 0.5, _GRID_POINTS // 2)
    # |θ|·max from 1e-4 up to 1 - 1e-4, dense near both ends, as an increasing θ grid.
    fractions = np.concatenate((unit, 1.0 - unit[::-1][1:]))
    grids = [(-fractions / y_max)[::-1]]
    upper = 2.0 * (y_mean - y_min) / (y_min * y_min)
    lower = 1e-4 / y_max
    if math.isfinite(upper) and upper > lower:
        grids.append(np.geomspace(lower, upper, _GRID_POINTS))
    roots: list[float] = []
    for grid in grids:
        values = _grimshaw_w(y, grid)
        sign_change = np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0.0)
        for k in sign_change.tolist():
            roots.append(
                _refine_root(
                    y,
                    float(grid[k]),
                    float(grid[k + 1]),
                    float(values[k]),
                    float(values[k + 1]),
                )
            )
        roots.extend(float(grid[k]) for k in np.flatnonzero(values == 0.0).tolist())
    return roots


def gpd_survival(gamma: float, sigma: float, excess: float) -> float:
    """P(Y > excess) for a GPD(γ, σ) excess Y."""
    if abs(gamma) < _GAMMA_EPS:
        return math.exp(-excess / sigma)
    z = 1.0 + gamma * excess / sigma
    return 0.0 if z <= 0.0 else float(z ** (-1.0 / gamma))


def _log_kept(caps: FloatArray, gamma: float, sigma: float) -> float:
    """Σ log P(Y <= cap): the chance each capped peak had of being kept at all."""
    if abs(gamma) < _GAMMA_EPS:
        below = -np.expm1(-caps / sigma)
    else:
        z = np.maximum(1.0 + gamma * caps / sigma, 0.0)
        with np.errstate(divide="ignore"):
            below = 1.0 - np.power(z, -1.0 / gamma)
    if not bool(np.all(below > 0.0)):
        return -math.inf
    return float(np.log(below).sum())


def _nelder_mead(
    objective: Callable[[float, float], float],
    start: tuple[float, float],
    steps: tuple[float, float],
) -> tuple[float, float]:
    """Minimise a function of two variables by Nelder–Mead; deterministic, no dependencies."""
    simplex = [start, (start[0] + steps[0], start[1]), (start[0], start[1] + steps[1])]
    values = [objective(*p) for p in simplex]
    for _ in range(200):
        order = sorted(range(3), key=lambda i: values[i])
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        if abs(values[2] - values[0]) <= 1e-9 * (abs(values[0]) + 1.0):
            break
        best, middle, worst = simplex
        cx, cy = 0.5 * (best[0] + middle[0]), 0.5 * (best[1] + middle[1])
        reflected = (2.0 * cx - worst[0], 2.0 * cy - worst[1])
        f_reflected = objective(*reflected)
        if f_reflected < values[0]:
            expanded = (3.0 * cx - 2.0 * worst[0], 3.0 * cy - 2.0 * worst[1])
            f_expanded = objective(*expanded)
            if f_expanded < f_reflected:
                simplex[2], values[2] = expanded, f_expanded
            else:
                simplex[2], values[2] = reflected, f_reflected
        elif f_reflected < values[1]:
            simplex[2], values[2] = reflected, f_reflected
        else:
            contracted = (0.5 * (cx + worst[0]), 0.5 * (cy + worst[1]))
            f_contracted = objective(*contracted)
            if f_contracted < values[2]:
                simplex[2], values[2] = contracted, f_contracted
            else:
                for i in (1, 2):
                    p = simplex[i]
                    simplex[i] = (0.5 * (best[0] + p[0]), 0.5 * (best[1] + p[1]))
                    values[i] = objective(*simplex[i])
    i = min(range(3), key=lambda k: values[k])
    return simplex[i]


def fit_gpd(excesses: npt.ArrayLike, caps: npt.ArrayLike | None = None) -> tuple[float, float]:
    """Fit a generalised Pareto distribution to positive excesses; returns (γ, σ).

    The candidates are the exponential fit (γ = 0), the method-of-moments fit and every
    root of Grimshaw's maximum-likelihood equation; the one with the highest likelihood wins,
    so the moments and exponential fits are the fallback when the likelihood has no interior
    maximum. Deterministic: same excesses in the same order, same result.

    ``caps`` (one per excess, ``inf`` for none) says that an excess was only kept because it
    was at most its cap: SPOT never learns a score over its threshold, so the peaks it keeps
    are a truncated sample, and fitting them as complete makes the tail lighter at every
    refit, the threshold lower, the truncation harsher: a downward spiral. With finite caps
    the untruncated fit is the start of a Nelder–Mead search on the truncated likelihood.

    >>> rng = np.random.default_rng(1)
    >>> gamma, sigma = fit_gpd(rng.exponential(2.0, size=4000))
    >>> abs(gamma) < 0.05, round(sigma, 1)
    (True, 2.0)
    """
    y = np.asarray(excesses, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"need a non-empty 1-D array of excesses; got shape {y.shape}")
    if not bool(np.all(np.isfinite(y) & (y > 0.0))):
        raise ValueError("excesses over the tail threshold must be finite and positive")
    mean = float(y.mean())
    exponential = (0.0, max(mean, MIN_SIGMA))
    y_range = float(y.max() - y.min())
    if y.size < 3 or y_range <= 1e-12 * mean:
        return exponential
    best, best_ll = exponential, _gpd_loglik(y, *exponential)
    var = float(y.var())
    candidates: list[tuple[float, float]] = []
    if var > 0.0:
        ratio = mean * mean / var
        candidates.append((0.5 * (1.0 - ratio), 0.5 * mean * (ratio + 1.0)))
    for theta in _grimshaw_roots(y):
        gamma = float(np.log1p(theta * y).mean())
        if theta != 0.0 and abs(gamma) >= _GAMMA_EPS:
            candidates.append((gamma, gamma / theta))
    for gamma, sigma in candidates:
        ll = _gpd_loglik(y, gamma, sigma)
        if ll > best_ll:
            best, best_ll = (gamma, sigma), ll
    if caps is None:
        return best
    cap = np.asarray(caps, dtype=np.float64)
    if cap.shape != y.shape:
        raise ValueError(f"need one cap per excess; got {cap.shape} for {y.shape}")
    finite = np.isfinite(cap)
    if not finite.any():
        return best
    cap = cap[finite]

    def objective(gamma: float, log_sigma: float) -> float:
        if not -700.0 < log_sigma < 700.0:
            return math.inf
        sigma = math.exp(log_sigma)
        ll = _gpd_loglik(y, gamma, sigma) - _log_kept(cap, gamma, sigma)
        return -ll if math.isfinite(ll) else math.inf

    gamma, log_sigma = _nelder_mead(objective, (best[0], math.log(best[1])), (0.05, 0.05))
    if objective(gamma, log_sigma) < objective(best[0], math.log(best[1])):
        return gamma, math.exp(log_sigma)
    return best


def excess_quantile(gamma: float, sigma: float, ratio: float) -> float:
    """The excess over t exceeded with conditional probability ``ratio`` (0 if ratio >= 1)."""
    if ratio >= 1.0:
        return 0.0
    if abs(gamma) < _GAMMA_EPS:
        return -sigma * math.log(ratio)
    return sigma / gamma * (math.pow(ratio, -gamma) - 1.0)

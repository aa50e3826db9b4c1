"""First-order recurrences (lags, AR noise, the set-point walk) solved a block at a time."""

from __future__ import annotations

import math

import numpy as np

from stream.simulator.chunks import FloatArray

_SUB = 16  # steps per sub-block of the recurrence solver


class Recurrence:
    """``y[t] = a·y[t−1] + x[t]`` over a block of fixed length, with two small products.

    The block is cut into sub-blocks of ``_SUB`` steps: each is solved from zero by a
    lower-triangular Toeplitz product, then the value carried into each sub-block is solved
    the same way over the sub-block ends. Every power of ``a`` is at most 1, so this is
    stable for any time constant, and the arithmetic depends only on the block layout.
    """

    def __init__(self, dt_s: float, tau_s: float, block: int) -> None:
        if block % _SUB:
            raise ValueError(f"block of {block} steps is not a multiple of {_SUB}")
        self.a = math.exp(-dt_s / tau_s)
        self.n_sub = block // _SUB
        log_a = -dt_s / tau_s
        self.inner = _toeplitz(log_a, _SUB)  # (SUB, SUB)
        self.outer = _toeplitz(log_a * _SUB, self.n_sub)  # over sub-block ends
        with np.errstate(under="ignore"):
            s = np.arange(self.n_sub, dtype=np.float64)
            self.outer_carry: FloatArray = np.exp(s * _SUB * log_a)  # a^(s·SUB)
            i = np.arange(1, _SUB + 1, dtype=np.float64)
            self.inner_carry: FloatArray = np.exp(i * log_a)  # a^(i+1)
        self.outer_carry[self.outer_carry < 1e-250] = 0.0
        self.inner_carry[self.inner_carry < 1e-250] = 0.0

    def run(self, x: FloatArray, y0: FloatArray) -> FloatArray:
        """``x`` is (block, n); ``y0`` (n,) the value before the block. Returns (block, n)."""
        n = x.shape[1]
        sub = x.reshape(self.n_sub, _SUB, n).transpose(1, 0, 2).reshape(_SUB, -1)
        local = (self.inner @ sub).reshape(_SUB, self.n_sub, n)  # each sub-block from zero
        # Value entering sub-block s: y0 decayed over s sub-blocks, plus the from-zero end
        # of every earlier sub-block r decayed over the s − 1 − r sub-blocks between.
        from_ends = self.outer @ local[-1]  # row s: what leaves sub-block s
        entering = np.concatenate([np.zeros((1, n)), from_ends[:-1]])
        entering += self.outer_carry[:, None] * y0[None, :]
        y = local + self.inner_carry[:, None, None] * entering[None, :, :]
        out: FloatArray = y.transpose(1, 0, 2).reshape(self.n_sub * _SUB, n)
        return out


def _toeplitz(log_a: float, size: int) -> FloatArray:
    """Lower-triangular ``a^(i−j)``; powers too small to matter are exact zeros (subnormals
    would only slow the product down)."""
    k = np.arange(size, dtype=np.float64)
    lag = k[:, None] - k[None, :]
    with np.errstate(under="ignore"):
        powers = np.where(lag >= 0, np.exp(np.maximum(lag, 0.0) * log_a), 0.0)
    powers[powers < 1e-250] = 0.0
    out: FloatArray = powers
    return out

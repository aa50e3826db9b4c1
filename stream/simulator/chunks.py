"""The unit of generated data: a :class:`Chunk` of consecutive steps of all assets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream.simulator.config import FAULT_KINDS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Chunk:
    """Consecutive steps of all assets, time-major so ``reshape(-1, ...)`` is time order.

    ``values`` (steps, assets, signals) in :data:`SIGNALS` order; ``ts_ms`` (steps, assets)
    includes each asset's small offset; ``fault`` (steps, assets) is true inside a fault;
    ``fault_kind`` holds the index into :data:`FAULT_KINDS` (−1 outside faults); ``load`` is
    the hidden true pump speed as a fraction of nominal (ground truth, not a signal).
    """

    start_step: int
    assets: tuple[str, ...]
    step_ts_ms: IntArray
    ts_ms: IntArray
    values: FloatArray
    fault: BoolArray
    fault_kind: npt.NDArray[np.int8]
    load: FloatArray

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_readings(self) -> int:
        return int(self.values.shape[0] * self.values.shape[1])

    def asset_index(self) -> IntArray:
        """Asset index of each reading in time order (length ``n_readings``)."""
        return np.tile(np.arange(len(self.assets), dtype=np.int64), self.n_steps)

    def by_asset(self) -> tuple[FloatArray, list[tuple[int, int]]]:
        """Every reading asset after asset (rows x signals) and each asset's row range: the
        history shape :func:`models.training.train_model` takes."""
        per = self.n_steps
        values = self.values.transpose(1, 0, 2).reshape(-1, self.values.shape[2])
        return values, [(a * per, (a + 1) * per) for a in range(len(self.assets))]

    def fault_kind_names(self) -> npt.NDArray[np.str_]:
        """Kind name of each reading in time order; ``""`` outside faults."""
        names = np.array(["", *FAULT_KINDS])
        return names[self.fault_kind.reshape(-1).astype(np.int64) + 1]


def concat(parts: Sequence[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    return Chunk(
        start_step=parts[0].start_step,
        assets=parts[0].assets,
        step_ts_ms=np.concatenate([p.step_ts_ms for p in parts]),
        ts_ms=np.concatenate([p.ts_ms for p in parts]),
        values=np.concatenate([p.values for p in parts]),
        fault=np.concatenate([p.fault for p in parts]),
        fault_kind=np.concatenate([p.fault_kind for p in parts]),
        load=np.concatenate([p.load for p in parts]),
    )


def cut(chunk: Chunk, lo: int, hi: int) -> Chunk:
    return Chunk(
        start_step=chunk.start_step + lo,
        assets=chunk.assets,
        step_ts_ms=chunk.step_ts_ms[lo:hi],
        ts_ms=chunk.ts_ms[lo:hi],
        values=chunk.values[lo:hi],
        fault=chunk.fault[lo:hi],
        fault_kind=chunk.fault_kind[lo:hi],
        load=chunk.load[lo:hi],
    )

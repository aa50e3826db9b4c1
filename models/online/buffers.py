"""The learner's two bounded buffers: recent eligible windows, and recent verdicts.

A ring rather than a reservoir for windows: the point is to follow the plant *now*, and the
held-out part must be the newest in time (see :mod:`models.online`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.protocol import FloatArray


class WindowRing:
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


class VerdictRing:
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

"""Ground truth: a :class:`FaultInterval` per planned event, as CSV row or labels message."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.timestamps import format_ts
from stream.simulator.config import LABEL_COLUMNS, LABEL_SCHEMA


@dataclass(frozen=True)
class FaultInterval:
    """One labelled event on one asset: a fault, or a normal change (``is_fault=False``).

    ``start_step``/``stop_step`` index the asset's readings (stop exclusive); ``start_ms``
    and ``end_ms`` are the timestamps of the first and last affected reading (inclusive).
    """

    asset: str
    kind: str
    signals: tuple[str, ...]
    start_step: int
    stop_step: int
    start_ms: int
    end_ms: int
    magnitude: float
    is_fault: bool

    @property
    def signal(self) -> str:
        """The one signal touched, or ``""`` when the event touches several."""
        return self.signals[0] if len(self.signals) == 1 else ""

    def label_row(self) -> dict[str, str]:
        """The row of the labels CSV (columns :data:`LABEL_COLUMNS`)."""
        return {
            "asset": self.asset,
            "kind": self.kind,
            "signal": self.signal,
            "start_ts": format_ts(self.start_ms),
            "end_ts": format_ts(self.end_ms),
            "start_ms": str(self.start_ms),
            "end_ms": str(self.end_ms),
            "magnitude": f"{self.magnitude:.6g}",
            "is_fault": "true" if self.is_fault else "false",
        }

    def to_json(self) -> bytes:
        """The labels-topic message: the CSV row's fields plus the list of signals."""
        row: dict[str, Any] = {"schema": LABEL_SCHEMA, **self.label_row()}
        row["start_ms"] = self.start_ms
        row["end_ms"] = self.end_ms
        row["magnitude"] = round(self.magnitude, 6)
        row["is_fault"] = self.is_fault
        row["signals"] = list(self.signals)
        return json.dumps(row, separators=(",", ":")).encode()


def write_labels(path: str | Path, labels: Sequence[FaultInterval]) -> None:
    """Write the ground-truth CSV (columns :data:`LABEL_COLUMNS`), in start order."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for label in labels:
            writer.writerow(label.label_row())

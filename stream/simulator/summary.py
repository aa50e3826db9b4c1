"""What a run did: the :class:`RunSummary` every sink returns and the command prints."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from stream.simulator.generator import PlantSimulator
from stream.simulator.labels import FaultInterval


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the final line and for callers."""

    readings: int
    steps: int
    elapsed_s: float
    faults_by_kind: dict[str, int]
    normal_by_kind: dict[str, int]
    target: str
    labels_target: str | None
    interrupted: bool

    def line(self) -> str:
        rate = self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults_by_kind.items()))
        normal = ", ".join(f"{k} {v}" for k, v in sorted(self.normal_by_kind.items()))
        text = (
            f"simulate: {self.readings:,} readings ({self.steps:,} per asset) in "
            f"{self.elapsed_s:,.1f} s ({rate:,.0f}/s); faults injected: "
            f"{sum(self.faults_by_kind.values())}{f' ({faults})' if faults else ''}"
        )
        if normal:
            text += f"; normal changes: {normal}"
        text += f"; to {self.target}"
        if self.labels_target:
            text += f", labels to {self.labels_target}"
        if self.interrupted:
            text += " (stopped early)"
        return text


def started_labels(labels: Sequence[FaultInterval], steps: int) -> list[FaultInterval]:
    return [x for x in labels if x.start_step < steps]


def summarize(
    sim: PlantSimulator,
    steps: int,
    elapsed_s: float,
    target: str,
    labels_target: str | None,
    interrupted: bool,
) -> RunSummary:
    started = started_labels(sim.labels, steps)
    return RunSummary(
        readings=steps * sim.config.n_assets,
        steps=steps,
        elapsed_s=elapsed_s,
        faults_by_kind=dict(Counter(x.kind for x in started if x.is_fault)),
        normal_by_kind=dict(Counter(x.kind for x in started if not x.is_fault)),
        target=target,
        labels_target=labels_target,
        interrupted=interrupted,
    )

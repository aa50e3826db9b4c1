"""One batch's verdicts as columns: :class:`HealthFindings`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.health.config import RULES, SensorRule
from models.health.kernels import F64, Bools


@dataclass(frozen=True, eq=False)
class HealthFindings:
    """What the rules say about one batch of one asset, as columns (readings, signals).

    ``fired[rule]`` whether the rule flags the reading; ``scores[rule]`` its statistic
    there (0 where it does not fire); ``limits[rule]`` (signals,) the limit the score is
    held against (``inf`` where the rule is off for that signal); ``present`` which
    readings carry a value. This is the shape ``alerts.policy.AlertPolicy.step_sensor``
    takes.
    """

    signals: tuple[str, ...]
    present: Bools
    fired: dict[SensorRule, Bools]
    scores: dict[SensorRule, F64]
    limits: dict[SensorRule, F64]

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def any(self) -> Bools:
        """(readings, signals): whether any rule flags the reading."""
        out = np.zeros(self.present.shape, np.bool_)
        for rule in RULES:
            out |= self.fired[rule]
        return out

    def codes(self) -> npt.NDArray[np.int8]:
        """(readings, signals): 0 none, else 1 + the index in :data:`RULES` of the rule
        that fires (``out_of_range`` over ``stuck`` over ``step`` over ``spike`` when
        several do)."""
        out = np.zeros(self.present.shape, np.int8)
        for rule in ("spike", "step", "stuck", "out_of_range"):
            out[self.fired[rule]] = RULES.index(rule) + 1
        return out

    def counts(self) -> dict[SensorRule, int]:
        """How many readings each rule flags, over all signals."""
        return {rule: int(self.fired[rule].sum()) for rule in RULES}

    def flagged(self) -> list[tuple[int, str, SensorRule, float]]:
        """(row, signal, rule, score) of every flagged reading, by row then signal."""
        cells = [
            (int(r), int(c), k, rule)
            for k, rule in enumerate(RULES)
            for r, c in zip(*np.nonzero(self.fired[rule]), strict=True)
        ]
        cells.sort()
        return [
            (r, self.signals[c], rule, float(self.scores[rule][r, c])) for r, c, _, rule in cells
        ]

"""Sensor health inside the monitor: each asset's rules, fed every accepted reading.

The rules are :mod:`models.health` (learned per signal at training, kept in the artifact);
this module turns one batch's readings into their columns per asset, runs the rules and
steps the alert policy's ``sensor`` tracks, so a stuck sensor, a spike or a reading out of
the trained envelope is an alert of ``kind`` ``sensor`` through the same state machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from alerts.events import AlertEvent
from alerts.policy import AlertPolicy
from models.artifact import TrainedModel
from models.health import (
    HealthFindings,
    SensorHealth,
    SensorHealthConfig,
    SensorHealthProfile,
    check_many,
)
from stream.schema import SensorReading

#: The ``model`` name sensor alerts carry (their version is the artifact's).
SENSOR_MODEL = "sensor-health"


class SensorWatch:
    """Every asset's sensor-health state for one model artifact."""

    def __init__(self, model: TrainedModel, config: SensorHealthConfig) -> None:
        self.config = config
        self.version = model.version
        profile = model.metadata.get("sensor_health")
        # A model trained before sensor health existed carries no profile: no rules.
        self.profile = (
            SensorHealthProfile.from_json(profile) if isinstance(profile, Mapping) else None
        )
        self._assets: dict[str, SensorHealth] = {}

    def check(
        self,
        readings: Sequence[SensorReading],
        accepted: Sequence[int],
        policy: AlertPolicy,
        now_ms: int,
    ) -> list[AlertEvent]:
        """Run the rules on the accepted readings (indices, grouped by asset, time order)."""
        profile = self.profile
        if profile is None or not self.config.enabled or not accepted:
            return []
        events: list[AlertEvent] = []
        signals = profile.signals
        start = 0
        while start < len(accepted):
            asset = readings[accepted[start]].asset
            end = start
            while end < len(accepted) and readings[accepted[end]].asset == asset:
                end += 1
            rows = [readings[i] for i in accepted[start:end]]
            values = np.array(
                [[_number(r.values.get(s)) for s in signals] for r in rows], dtype=np.float64
            )
            ts = np.array([r.ts_ms for r in rows], dtype=np.int64)
            health = self._assets.get(asset)
            if health is None:
                health = self._assets[asset] = SensorHealth(profile, self.config)
            events.extend(self._step(policy, asset, ts, health.check(values, ts), now_ms))
            start = end
        return events

    def check_columns(
        self,
        runs: Sequence[tuple[str, npt.NDArray[np.intp]]],
        ts_ms: npt.NDArray[np.int64],
        values: npt.NDArray[np.float64],
        signals: Sequence[str],
        policy: AlertPolicy,
        now_ms: int,
    ) -> list[AlertEvent]:
        """:meth:`check` on a columnar batch: ``values`` (readings, ``signals``) raw, NaN
        where missing, ``ts_ms`` their times; ``runs`` each asset's accepted readings (rows,
        in time order), assets in order. The same findings and events as :meth:`check`, with
        the assets' rules run side by side (``models.health.check_many``) and an asset's
        sensor tracks stepped only where a rule flags something or a track is in progress.
        """
        profile = self.profile
        if profile is None or not self.config.enabled or not runs:
            return []
        names = list(signals)
        if tuple(names) != profile.signals:
            column = {s: j for j, s in enumerate(names)}
            pad = np.full((values.shape[0], 1), np.nan)
            values = np.hstack([values, pad])[
                :, [column.get(s, len(names)) for s in profile.signals]
            ]
        healths = []
        for asset, _ in runs:
            health = self._assets.get(asset)
            if health is None:
                health = self._assets[asset] = SensorHealth(profile, self.config)
            healths.append(health)
        found = check_many(
            healths, [values[rows] for _, rows in runs], [ts_ms[rows] for _, rows in runs]
        )
        events: list[AlertEvent] = []
        for (asset, rows), findings in zip(runs, found, strict=True):
            if policy.sensor_quiet(asset) and not any(f.any() for f in findings.fired.values()):
                continue  # stepping it would change nothing
            events.extend(self._step(policy, asset, ts_ms[rows], findings, now_ms))
        return events

    def _step(
        self,
        policy: AlertPolicy,
        asset: str,
        ts_ms: npt.NDArray[np.int64],
        found: HealthFindings,
        now_ms: int,
    ) -> list[AlertEvent]:
        """One asset's findings through its sensor tracks."""
        return policy.step_sensor(
            asset,
            ts_ms,
            found.signals,
            found.fired,
            found.scores,
            found.limits,
            present=found.present,
            model_name=SENSOR_MODEL,
            model_version=self.version,
            now_ms=now_ms,
        )

    def snapshot_asset(self, asset: str) -> dict[str, Any] | None:
        health = self._assets.get(asset)
        return None if health is None else health.snapshot()

    def restore_asset(self, asset: str, snap: Mapping[str, Any]) -> None:
        if self.profile is None:
            return
        health = SensorHealth(self.profile, self.config)
        health.restore(snap)
        self._assets[asset] = health

    def forget(self, assets: Iterable[str]) -> None:
        for asset in assets:
            self._assets.pop(asset, None)


def _number(value: float | None) -> float:
    return np.nan if value is None else float(value)

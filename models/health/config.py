"""The sensor-health rules' names and settings (what each rule does: :mod:`models.health`)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from common.config import Config

SensorRule = Literal["stuck", "spike", "out_of_range"]
#: The rules, in the order findings list them; ``alerts.events.SENSOR_RULES`` spells the same.
RULES: Final[tuple[SensorRule, ...]] = ("stuck", "spike", "out_of_range")

#: Fewer finite training readings than this and a signal gets no rules: too little to learn
#: a longest run, a residual scale or an envelope from.
MIN_TRAINING_READINGS: Final = 50


class SensorHealthConfig(Config, frozen=True, kw_only=True):
    """How strict the sensor-health rules are, relative to the trained profile.

    The defaults aim at (nearly) no alarm on normal data, leaving gross faults plainly
    caught: a freeze 3x longer than any training run (and at least 30 readings), a spike of
    8 robust sigmas (or more where training's residual tail is heavy) that comes back within
    3 readings, and a sustained excursion a whole trained span beyond the trained envelope
    (so set-point moves up to a span past training stay quiet). Factor 3 on the longest run:
    for runs that end at random (a quantised noisy signal) the longest run grows with the
    log of the readings seen, so tripling it needs ~N**3 live readings for N training ones;
    set-point-like signals are held for as long as operators hold them, and three times
    the longest hold training saw is what "far longer" means here.
    """

    enabled: bool = True
    #: A run of unchanged readings fires past this multiple of training's longest run.
    stuck_factor: Annotated[float, msgspec.Meta(ge=1.0)] = 3.0
    #: ... and never below this many readings (a noisy signal's longest run is ~1).
    stuck_min_readings: Annotated[int, msgspec.Meta(ge=2)] = 30
    #: Spike band half-width in residual scales (robust sigmas).
    spike_z: Annotated[float, msgspec.Meta(gt=0)] = 8.0
    #: ... and at least training's residual tail extended this many decades of rarity past
    #: its 99.9th percentile (3: about one normal reading in a million reaches the band).
    spike_tail_decades: Annotated[float, msgspec.Meta(ge=0, le=6)] = 3.0
    #: The longest excursion still called a spike; longer ones are steps or out of range.
    spike_max_readings: Annotated[int, msgspec.Meta(ge=1, le=8)] = 3
    #: After the spike the signal must be back within this fraction of the band.
    spike_return: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    #: The envelope is widened by this multiple of its span on each side.
    envelope_margin: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    #: The envelope's span is at least this fraction of the signal's magnitude.
    envelope_level_fraction: Annotated[float, msgspec.Meta(ge=0)] = 0.05

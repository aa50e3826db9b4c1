"""The sensor-health rules' names and settings (what each rule does: :mod:`models.health`)."""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from common.config import Config

SensorRule = Literal["stuck", "spike", "out_of_range", "step"]
#: The rules, in the order findings list them; ``alerts.events.SENSOR_RULES`` spells the same.
RULES: Final[tuple[SensorRule, ...]] = ("stuck", "spike", "out_of_range", "step")

#: Readings in each of the step rule's two medians (the profile's default): a step is
#: known once ``STEP_WINDOW // 2 + 1`` readings after it are in.
STEP_WINDOW: Final = 7

#: A signal "moved" at a reading when its level step there exceeds this many of its own
#: step scales. Training learns the step rule's tail from the readings where no other
#: signal of the asset moved (``SensorHealthConfig.step_alone_z`` defaults to the same).
STEP_MOVED_Z: Final = 4.0

#: Fewer finite training readings than this and a signal gets no rules: too little to learn
#: a longest run, a residual scale or an envelope from.
MIN_TRAINING_READINGS: Final = 50


class SensorHealthConfig(Config, frozen=True, kw_only=True):
    """How strict the sensor-health rules are, relative to the trained profile.

    The defaults aim at (nearly) no alarm on normal data, leaving gross faults plainly
    caught: a freeze 3x longer than any training run (and at least 30 readings), a spike of
    8 robust sigmas (or more where training's residual tail is heavy) that comes back within
    3 readings, a level step of 10 robust sigmas (or more, likewise) in one signal alone
    that holds for at least half the step window, and a sustained excursion a whole
    trained span beyond the trained envelope (so set-point moves up to a span past
    training stay quiet). Factor 3 on the longest run: for runs that end at random (a
    quantised noisy signal) the longest run grows with the log of the readings seen, so
    tripling it needs ~N**3 live readings for N training ones; set-point-like signals are
    held for as long as operators hold them, and three times the longest hold training
    saw is what "far longer" means here.
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
    #: Step band half-width in step scales (robust sigmas of training's level steps). 10,
    #: not the spike's 8: at 8 the simulator's noise bursts and SKAB's warm-up drift gave
    #: steps of 8.1-9.1 scales that were no fault (docs/BENCHMARKS.md), and every
    #: level shift measured (demo, cadence test, simulator) scored 18 scales or more.
    step_z: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: ... and at least training's tail of lone steps extended this many decades.
    step_tail_decades: Annotated[float, msgspec.Meta(ge=0, le=6)] = 3.0
    #: A step counts only if no other signal of the asset stepped more than this many of
    #: its own step scales at the same reading: a process change moves related signals
    #: together, a sensor's own fault moves one.
    step_alone_z: Annotated[float, msgspec.Meta(gt=0)] = STEP_MOVED_Z
    #: Before training, leave out of the history the stretches where a signal flat-lined
    #: far longer than it usually holds a value (a sensor offline, exported as 0.0 or its
    #: last reading: :mod:`models.health.screen`). The training summary names each one;
    #: false trains on every row, as given.
    screen_history: bool = True

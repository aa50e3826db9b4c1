"""Sensor health beside the model: stuck, spike, out-of-range and step rules learned per signal.

A scorer judges the plant; these rules judge the *sensors*, which a scorer is blind to (a
frozen reading looks perfectly normal to an autoencoder, a one-reading spike is gone before
a window fills). Every limit is relative to what training saw for that signal, counted in
readings and in the signal's own spread, so no rule holds a number of seconds or a unit and
one profile works at any cadence and for any plant:

``stuck``
    The reading has not changed (by more than ``flat_tolerance`` of the signal's typical
    step, so float noise on a frozen value still counts as frozen) for more than
    ``stuck_factor`` x the longest unchanged run seen in training, and at least
    ``stuck_min_readings`` readings. With timestamps at fit and check, the run must also
    last ``stuck_factor`` x the longest unchanged *duration* of training (a faster live
    cadence then cannot fake a long run). A quantised or set-point-like signal that
    repeats for long stretches in training has a long longest run, so only a far longer
    freeze fires. A signal that never changed within a training segment has no stuck rule.
    Score: the run's length in readings; limit: the allowed length.
``spike``
    One to ``spike_max_readings`` readings far outside a robust local band, after which
    the signal comes back within ``spike_return`` of that band. The return is what tells a
    spike from a set-point step (which stays), so the finding is on the reading that came
    back. The band is centred on the median of the previous ``band_window`` readings; its
    half-width is the larger of ``spike_z`` residual scales and the *tail guard*. The
    residual scale (residual: reading minus that median, in training) is MAD-based
    (1.4826 x median |residual|), falling back to the mean absolute residual (x 1.2533)
    where more than half the residuals are 0 (a quantised signal), and never below the
    signal's median non-zero step, so moving by one quantum is never a spike. The tail
    guard extends training's own residual tail ``spike_tail_decades`` decades of rarity
    past its 99.9th percentile, as a power law through the 99th and 99.9th percentiles
    (q999 x (q999 / q99) ** decades): for Gaussian noise that is ~7 sigma, below the
    ``spike_z`` floor, while a heavy-tailed but normal signal (Student-t, log-normal) gets
    a band its own outliers stay inside (a fixed multiple of a quantile cannot do that).
    Score: the excursion in residual scales; limit: the band in the same units.
``out_of_range``
    More than ``spike_max_readings`` readings in a row (shorter excursions are the spike
    rule's) outside the trained envelope widened by ``envelope_margin`` x its span. The
    envelope is the union of the 0.1 / 99.9 percentiles of the raw training values (noise,
    without isolated training outliers) and of the range of the local level (the band
    median: rare but sustained states such as a valve opened for a while, without
    spikes). Its span is at least ``envelope_level_fraction`` of the signal's magnitude, so
    a signal constant in training (a set point) still gets an envelope; a signal that was
    exactly 0 throughout training has no scale, and any other value is out of range.
    Score: distance outside the envelope in spans (in the signal's units when the span is
    0); limit: ``envelope_margin`` (0 then).
``step``
    The signal's level steps and stays, *alone*: the median of its last ``step_window``
    readings (7, the profile's) minus the median of the ``step_window`` before is more than
    the step band, while no other signal of the asset stepped more than ``step_alone_z``
    of its own step scales at that reading. A sensor's offset or a failing transmitter
    moves one signal; a set-point change or a process upset moves the signals related to
    it together, and those are the model's to judge. The medians make it blind to spikes
    (fewer than half the window) and known once most of the window after the step is in
    (4 readings of 7). The band is the larger of ``step_z`` step scales (MAD-based over
    training's steps, at least a quarter of the median non-zero change) and training's
    tail of steps taken alone extended ``step_tail_decades`` decades, as for the spike
    band: a signal that follows the process with a lag (a temperature after a load
    change) steps alone in training too, and gets a band that holds those steps. A step
    that undoes the signal's last one (lands within half the band, or a quarter of that
    step, of where it began: the offset going away, a fault ending) is no news. Every
    reading of a run of consecutive readings over the band carries the verdict of its
    first. Score: the step in step scales; limit: the band in the same units. A profile
    trained before the rule existed has no step rule.

Readings that are missing (NaN, or not finite) are no reading for that signal: they neither
extend nor break a run, and no rule fires on them. A signal with fewer than
``MIN_TRAINING_READINGS`` finite training readings has no rules.

:class:`SensorHealth` holds one asset's carry state (the current runs, the last readings
for the band), so a batch gives the same findings however the readings are cut into
batches; it snapshots to plain JSON like every per-asset state.

The package, one concern per module: :mod:`~models.health.config` (the rules' names and
settings), :mod:`~models.health.profile` (what training saw), :mod:`~models.health.rules`
(one asset's rules over time), :mod:`~models.health.findings` (one batch's verdicts),
:mod:`~models.health.snapshot` (the carry state as JSON) and :mod:`~models.health.kernels`
(the array kernels the rules are built from).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> train = rng.normal(50.0, 1.0, (2000, 1))
>>> profile = SensorHealthProfile.fit(train, [(0, 2000)], ("temp",))
>>> health = SensorHealth(profile)
>>> live = rng.normal(50.0, 1.0, (200, 1))
>>> live[100:] = live[99]                      # frozen from reading 99: the 31st is 129
>>> live[50] = 80.0                            # and once spiked
>>> found = health.check(live)
>>> [(row, signal, rule) for row, signal, rule, _ in found.flagged()][:2]
[(51, 'temp', 'spike'), (129, 'temp', 'stuck')]
>>> float(found.limits["stuck"][0])           # max(30 readings, 3 x the longest run: 1)
30.0
"""

from models.health.config import (
    MIN_TRAINING_READINGS,
    RULES,
    STEP_WINDOW,
    SensorHealthConfig,
    SensorRule,
)
from models.health.findings import HealthFindings
from models.health.kernels import F64, I64, Bools
from models.health.profile import PROFILE_VERSION, SensorHealthProfile
from models.health.rules import SensorHealth, check_many
from models.health.snapshot import SNAPSHOT_VERSION

__all__ = [
    "F64",
    "I64",
    "MIN_TRAINING_READINGS",
    "PROFILE_VERSION",
    "RULES",
    "SNAPSHOT_VERSION",
    "STEP_WINDOW",
    "Bools",
    "HealthFindings",
    "SensorHealth",
    "SensorHealthConfig",
    "SensorHealthProfile",
    "SensorRule",
    "check_many",
]

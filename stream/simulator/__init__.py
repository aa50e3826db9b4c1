"""The plant simulator: centrifugal pumps driven by induction motors, with labelled faults.

Each asset is one pump set. Its hidden state moves through a small physical model and five
sensors read it, every ``period_ms``:

* **load**: the commanded pump speed (fraction of nominal) follows a daily cycle, a slow
  mean-reverting random walk of the set-point with occasional small steps, and coloured
  process noise; the real speed follows the command through a first-order lag (4 s).
* ``flow`` (l/min) and ``pressure`` (bar): where the pump curve (affinity laws,
  ``p = p0·s² − kq·Q²``) meets the system curve (``p = p_static + r·Q²``).
* ``current`` (A): magnetising current plus a part proportional to shaft power
  (``p·Q / η``), so it tracks torque and load.
* ``temp`` (°C, motor housing): first-order lag (900 s) towards ambient (daily cycle) plus
  idle losses plus copper losses ``∝ I²``; it lags load by minutes.
* ``vibration_rms`` (g): running-speed harmonics 1x (imbalance, ``∝ s²``) and 2x
  (misalignment, grows with torque) plus broadband, reduced to the RMS of a 0.25 s
  acquisition window in closed form, so the rotor phase (carried across readings) makes it
  flicker a little the way a real transmitter does.

Every sensor adds white noise plus coloured (AR(1), 5 s) noise and rounds to its
resolution. Nominal set-points, curves and gains differ a little per asset (seeded).
Time constants are seconds of simulated time, whatever ``period_ms`` is.

Generation is vectorised per block of steps across all assets: first-order recurrences
(lags, AR noise, the set-point walk) are solved for a whole block with one matrix product,
and every piece of state (lag outputs, noise states, rotor phase, last emitted values) is
carried from block to block, so an endless run streams in bounded memory. Blocks have a
size fixed by the configuration, and chunks of any size are cut from them, so chunked
generation gives exactly the numbers of one-shot generation.

Injected events (planned up front from the seed; ``magnitude`` in the labels is):

================ ============================================ ===============================
kind             effect                                        magnitude
================ ============================================ ===============================
bearing_wear     vibration grows to ``1 + m`` times, ∝ t^1.5;   ``m`` (vibration factor − 1)
                 temperature rises by up to ``2.4·m`` °C
cavitation       bursts (2–8 s on, 3–15 s off): pressure drops  pressure drop fraction
                 by the fraction, flow by 0.6 of it, vibration
                 spikes, pressure flutters
stuck_sensor     one signal repeats its last value              0
spike            1–3 samples offset by ±15 typical steps        offset (signal units)
level_shift      a sudden offset of ±10 typical steps           offset (signal units)
noise_increase   sensor noise of 1–3 signals times the factor   noise factor
regime_change    the load set-point steps and stays (normal)    step (fraction of speed)
sensor_drift     one signal's calibration drifts linearly over  total drift (signal units)
                 a long time and stays (normal)
================ ============================================ ===============================

Label intervals give the first and last affected reading, both inclusive. A regime change's
interval is its settling time (three temperature time constants, cut at the next event);
a sensor drift's is its ramp. Both are ``is_fault=false``: the plant is healthy.

Cavitation bursts are too short to move a temperature with a 900 s time constant, so the
thermal model runs on the undisturbed load: outside fault intervals, a run with faults
gives exactly the numbers of the same run without them.

One concern per module: ``config`` (the vocabulary and :class:`SimConfig`), ``physics``
and ``recurrence`` (the model), ``planning`` (the labelled events), ``generator``
(:class:`PlantSimulator`), ``chunks``, ``labels``, ``summary``, the sinks ``file_sink`` and
and ``kafka_sink`` (which delivers through :mod:`common.delivery`). Everything public is
importable from this package; the command line, ``plantwatch simulate``, is
``plantwatch/simulate.py`` (it reads the settings, which live above the rooms).

>>> sim = PlantSimulator(SimConfig(n_assets=2, duration_s=900, faults=2, seed=3))
>>> whole = sim.generate()
>>> whole.values.shape  # (steps, assets, signals), time-major
(900, 2, 5)
>>> int(whole.fault.sum()) == sum(f.stop_step - f.start_step for f in sim.faults)
True
"""

from __future__ import annotations

from common.progress import Progress
from stream.simulator.chunks import BoolArray, Chunk, FloatArray, IntArray
from stream.simulator.config import (
    DAY_MS,
    DEFAULT_START_MS,
    ENDLESS_PLAN_HORIZON_S,
    FAULT_KINDS,
    FILE_COLUMNS,
    LABEL_COLUMNS,
    LABEL_SCHEMA,
    NORMAL_KINDS,
    SIGNALS,
    SimConfig,
    asset_names,
)
from stream.simulator.file_sink import default_labels_path, write_file
from stream.simulator.generator import PlantSimulator
from stream.simulator.kafka_sink import (
    DeliveryError,
    KafkaUnreachableError,
    produce,
    producer_config,
)
from stream.simulator.labels import FaultInterval, write_labels
from stream.simulator.summary import RunSummary

__all__ = [
    "DAY_MS",
    "DEFAULT_START_MS",
    "ENDLESS_PLAN_HORIZON_S",
    "FAULT_KINDS",
    "FILE_COLUMNS",
    "LABEL_COLUMNS",
    "LABEL_SCHEMA",
    "NORMAL_KINDS",
    "SIGNALS",
    "BoolArray",
    "Chunk",
    "DeliveryError",
    "FaultInterval",
    "FloatArray",
    "IntArray",
    "KafkaUnreachableError",
    "PlantSimulator",
    "Progress",
    "RunSummary",
    "SimConfig",
    "asset_names",
    "default_labels_path",
    "produce",
    "producer_config",
    "write_file",
    "write_labels",
]

"""Per-asset alert state machine: debounce, hysteresis and cooldown between scores and people.

The policy is pure: it takes one :class:`Decision` per scored window (from the threshold
layer) and returns the :class:`~alerts.events.AlertEvent` values that window causes. It never
reads a clock or touches Kafka, so the run loop and the backtest drive the very same code.

Life of an asset's alert::

    idle --(k of the last n windows anomalous)--> open --(m normal windows in a row)--> resolved
      ^                                                                                   |
      +------------------------(cooldown_ms of reading time passed)----------------------+

Decisions made here, and why:

* **All policy timing runs on reading time** (``Decision.ts_ms``), never on ``now_ms``. The
  cooldown and the ``updated`` rate limit are therefore a pure function of the decisions, so
  a replay after a crash, or a backtest of the same file, makes the same alerts with the same
  ids. ``now_ms`` only fills ``detected_at``. An asset's reading time is the latest
  ``ts_ms`` seen for it, so a late window cannot move its clock backwards.
* **Opening needs the current window to be anomalous** and ``k`` anomalous windows among the
  last ``n`` (fewer than ``n`` seen counts as the windows seen so far). For an anomaly,
  one of those windows must also have scored ``strong_ratio`` (1.3) times its threshold;
  weaker exceedances open only when they persist, ``weak_k`` of the last ``weak_n``
  windows (10 of 30), fewer where those would outlast ``weak_max_ms`` of reading time
  (30 minutes: 6 of 18 at 5-minute readings) but never fewer than ``weak_min_k`` (6, also
  at hourly readings). Overlapping windows are correlated, so three of five barely over
  the line is one noisy crossing; measured in docs/BENCHMARKS.md.
* **Cooldown defers, it does not discard**: windows that arrive during the cooldown still
  fill the k-of-n history, but an open waits until the cooldown has passed and an anomalous
  window arrives; the history is cleared at each resolve, so a new episode never starts
  before the previous one ended.
* ``started_at`` is the reading time of the earliest anomalous window in the history that
  opened the alert; ``ended_at`` is the reading time of the **last anomalous window** before
  the ``m`` normal ones (when the abnormal behaviour stopped, not when the monitor became
  sure of it; ``window_at`` of the ``resolved`` event carries the latter).
* Alert severity is the highest severity seen in the episode. The threshold layer's
  severity is used as given; an anomalous decision with severity 0 gets ``critical`` when
  score / threshold reaches ``critical_ratio``, else ``warning``.
* ``updated`` is sent at once when severity escalates (at most once per episode, as there
  are two levels), and when the peak score has risen by ``update_min_rise`` (a fraction)
  over the last reported peak, at most once per ``update_every_ms``.
* Shutting down never resolves anything: a restarted monitor restores the snapshot and
  continues every open alert under the same id.

**Tracks: sensor (and quality) alerts run through the same machine.** A decision's ``kind``
(``anomaly`` by default), ``rule`` and ``signal`` name its *track*; each (asset, kind, rule,
signal) has its own copy of the state machine above, so a stuck-sensor alert and the
asset's anomaly alert open, update and resolve independently. The anomaly track is the
asset's state exactly as before (same snapshot fields, same ids); other tracks are kept in a
``tracks`` list beside it, so a snapshot written before tracks existed restores unchanged.
Other kinds have their own :class:`AlertConfig` (``AlertPolicy(sensor=...)``): a sensor
rule has already debounced its finding (a run far longer than training saw, an excursion
that came back), so by default one flagged reading opens (``k = n = 1``). For a sensor
track each decision is one *reading* of the signal, so ``m`` counts readings.
:meth:`AlertPolicy.step_sensor` takes a whole batch of sensor-health findings as columns.

**Resolving from outside**: :meth:`AlertPolicy.resolve` ends an asset's open anomaly alert
when something other than the scores says it is over (a re-baseline: the asset settled on a
new operating point), exactly as its ``m`` normal windows would have.

An alert id is derived from the asset, what raised it and the start time: the model's name
for an anomaly (unchanged), kind + rule + signal otherwise (:func:`alert_id_for`).

The package, one concern per module: :mod:`~alerts.policy.decision` (what the policy is
handed), :mod:`~alerts.policy.config` (its settings), :mod:`~alerts.policy.ids` (alert ids),
:mod:`~alerts.policy.state` (per-asset state), :mod:`~alerts.policy.machine` (one track,
one decision), :mod:`~alerts.policy.columns` (one track, a column of decisions),
:mod:`~alerts.policy.snapshot` (persistence) and :mod:`~alerts.policy.alert_policy` (the
:class:`AlertPolicy` facade over every asset's tracks).

>>> policy = AlertPolicy(AlertConfig(k=2, n=3, m=2, cooldown_ms=0))
>>> def d(ts_ms, anomalous):
...     return Decision("pump-1", ts_ms, 9.0 if anomalous else 1.0, 4.0, anomalous,
...                     1 if anomalous else 0, {"temp": 0.7, "flow": 0.3}, "lstm-ae", "1")
>>> [(e.event, e.severity) for t, a in [(0, True), (1, True), (2, False), (3, False)]
...  for e in policy.step(d(1795899600000 + t * 1000, a), now_ms=1795899610000)]
[('opened', 'warning'), ('resolved', 'warning')]
>>> stuck = Decision("pump-1", 1795899604000, 40.0, 30.0, True, 0, {}, "lstm-ae", "1",
...                  kind="sensor", rule="stuck", signal="temp")
>>> [(e.kind, e.event, e.reason) for e in policy.step(stuck, now_ms=1795899610000)]
[('sensor', 'opened', 'stuck: temp at 40, over its limit 30')]
"""

from alerts.policy.alert_policy import AlertPolicy
from alerts.policy.config import SENSOR_ALERT_DEFAULTS, AlertConfig
from alerts.policy.decision import ANOMALY, Decision, RuleColumns, TrackKey
from alerts.policy.ids import alert_id_for
from alerts.policy.snapshot import SNAPSHOT_VERSION
from alerts.policy.state import Phase

__all__ = [
    "ANOMALY",
    "SENSOR_ALERT_DEFAULTS",
    "SNAPSHOT_VERSION",
    "AlertConfig",
    "AlertPolicy",
    "Decision",
    "Phase",
    "RuleColumns",
    "TrackKey",
    "alert_id_for",
]

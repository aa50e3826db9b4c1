"""Guarded online learning: fine-tune the scorer on recent normal windows, validate, swap.

A plant changes (seasons, wear, new set-points) and a model trained once slowly turns every
window of the new normal into an alert. :class:`OnlineLearner` lets the scorer follow such
changes without learning the faults it is there to report:

* **Only what the Monitor vouches for.** ``offer`` keeps a window only if the Monitor marked
  it eligible: judged normal, its asset had no open or cooling alert, and no anomalous window
  within a guard interval before it. The learner never decides eligibility itself, so what
  can be learnt is exactly what the alerting layer called normal.
* **Bounded memory, newest first.** Eligible windows go into a ring buffer of the newest
  ``buffer_windows``. A ring rather than a reservoir: the point is to follow the plant *now*;
  a reservoir samples all history since start uniformly, so after a change the old regime
  would dominate it for a long time, and it loses the time order that picking "the most
  recent windows" for validation needs. Memory is ``buffer_windows x window x signals``
  float32 (20,000 x 32 x 8 is 20 MB), plus one copy of it while a fine-tune runs.
* **Rate-limited and off the scoring path.** ``maybe_start`` starts at most one fine-tune
  per ``min_interval_s`` and only after ``min_windows`` new eligible windows, on a *copy* of
  the serving scorer, in a background thread that reads only a snapshot of the buffer taken
  when it starts. The fine-tune competes with scoring for the CPU (PyTorch's intra-op thread
  pool is process-wide, and this module sets no thread count), which is why it is rare.
  At production size (window 32, 8 signals, 16,000 training windows, 3 epochs, default
  model sizes, one thread) a fine-tune took 6.5 s (LSTM forecaster), 9 s (LSTM-AE), 11.5 s
  (conv-AE) and 0.1 s (PCA). The deep fine-tune seeds torch's global generator (for
  dropout) inside ``torch.random.fork_rng``; scoring draws no random numbers, so it is not
  disturbed, but a background fine-tune is reproducible only while nothing else in the
  process draws from that generator (``background=False`` always is).
* **Validated before it serves.** The snapshot is put in time order; its newest
  ``holdout_fraction`` is held out (never trained on), ``window - 1`` windows before that are
  dropped (so, for one asset at stride 1, no training window shares a reading with a held-out
  one), and the rest is trained on. Both models are then judged on the same held-out windows
  by :func:`validation_error`, and the candidate replaces the current model only if its error
  is at most ``max_score_ratio`` times the current model's.
* **Watched after it serves.** For the ``rollback_windows`` verdicts after a swap, the
  anomalous rate is compared with the rate over the same number of verdicts before it; at
  ``rollback_anomaly_ratio`` times that rate (floored at ``ROLLBACK_MIN_BASE_RATE``) the
  previous model comes back. A real fault right after a swap also trips this; going back to
  the model that was trusted before is the safe answer then too. After a rollback the buffer
  is emptied (windows the rejected model judged normal are not trusted) and the rate limit
  restarts.

The normaliser is never changed: every window already in the stream state's ring buffers was
normalised with it, so a new one would shift them all. A candidate is a new
:class:`~models.artifact.TrainedModel` (new content-hash version) with the parent's signals,
window and normaliser, calibration scores from the held-out windows, and its lineage in
``metadata["online"]``. It lives in memory; saving it is the caller's choice.

Only scorers with the :class:`~models.protocol.OnlineLearning` capability take part (copy,
``fine_tune``, a held-out error that compares two models fairly), which the learner uses and
nothing else: the deep scorers and PCA (``models.registry.online_scorers()``). Half-Space
Trees' score is a mass ratio that each model normalises by its own training data, so two of
them cannot be compared on held-out windows; it leaves the capability out.

Modules: ``config`` (:class:`OnlineConfig`), ``buffers`` (the window and verdict rings),
``candidate`` (fine-tune a copy and validate it), ``learner`` (:class:`OnlineLearner`).
"""

from models.online.candidate import validation_error
from models.online.config import OnlineConfig
from models.online.learner import ROLLBACK_MIN_BASE_RATE, ModelSwap, OnlineLearner

__all__ = [
    "ROLLBACK_MIN_BASE_RATE",
    "ModelSwap",
    "OnlineConfig",
    "OnlineLearner",
    "validation_error",
]

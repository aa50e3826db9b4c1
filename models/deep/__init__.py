"""Deep scorers: LSTM autoencoder, LSTM forecaster (plus a stateful stream), conv autoencoder.

All three follow :class:`models.protocol.Scorer` and its online-learning capability
(:class:`models.protocol.OnlineLearning`). They share one training loop
(:func:`train_module`, outside the modules), one way of turning per-signal errors into a
score and contributions, and one persistence format (JSON config + named arrays).

One concern per module: ``modules`` (the ``nn.Module`` architectures and their configs),
``training`` (the training loop, training windows, seeding, device choice), ``scoring``
(errors into scores and contributions), ``base`` (:class:`DeepScorer`: fit, score,
fine-tune, persist), one module per scorer (``lstm_ae``, ``forecaster``, ``conv_ae``) and
``stream`` (:class:`ForecasterStream`, the forecaster one reading at a time).

Scoring choices, written down once:

* **Per-signal error scale.** After ``fit`` every scorer stores, per signal, the median of
  that signal's error over all training windows (floored, see ``ERROR_FLOOR_RATIO``). Errors
  are divided by it before they are summed, so a signal that is simply noisy (large error
  even when the plant is healthy) does not dominate the score or the contributions; a signal
  counts by how unusual its error is *for that signal*. The median rather than the mean so
  that the few abnormal stretches that slip into "normal" history do not inflate the scale.
* **Score** = mean over signals of the scaled error (1.0 is about a typical training
  window); **contributions** = each signal's share of the summed scaled error (uniform when
  the error is exactly zero, so rows always sum to 1).
* **Autoencoders score the last ``score_steps`` readings of the window** (default 1: the
  newest reading), not the whole window. In streaming use with stride 1 every reading is
  scored once, as the newest reading of its window. A mean over all W steps dilutes a fresh
  fault to k/W of its size in the k-th step after it starts (so it takes ~W readings to
  reach full strength) and keeps echoing for W readings after it ends (slow alert
  resolution); the newest reading reacts at once. It also ranked better: over all 34 SKAB
  files (first 400 rows train, window 32, row-wise ROC AUC against the labels, mean over
  files) the LSTM-AE gave 0.786 / 0.768 / 0.731 / 0.731 and the conv-AE 0.800 / 0.797 /
  0.770 / 0.761 for score_steps 1 / 2 / 4 / 32. The noise a one-reading score keeps is left
  to the threshold and alert debounce layers. ``score_steps=window`` gives the whole-window
  mean.

* **Contributions are sharpest at a fault's onset.** When one signal shifts, its share is
  0.95-0.99 on the first shifted reading; a few readings later the models are reading
  shifted input and part of the error spreads to correlated signals (share 0.47-0.68 eight
  readings in, on the test data of ``tests/test_deep.py``), though it stays the largest.

Defaults fit SKAB-sized training (8 signals, 400-2,000 rows, window 32) on one thread:
with early stopping, ``fit`` takes ~0.3-0.9 s (forecaster), ~1.8-3 s (LSTM-AE) and
~1.6-3.4 s (conv-AE) (``bench/bench_inference.py --train``).

Threads: ``torch.set_num_threads`` is process-global, so this package never calls it; the
process that runs the scorer sets it (tests use 1; ``bench/bench_inference.py --threads``).
"""

from models.deep.base import DeepScorer, InferenceOptions
from models.deep.conv_ae import ConvAutoencoderScorer
from models.deep.forecaster import LSTMForecasterScorer
from models.deep.lstm_ae import LSTMAutoencoderScorer
from models.deep.modules import (
    ConvAutoencoder,
    ConvAutoencoderConfig,
    LSTMAutoencoder,
    LSTMAutoencoderConfig,
    LSTMForecaster,
    LSTMForecasterConfig,
    LSTMState,
)
from models.deep.scoring import ABS_ERROR_FLOOR, ERROR_FLOOR_RATIO, scale_errors
from models.deep.stream import STREAM_STATE_VERSION, ForecasterStream
from models.deep.training import (
    LossFn,
    Progress,
    TrainConfig,
    WindowSet,
    pick_device,
    train_module,
)

__all__ = [
    "ABS_ERROR_FLOOR",
    "ERROR_FLOOR_RATIO",
    "STREAM_STATE_VERSION",
    "ConvAutoencoder",
    "ConvAutoencoderConfig",
    "ConvAutoencoderScorer",
    "DeepScorer",
    "ForecasterStream",
    "InferenceOptions",
    "LSTMAutoencoder",
    "LSTMAutoencoderConfig",
    "LSTMAutoencoderScorer",
    "LSTMForecaster",
    "LSTMForecasterConfig",
    "LSTMForecasterScorer",
    "LSTMState",
    "LossFn",
    "Progress",
    "TrainConfig",
    "WindowSet",
    "pick_device",
    "scale_errors",
    "train_module",
]

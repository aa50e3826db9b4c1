"""Baseline scorers: the PCA T²+Q monitor and River's Half-Space Trees.

Both follow :class:`models.protocol.Scorer`, train in seconds on CPU and keep every learnt
number as a plain array, so they persist through safetensors like the deep scorers.

``PCAScorer`` is the project's robust default: classic multivariate statistical process
monitoring, fully numpy, with no randomness. ``HalfSpaceTreesScorer`` trains River's
``anomaly.HalfSpaceTrees`` on normal windows, then exports the trees into flat arrays and
scores with an exact, vectorised numpy re-implementation of River's ``score_one``.

PCA also learns online (:class:`models.protocol.OnlineLearning`); Half-Space Trees does not.
Modules: ``inputs`` (checks on windows, segments and saved state), ``pca``, ``hst``.
"""

from models.baseline.hst import HalfSpaceTreesScorer, sample_windows
from models.baseline.inputs import F64, I64, check_segments, check_windows
from models.baseline.pca import PCAScorer

__all__ = [
    "F64",
    "I64",
    "HalfSpaceTreesScorer",
    "PCAScorer",
    "check_segments",
    "check_windows",
    "sample_windows",
]

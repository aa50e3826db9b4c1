"""The quality-model artifact: ``model.safetensors`` + ``model.json``, as the scorers'.

The same directory format and the same safe loading as :mod:`models.artifact` (its
``write_model_dir`` / ``read_model_dir``: no pickle, no extra files, a content-hash
``version``), under its own schema ``plantwatch.quality/v1`` so that an anomaly command
never mistakes one for the other. The hash covers the predictor's config and tensors, the
signals, the target, both normalisers and the conformal residuals: everything that
changes a prediction or an interval.

>>> import tempfile
>>> from models.quality.training import fit_quality
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 2))
>>> model = fit_quality(x, x[:, 0] * 2.0, ("a", "b"), "y", [(0, 200)], kind="ridge")
>>> with tempfile.TemporaryDirectory() as tmp:
...     loaded = QualityModel.load(model.save(f"{tmp}/q"))
>>> loaded.version == model.version, loaded.target
(True, 'y')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save as save_safetensors

from models.artifact import (
    ArtifactError,
    _plain_json,
    _tensor_manifest,
    content_version,
    library_versions,
    read_model_dir,
    write_model_dir,
)
from models.protocol import Normalizer
from models.quality.conformal import SplitConformal
from models.quality.protocol import QualityPredictor, predictable_rows
from models.quality.registry import predictor_from_state

SCHEMA = "plantwatch.quality/v1"
PREDICTOR_PREFIX = "predictor."
NORMALIZER_MEAN = "normalizer.mean"
NORMALIZER_SCALE = "normalizer.scale"
RESIDUALS = "conformal.residuals"
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Prediction:
    """Per-row predictions in the target's units; NaN where the history was incomplete."""

    predicted: F64
    lower: F64
    upper: F64


@dataclass(frozen=True, eq=False)
class QualityModel:
    """A fitted quality predictor with its normalisers and conformal residuals.

    ``signals`` are the process inputs in order (never the target), ``target`` the quality
    column, ``target_mean``/``target_scale`` the target's normalisation, ``residuals``
    the calibration rows' absolute errors in target units (newest last), ``kind`` the
    name given at training (``pls``, ``ridge``, ``mlp``, ``conv``, ``lstm``).
    """

    predictor: QualityPredictor
    signals: tuple[str, ...]
    target: str
    normalizer: Normalizer
    target_mean: float
    target_scale: float
    residuals: F64
    kind: str
    metadata: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    @classmethod
    def create(
        cls,
        predictor: QualityPredictor,
        signals: Sequence[str],
        target: str,
        normalizer: Normalizer,
        target_mean: float,
        target_scale: float,
        residuals: npt.ArrayLike,
        kind: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> QualityModel:
        """Bundle a fitted predictor; fills ``version``, ``created_at`` and libraries."""
        meta = _plain_json(dict(metadata or {}))
        meta.setdefault("created_at", datetime.now(UTC).isoformat(timespec="milliseconds"))
        meta.setdefault("libraries", library_versions())
        draft = cls(
            predictor=predictor,
            signals=tuple(signals),
            target=target,
            normalizer=normalizer,
            target_mean=float(target_mean),
            target_scale=float(target_scale),
            residuals=np.asarray(residuals, dtype=np.float64).reshape(-1),
            kind=kind,
            metadata=meta,
        )
        draft._check()
        weights = bytes(save_safetensors(draft._tensors()))
        version = content_version(weights, draft._identity())
        return cls(**{**draft.__dict__, "version": version})

    @property
    def history(self) -> int:
        return self.predictor.history

    def conformal(self, window: int | None = None) -> SplitConformal:
        """A conformal interval seeded with the calibration residuals (online from here)."""
        return SplitConformal(self.residuals, window=window or max(1, self.residuals.size))

    def predict(
        self,
        values: npt.ArrayLike,
        segments: Sequence[tuple[int, int]],
        *,
        radius: float = np.inf,
    ) -> Prediction:
        """Predictions for every row of ``values`` (rows, signals) with a full history.

        ``radius`` is the conformal half-width in target units (``SplitConformal.radius``).
        """
        raw = np.asarray(values, dtype=np.float64)
        x = self.normalizer.transform(raw)
        rows = predictable_rows(x, self.history, segments)
        predicted = np.full(raw.shape[0], np.nan)
        predicted[rows] = (
            self.predictor.predict(x, rows).astype(np.float64) * self.target_scale
            + self.target_mean
        )
        return Prediction(predicted, predicted - radius, predicted + radius)

    def predict_histories(self, histories: npt.ArrayLike) -> F64:
        """One prediction per history: ``histories`` (B, history, signals) in raw units,
        oldest row first, each ending at the row predicted; NaN where a row is missing.

        The streaming form of :meth:`predict`: every due prediction of a batch, across
        assets, in one predictor call (the same numbers as :meth:`predict` on the rows).
        """
        h = np.asarray(histories, dtype=np.float64)
        if h.ndim != 3 or h.shape[1] != self.history or h.shape[2] != len(self.signals):
            raise ValueError(
                f"histories must be (B, {self.history}, {len(self.signals)}), got {h.shape}"
            )
        out = np.full(h.shape[0], np.nan)
        complete = np.isfinite(h).all(axis=(1, 2))
        if not complete.any():
            return out
        kept = h[complete]
        x = self.normalizer.transform(kept.reshape(-1, h.shape[2]))
        ends = (np.arange(kept.shape[0], dtype=np.int64) + 1) * self.history - 1
        out[complete] = (
            self.predictor.predict(x, ends).astype(np.float64) * self.target_scale
            + self.target_mean
        )
        return out

    def _check(self) -> None:
        n = len(self.signals)
        if n == 0 or len(set(self.signals)) != n or not all(self.signals):
            raise ArtifactError(f"signals must be distinct non-empty names: {self.signals}")
        if self.target in self.signals:
            raise ArtifactError(f"the target {self.target!r} cannot also be an input signal")
        if self.normalizer.mean.shape != (n,) or self.normalizer.scale.shape != (n,):
            raise ArtifactError(f"normaliser does not cover the {n} signals")
        if self.predictor.n_signals != n:
            raise ArtifactError(
                f"predictor was built for {self.predictor.n_signals} signals, model lists {n}"
            )
        if not (np.isfinite(self.target_mean) and np.isfinite(self.target_scale)):
            raise ArtifactError("target normalisation must be finite")
        if self.target_scale <= 0 or not np.isfinite(self.residuals).all():
            raise ArtifactError("target scale must be positive and residuals finite")

    def _tensors(self) -> dict[str, npt.NDArray[Any]]:
        tensors: dict[str, npt.NDArray[Any]] = {
            PREDICTOR_PREFIX + k: np.ascontiguousarray(v)
            for k, v in self.predictor.state_tensors().items()
        }
        tensors[NORMALIZER_MEAN] = np.ascontiguousarray(self.normalizer.mean, dtype=np.float32)
        tensors[NORMALIZER_SCALE] = np.ascontiguousarray(self.normalizer.scale, dtype=np.float32)
        tensors[RESIDUALS] = np.ascontiguousarray(self.residuals, dtype=np.float64)
        return dict(sorted(tensors.items()))

    def _identity(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "predictor": self.predictor.get_config(),
            "signals": list(self.signals),
            "target": self.target,
            "normalizer": self.normalizer.to_json(),
            "target_normalizer": {"mean": self.target_mean, "scale": self.target_scale},
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the model directory atomically; refuses a model changed since create."""
        self._check()
        tensors = self._tensors()
        weights = bytes(save_safetensors(tensors))
        identity = self._identity()
        if content_version(weights, identity) != self.version:
            raise ArtifactError(
                f"the predictor changed after this model (version {self.version}) was "
                "created; make a new QualityModel with QualityModel.create() before saving"
            )
        manifest = {
            **identity,
            "version": self.version,
            "name": f"quality-{self.kind}",
            "tensors": _tensor_manifest(tensors),
            "metadata": self.metadata,
        }
        return write_model_dir(Path(path), weights, manifest, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QualityModel:
        """Read and verify a directory written by :meth:`save` (strict, no pickle)."""
        root = Path(path)
        manifest, weights, tensors = read_model_dir(root, SCHEMA)
        identity = {key: manifest.get(key) for key in cls._identity_keys()}
        version = manifest.get("version")
        if content_version(weights, identity) != version:
            raise ArtifactError(
                f"artifact was modified: {root} says version {version} but its content does "
                "not hash to it; restore the original files or retrain with "
                "`plantwatch train --task quality`"
            )
        try:
            config = identity["predictor"]
            norm = identity["target_normalizer"]
            signals = identity["signals"]
            norm_x = identity["normalizer"]
            if not (isinstance(config, dict) and isinstance(norm, dict)):
                raise TypeError("'predictor' and 'target_normalizer' must be objects")
            if not isinstance(norm_x, dict):
                raise TypeError("'normalizer' must be an object")
            if not isinstance(signals, list) or not all(isinstance(s, str) for s in signals):
                raise TypeError("'signals' must be a list of names")
            normalizer = Normalizer.from_json(norm_x)
            pairs = ((NORMALIZER_MEAN, normalizer.mean), (NORMALIZER_SCALE, normalizer.scale))
            for key, arr in pairs:
                if key not in tensors or not np.array_equal(tensors[key], arr):
                    raise ValueError(f"the normaliser in model.json and {key} disagree")
            predictor = predictor_from_state(
                config,
                {
                    k[len(PREDICTOR_PREFIX) :]: v
                    for k, v in tensors.items()
                    if k.startswith(PREDICTOR_PREFIX)
                },
            )
            model = cls(
                predictor=predictor,
                signals=tuple(signals),
                target=str(identity["target"]),
                normalizer=normalizer,
                target_mean=float(norm["mean"]),
                target_scale=float(norm["scale"]),
                residuals=np.asarray(tensors[RESIDUALS], dtype=np.float64),
                kind=str(identity["kind"]),
                metadata=dict(manifest.get("metadata") or {}),
                version=str(version),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"cannot rebuild the quality model from {root}: {exc}") from exc
        model._check()
        return model

    @staticmethod
    def _identity_keys() -> tuple[str, ...]:
        return (
            "schema",
            "kind",
            "predictor",
            "signals",
            "target",
            "normalizer",
            "target_normalizer",
        )

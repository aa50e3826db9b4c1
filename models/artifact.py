"""The trained-model artifact: a directory with ``model.safetensors`` and ``model.json``.

``model.safetensors`` holds every learnt number: the scorer's tensors (prefixed
``scorer.``) and the normaliser's arrays (``normalizer.mean``, ``normalizer.scale``).
``model.json`` holds the rest: schema, scorer name and config, signals in order, window,
normaliser, calibration scores (validation-window scores that seed the threshold), a
manifest of the tensors' dtypes and shapes, the content ``version`` and free-form
metadata (training metrics, data summary, library versions, ``created_at``).

Loading never runs code from the directory: it reads JSON and parses safetensors from
bytes, and refuses anything else, including extra files (a ``weights.pt`` next to the
model is refused, not ignored) and a ``model.safetensors`` that is really a pickle.

``version`` is a content hash: the first 12 hex digits of sha256 over the safetensors bytes
and the canonical JSON of everything that changes a score or a threshold (scorer config,
signals, window, normaliser, calibration scores). Two trainings that produce the same
model get the same version; editing any of those fields by hand makes loading fail with
"artifact was modified". ``metadata`` is descriptive and not hashed.

>>> import tempfile, numpy as np
>>> from models.baseline import PCAScorer
>>> from models.protocol import Normalizer
>>> rng = np.random.default_rng(0)
>>> scorer = PCAScorer(n_signals=2, window=4)
>>> _ = scorer.fit([rng.normal(size=(100, 2)).astype(np.float32)])
>>> model = TrainedModel.create(scorer, ("temp", "pressure"),
...     Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32)), np.ones(10, np.float32))
>>> with tempfile.TemporaryDirectory() as tmp:
...     loaded = TrainedModel.load(model.save(f"{tmp}/pump-model"))
>>> loaded.version == model.version, loaded.signals
(True, ('temp', 'pressure'))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from common.cadence import Cadence
from models.protocol import FloatArray, Normalizer, Scorer
from models.registry import scorer_from_state

SCHEMA = "plantwatch.model/v1"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "model.json"
SCORER_PREFIX = "scorer."
NORMALIZER_MEAN = "normalizer.mean"
NORMALIZER_SCALE = "normalizer.scale"
# Far above any real model here (the deep scorers are a few MB); a guard against reading a
# huge wrong file into memory.
MAX_WEIGHTS_BYTES = 2 * 1024**3
MAX_MANIFEST_BYTES = 256 * 1024**2
VERSION_HEX_DIGITS = 12


class ArtifactError(ValueError):
    """A model directory that cannot be loaded (or written) safely, with the reason."""


def _canonical_json(obj: Any) -> bytes:
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"model content is not plain finite JSON: {exc}") from exc
    return text.encode("ascii")


def _identity(
    config: Mapping[str, Any],
    signals: Sequence[str],
    window: int,
    normalizer: Mapping[str, Any],
    calibration: Sequence[float],
) -> dict[str, Any]:
    """Everything besides the tensors that changes a score or a threshold (hashed)."""
    return {
        "schema": SCHEMA,
        "scorer": dict(config),
        "signals": list(signals),
        "window": window,
        "normalizer": dict(normalizer),
        "calibration_scores": list(calibration),
    }


def content_version(weights: bytes, identity: Mapping[str, Any]) -> str:
    """First 12 hex digits of sha256(safetensors bytes + canonical JSON of ``identity``)."""
    digest = hashlib.sha256()
    digest.update(weights)
    digest.update(_canonical_json(identity))
    return digest.hexdigest()[:VERSION_HEX_DIGITS]


def _plain_json(value: Any) -> Any:
    """Metadata as plain JSON: numpy scalars/arrays to Python, non-finite floats to null."""
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain_json(value.tolist())
    if isinstance(value, np.generic):
        return _plain_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ArtifactError(f"metadata value {value!r} of type {type(value).__name__} is not JSON")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a model depends on (None when absent)."""
    out: dict[str, str | None] = {}
    for dist in ("plantwatch", "torch", "numpy", "river", "safetensors"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _tensor_manifest(tensors: Mapping[str, npt.NDArray[Any]]) -> dict[str, dict[str, Any]]:
    return {
        k: {"dtype": str(v.dtype), "shape": [int(n) for n in v.shape]}
        for k, v in sorted(tensors.items())
    }


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A fitted scorer with everything needed to use it on raw readings.

    ``signals`` fixes the column order of windows, ``normalizer`` turns raw readings into
    the normalised values the scorer was trained on, ``calibration_scores`` are scores of
    held-out normal windows (the threshold's starting data), ``name`` is the scorer's name
    and ``version`` the content hash. Build one with :meth:`create` (which computes the
    version) or :meth:`load`.
    """

    scorer: Scorer
    signals: tuple[str, ...]
    window: int
    normalizer: Normalizer
    calibration_scores: FloatArray
    metadata: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    name: str = ""

    @classmethod
    def create(
        cls,
        scorer: Scorer,
        signals: Sequence[str],
        normalizer: Normalizer,
        calibration_scores: npt.ArrayLike,
        metadata: Mapping[str, Any] | None = None,
    ) -> TrainedModel:
        """Bundle a fitted scorer; fills ``version``, ``name``, ``created_at``, libraries."""
        meta = _plain_json(dict(metadata or {}))
        meta.setdefault("created_at", datetime.now(UTC).isoformat(timespec="milliseconds"))
        meta.setdefault("libraries", library_versions())
        calibration = np.asarray(calibration_scores, dtype=np.float32).reshape(-1)
        draft = cls(
            scorer=scorer,
            signals=tuple(signals),
            window=int(scorer.window),
            normalizer=normalizer,
            calibration_scores=calibration,
            metadata=meta,
            version="",
            name=scorer.name,
        )
        draft._check()
        weights, _ = draft._weights()
        version = content_version(weights, draft._identity())
        return cls(
            scorer=scorer,
            signals=draft.signals,
            window=draft.window,
            normalizer=normalizer,
            calibration_scores=calibration,
            metadata=meta,
            version=version,
            name=scorer.name,
        )

    def interval_ms(self, asset: str | None = None) -> float | None:
        """The sampling interval training measured: the asset's own, else all assets'.

        ``None`` for a model trained before intervals were measured (or on one reading).
        """
        cadence = self.metadata.get("cadence")
        if not isinstance(cadence, Mapping):
            return None
        assets = cadence.get("assets")
        if asset is not None and isinstance(assets, Mapping) and isinstance(
            assets.get(asset), Mapping
        ):
            own = Cadence.from_json(assets[asset]).interval_ms
            if own is not None:
                return own
        return Cadence.from_json(cadence).interval_ms

    @property
    def n_signals(self) -> int:
        return len(self.signals)

    def _check(self) -> None:
        n = len(self.signals)
        if n == 0 or any(not isinstance(s, str) or not s for s in self.signals):
            raise ArtifactError("signals must be a non-empty list of non-empty names")
        if len(set(self.signals)) != n:
            raise ArtifactError(f"signal names repeat: {list(self.signals)}")
        if self.normalizer.mean.shape != (n,) or self.normalizer.scale.shape != (n,):
            raise ArtifactError(
                f"normaliser has {self.normalizer.mean.shape} / {self.normalizer.scale.shape} "
                f"entries for {n} signals"
            )
        config = self.scorer.get_config()
        if config.get("n_signals") != n:
            raise ArtifactError(
                f"scorer was built for {config.get('n_signals')} signals, model lists {n}"
            )
        if config.get("name") != self.scorer.name:
            raise ArtifactError("scorer config 'name' differs from the scorer's name")
        if self.window != self.scorer.window or self.window < 1:
            raise ArtifactError(
                f"model window {self.window} differs from the scorer's {self.scorer.window}"
            )
        if self.calibration_scores.ndim != 1 or not np.isfinite(self.calibration_scores).all():
            raise ArtifactError("calibration scores must be a 1-D array of finite numbers")

    def _tensors(self) -> dict[str, npt.NDArray[Any]]:
        tensors: dict[str, npt.NDArray[Any]] = {}
        for key, value in self.scorer.state_tensors().items():
            tensors[SCORER_PREFIX + key] = np.ascontiguousarray(value)
        tensors[NORMALIZER_MEAN] = np.ascontiguousarray(self.normalizer.mean, dtype=np.float32)
        tensors[NORMALIZER_SCALE] = np.ascontiguousarray(self.normalizer.scale, dtype=np.float32)
        return dict(sorted(tensors.items()))

    def _weights(self) -> tuple[bytes, dict[str, npt.NDArray[Any]]]:
        tensors = self._tensors()
        return bytes(save_safetensors(tensors)), tensors

    def _identity(self) -> dict[str, Any]:
        return _identity(
            self.scorer.get_config(),
            self.signals,
            self.window,
            self.normalizer.to_json(),
            [float(v) for v in self.calibration_scores],
        )

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the model directory atomically (temp directory, then rename); returns it.

        An existing model directory is replaced only with ``overwrite=True``; any other
        existing, non-empty path is never touched.
        """
        target = Path(path)
        self._check()
        weights, tensors = self._weights()
        identity = self._identity()
        if content_version(weights, identity) != self.version:
            raise ArtifactError(
                f"the scorer changed after this model (version {self.version}) was created; "
                "make a new TrainedModel with TrainedModel.create() before saving"
            )
        manifest = {
            **identity,
            "version": self.version,
            "name": self.name,
            "tensors": _tensor_manifest(tensors),
            "metadata": self.metadata,
        }
        return write_model_dir(target, weights, manifest, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainedModel:
        """Read and verify a model directory written by :meth:`save`.

        Refuses, with an :class:`ArtifactError` naming the problem: a path that is not a
        directory, any file besides ``model.json`` and ``model.safetensors``, a weights file
        that is not safetensors (pickles and ``torch.save`` archives are never opened), an
        unknown schema, tensors that disagree with the manifest and content that no longer
        matches ``version``.
        """
        root = Path(path)
        manifest, weights, tensors = read_model_dir(root, SCHEMA)

        config = manifest.get("scorer")
        signals = manifest.get("signals")
        window = manifest.get("window")
        norm_json = manifest.get("normalizer")
        calibration = manifest.get("calibration_scores")
        version = manifest.get("version")
        if not isinstance(config, dict) or not isinstance(norm_json, dict):
            raise ArtifactError("model.json needs 'scorer' and 'normalizer' objects")
        if not isinstance(signals, list) or not all(isinstance(s, str) for s in signals):
            raise ArtifactError("model.json 'signals' must be a list of names")
        if isinstance(window, bool) or not isinstance(window, int):
            raise ArtifactError("model.json 'window' must be an integer")
        if not isinstance(calibration, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in calibration
        ):
            raise ArtifactError("model.json 'calibration_scores' must be a list of numbers")
        if not isinstance(version, str):
            raise ArtifactError("model.json lacks its 'version'")

        computed = content_version(
            weights, _identity(config, signals, window, norm_json, calibration)
        )
        if computed != version:
            raise ArtifactError(
                f"artifact was modified: {root} says version {version} but its content hashes "
                f"to {computed}; restore the original files or retrain with `plantwatch train`"
            )

        n = len(signals)
        try:
            normalizer = Normalizer.from_json(norm_json)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model.json 'normalizer' is malformed: {exc}") from exc
        for key, arr in ((NORMALIZER_MEAN, normalizer.mean), (NORMALIZER_SCALE, normalizer.scale)):
            if key not in tensors or not np.array_equal(tensors[key], arr) or arr.shape != (n,):
                raise ArtifactError(
                    f"artifact was modified: the normaliser in {MANIFEST_FILE} and "
                    f"{WEIGHTS_FILE} ({key}) disagree or do not cover {n} signals"
                )
        scorer_tensors = {
            k[len(SCORER_PREFIX) :]: v for k, v in tensors.items() if k.startswith(SCORER_PREFIX)
        }
        try:
            scorer = scorer_from_state(config, scorer_tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"cannot rebuild the scorer from {root}: {exc}") from exc

        metadata = manifest.get("metadata", {})
        model = cls(
            scorer=scorer,
            signals=tuple(signals),
            window=window,
            normalizer=normalizer,
            calibration_scores=np.asarray(calibration, dtype=np.float32),
            metadata=metadata if isinstance(metadata, dict) else {},
            version=version,
            name=str(manifest.get("name", scorer.name)),
        )
        model._check()
        if model.name != scorer.name:
            raise ArtifactError(
                f"model.json names the model {model.name!r} but its scorer is {scorer.name!r}"
            )
        return model


def write_model_dir(
    target: Path, weights: bytes, manifest: Mapping[str, Any], *, overwrite: bool = False
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` atomically (temp directory, rename).

    Shared by every artifact kind (anomaly scorers, quality models): an existing model
    directory is replaced only with ``overwrite=True``; any other path is never touched.
    """
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"

    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{target} already exists; choose another output path or pass "
                "overwrite=True to replace the model there"
            )
        if not target.is_dir() or target.is_symlink():
            raise ArtifactError(f"{target} exists and is not a model directory; not replacing")
        existing = {p.name for p in target.iterdir()}
        if existing - {WEIGHTS_FILE, MANIFEST_FILE}:
            raise ArtifactError(
                f"{target} holds files other than a model ({sorted(existing)}); "
                "not replacing it"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    )
    try:
        staging.chmod(0o755)  # mkdtemp makes it owner-only; a model is meant to be shared
        _write_synced(staging / WEIGHTS_FILE, weights)
        _write_synced(staging / MANIFEST_FILE, text.encode("utf-8"))
        _fsync_dir(staging)
        if target.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, retired / "model")
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def read_model_dir(
    root: Path, schema: str
) -> tuple[dict[str, Any], bytes, dict[str, npt.NDArray[Any]]]:
    """Manifest, weight bytes and tensors of a model directory, checked but not yet trusted.

    Refuses a path that is not a directory, extra files, a weights file that is not
    safetensors, a manifest of another ``schema`` and tensors that disagree with the
    manifest's list; the caller checks the content hash against its own identity.
    """
    if not root.is_dir():
        raise ArtifactError(
            f"{root} is not a model directory (expected a directory holding "
            f"{MANIFEST_FILE} and {WEIGHTS_FILE}, as written by `plantwatch train`)"
        )
    _check_entries(root)
    manifest = _read_manifest(root / MANIFEST_FILE, schema)
    weights = _read_limited(root / WEIGHTS_FILE, MAX_WEIGHTS_BYTES)
    tensors = _parse_safetensors(weights, root / WEIGHTS_FILE)

    declared = manifest.get("tensors")
    if not isinstance(declared, dict):
        raise ArtifactError(f"{root / MANIFEST_FILE} lacks its 'tensors' manifest")
    actual = _tensor_manifest(tensors)
    if actual != declared:
        missing = sorted(declared.keys() - actual.keys())
        extra = sorted(actual.keys() - declared.keys())
        differ = sorted(k for k in declared.keys() & actual.keys() if declared[k] != actual[k])
        raise ArtifactError(
            f"tensors in {WEIGHTS_FILE} do not match {MANIFEST_FILE} (missing {missing}, "
            f"unexpected {extra}, wrong dtype or shape {differ}); the artifact was modified "
            "or damaged"
        )

    return manifest, weights, tensors


def model_schema(path: str | os.PathLike[str]) -> str | None:
    """The ``schema`` a model directory's ``model.json`` declares (None when unreadable).

    Lets a command pick the loader for the kind of model (anomaly scorer or quality
    model); the loader then checks everything.
    """
    manifest = Path(path) / MANIFEST_FILE
    try:
        if manifest.is_symlink() or manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        schema = json.loads(manifest.read_text(encoding="utf-8")).get("schema")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return schema if isinstance(schema, str) else None


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_entries(root: Path) -> None:
    names = sorted(p.name for p in root.iterdir())
    extra = [n for n in names if n not in (WEIGHTS_FILE, MANIFEST_FILE)]
    if extra:
        raise ArtifactError(
            f"refusing to load {root}: it holds {extra} besides {MANIFEST_FILE} and "
            f"{WEIGHTS_FILE}. A model directory holds only those two; other files (pickles, "
            "torch.save checkpoints) are never loaded because they can run code. Remove them "
            "or point at a clean model directory"
        )
    for name in (MANIFEST_FILE, WEIGHTS_FILE):
        entry = root / name
        if entry.is_symlink() or not entry.is_file():
            raise ArtifactError(f"{entry} must be a regular file (missing or a link)")


def _read_limited(path: Path, limit: int) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise ArtifactError(f"{path} is {size} bytes, over the {limit}-byte limit for models")
    return path.read_bytes()


def _reject_constant(token: str) -> float:
    raise ArtifactError(f"model.json holds {token}, which is not valid JSON")


def _read_manifest(path: Path, expected: str = SCHEMA) -> dict[str, Any]:
    raw = _read_limited(path, MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "schema" not in manifest:
        raise ArtifactError(f"{path} is not a plantwatch model manifest (no 'schema' field)")
    schema = manifest["schema"]
    if schema != expected:
        raise ArtifactError(
            f"{path} has artifact schema {schema!r}; this plantwatch reads {expected!r} here. "
            "Load it with the command for that kind of model or the plantwatch version that "
            "wrote it, or retrain with `plantwatch train`"
        )
    return manifest


def _parse_safetensors(data: bytes, path: Path) -> dict[str, npt.NDArray[Any]]:
    """Parse safetensors bytes, after checking they look like safetensors at all.

    The safetensors shape (8-byte header length, then a JSON object) is checked first: a
    header of 128 + 256·k bytes begins with the byte 0x80 too, so that byte alone does not
    make a pickle.
    """
    header_len = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    looks_safe = 2 <= header_len <= len(data) - 8 and data[8:9] == b"{"
    kind = ""
    if looks_safe:
        pass
    elif data[:1] == b"\x80":
        kind = "a Python pickle"
    elif data[:4] == b"PK\x03\x04":
        kind = "a zip archive (the torch.save format)"
    else:
        kind = "not a safetensors file"
    if kind:
        raise ArtifactError(
            f"refusing to load {path}: it is {kind}, not safetensors. Pickle-based weights "
            "are never loaded because unpickling can run arbitrary code; re-export the model "
            "with `plantwatch train`"
        )
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path} is a damaged safetensors file: {exc}") from exc
    return {str(k): np.asarray(v) for k, v in tensors.items()}

"""The model artifact: round trip, content hash, and refusal of anything that could run code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from models.artifact import (
    MANIFEST_FILE,
    SCHEMA,
    WEIGHTS_FILE,
    ArtifactError,
    TrainedModel,
    content_version,
)
from models.baseline import PCAScorer
from models.protocol import Normalizer

SIGNALS = ("temp", "pressure", "vibration_rms")


class MarkerPayload:
    """Unpickling this creates ``marker`` (harmless, but proves the pickle ran code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def make_model(seed: int = 0) -> tuple[TrainedModel, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(300, 3)) * [1.0, 5.0, 0.1] + [70.0, 3.0, 0.8]
    normalizer = Normalizer.fit(raw)
    rows = normalizer.transform(raw)
    scorer = PCAScorer(3, window=8)
    scorer.fit([rows])
    windows = np.lib.stride_tricks.sliding_window_view(rows, 8, axis=0).transpose(0, 2, 1)
    windows = np.ascontiguousarray(windows)
    calibration, _ = scorer.score_batch(windows[:100])
    metadata = {"training": {"note": "unit test"}, "data": {"assets": ["pump-1"]}}
    return TrainedModel.create(scorer, SIGNALS, normalizer, calibration, metadata), windows


@pytest.fixture
def saved(tmp_path: Path) -> tuple[TrainedModel, Path, np.ndarray]:
    model, windows = make_model()
    return model, model.save(tmp_path / "model"), windows


def edit_manifest(root: Path, edit: Any) -> None:
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_round_trip(saved: tuple[TrainedModel, Path, np.ndarray]) -> None:
    model, root, windows = saved
    assert sorted(p.name for p in root.iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]
    loaded = TrainedModel.load(root)
    assert loaded.version == model.version and len(model.version) == 12
    assert loaded.name == "pca"
    assert loaded.signals == SIGNALS
    assert loaded.window == 8
    np.testing.assert_array_equal(loaded.normalizer.mean, model.normalizer.mean)
    np.testing.assert_array_equal(loaded.normalizer.scale, model.normalizer.scale)
    np.testing.assert_array_equal(loaded.calibration_scores, model.calibration_scores)
    np.testing.assert_array_equal(
        loaded.scorer.score_batch(windows)[0], model.scorer.score_batch(windows)[0]
    )
    assert loaded.metadata["data"] == {"assets": ["pump-1"]}
    assert loaded.metadata["libraries"]["numpy"] == np.__version__
    assert "created_at" in loaded.metadata
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    assert manifest["schema"] == SCHEMA
    assert manifest["tensors"]["normalizer.mean"] == {"dtype": "float32", "shape": [3]}


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    first, _ = make_model(seed=0)
    again, _ = make_model(seed=0)
    other, _ = make_model(seed=1)
    assert first.version == again.version  # created_at differs, content does not
    assert first.version != other.version
    root = first.save(tmp_path / "m")
    identity = json.loads((root / MANIFEST_FILE).read_text())
    for key in ("version", "name", "tensors", "metadata"):
        identity.pop(key)
    assert content_version((root / WEIGHTS_FILE).read_bytes(), identity) == first.version


def test_modified_weights_are_refused(saved: tuple[TrainedModel, Path, np.ndarray]) -> None:
    _, root, _ = saved
    tensors = load_safetensors((root / WEIGHTS_FILE).read_bytes())
    tensors["scorer.mean"] = tensors["scorer.mean"] + 0.5
    (root / WEIGHTS_FILE).write_bytes(save_safetensors(tensors))
    with pytest.raises(ArtifactError, match="artifact was modified"):
        TrainedModel.load(root)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["calibration_scores"].__setitem__(0, 99.0),
        lambda m: m["signals"].__setitem__(1, "flow"),
        lambda m: m["normalizer"]["mean"].__setitem__(0, 1.0),
        lambda m: m["scorer"].__setitem__("tail", 2),
        lambda m: m.__setitem__("window", 9),
    ],
    ids=["calibration", "signals", "normalizer", "scorer-config", "window"],
)
def test_tampered_json_is_refused(saved: tuple[TrainedModel, Path, np.ndarray], edit: Any) -> None:
    _, root, _ = saved
    edit_manifest(root, edit)
    with pytest.raises(ArtifactError, match="artifact was modified"):
        TrainedModel.load(root)


def test_tampered_tensor_manifest_is_refused(
    saved: tuple[TrainedModel, Path, np.ndarray],
) -> None:
    _, root, _ = saved
    edit_manifest(root, lambda m: m["tensors"]["scorer.mean"].__setitem__("shape", [4]))
    with pytest.raises(ArtifactError, match="do not match"):
        TrainedModel.load(root)


def test_metadata_is_descriptive_not_hashed(
    saved: tuple[TrainedModel, Path, np.ndarray],
) -> None:
    _, root, _ = saved
    edit_manifest(root, lambda m: m["metadata"].__setitem__("owner", "ops team"))
    assert TrainedModel.load(root).metadata["owner"] == "ops team"


def test_other_schema_is_refused(saved: tuple[TrainedModel, Path, np.ndarray]) -> None:
    _, root, _ = saved
    edit_manifest(root, lambda m: m.__setitem__("schema", "plantwatch.model/v0"))
    with pytest.raises(ArtifactError, match=r"schema 'plantwatch.model/v0'.*reads"):
        TrainedModel.load(root)


def test_payload_is_live(tmp_path: Path) -> None:
    """Control: the payload used below really runs code when unpickled."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(MarkerPayload(marker)))  # the point of the test
    assert marker.exists()


def test_pickle_as_weights_is_refused(
    saved: tuple[TrainedModel, Path, np.ndarray], tmp_path: Path
) -> None:
    _, root, _ = saved
    marker = tmp_path / "pwned"
    (root / WEIGHTS_FILE).write_bytes(pickle.dumps({"weights": MarkerPayload(marker)}))
    with pytest.raises(ArtifactError, match="pickle"):
        TrainedModel.load(root)
    assert not marker.exists()


def test_torch_save_as_weights_is_refused(
    saved: tuple[TrainedModel, Path, np.ndarray], tmp_path: Path
) -> None:
    import torch

    _, root, _ = saved
    marker = tmp_path / "pwned"
    torch.save({"weights": MarkerPayload(marker)}, root / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match="zip archive"):
        TrainedModel.load(root)
    assert not marker.exists()


@pytest.mark.parametrize("extra", ["weights.pt", "model.pkl", "notes.txt"])
def test_extra_file_is_refused(
    saved: tuple[TrainedModel, Path, np.ndarray], tmp_path: Path, extra: str
) -> None:
    _, root, _ = saved
    marker = tmp_path / "pwned"
    (root / extra).write_bytes(pickle.dumps(MarkerPayload(marker)))
    with pytest.raises(ArtifactError, match=f"refusing to load.*{extra}"):
        TrainedModel.load(root)
    assert not marker.exists()


def test_garbage_weights_are_refused(saved: tuple[TrainedModel, Path, np.ndarray]) -> None:
    _, root, _ = saved
    (root / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ArtifactError, match="not safetensors"):
        TrainedModel.load(root)


def test_consistent_but_wrong_shapes_are_refused(
    saved: tuple[TrainedModel, Path, np.ndarray],
) -> None:
    """Re-hashed by hand, so only the shape checks against the config can catch it."""
    _, root, _ = saved
    tensors = load_safetensors((root / WEIGHTS_FILE).read_bytes())
    tensors["scorer.components"] = np.ascontiguousarray(tensors["scorer.components"][:, :1])
    tensors["scorer.eigvals"] = np.ascontiguousarray(tensors["scorer.eigvals"][:1])
    weights = save_safetensors(dict(sorted(tensors.items())))
    (root / WEIGHTS_FILE).write_bytes(weights)
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["scorer"]["n_components"] = 2  # not what the tensors hold
    manifest["tensors"]["scorer.components"]["shape"] = list(tensors["scorer.components"].shape)
    manifest["tensors"]["scorer.eigvals"]["shape"] = [1]
    identity = {k: manifest[k] for k in manifest if k not in ("version", "name", "tensors")}
    identity.pop("metadata")
    manifest["version"] = content_version(weights, identity)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"cannot rebuild the scorer.*components"):
        TrainedModel.load(root)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a model directory"):
        TrainedModel.load(tmp_path / "missing")


def test_save_does_not_clobber(tmp_path: Path) -> None:
    model, _ = make_model()
    root = model.save(tmp_path / "model")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(root)
    other, _ = make_model(seed=1)
    other.save(root, overwrite=True)
    assert TrainedModel.load(root).version == other.version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dirs left
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not replacing"):
        model.save(busy, overwrite=True)
    assert (busy / "keep.txt").exists()


def test_save_refuses_a_refitted_scorer(tmp_path: Path) -> None:
    model, _ = make_model()
    rng = np.random.default_rng(5)
    model.scorer.fit([rng.normal(size=(100, 3)).astype(np.float32)])
    with pytest.raises(ArtifactError, match="changed after this model"):
        model.save(tmp_path / "m")


def test_create_checks_consistency() -> None:
    model, _ = make_model()
    with pytest.raises(ArtifactError, match="entries for 2 signals"):
        TrainedModel.create(model.scorer, SIGNALS[:2], model.normalizer, np.ones(3))
    two = Normalizer(model.normalizer.mean[:2], model.normalizer.scale[:2])
    with pytest.raises(ArtifactError, match="3 signals, model lists 2"):
        TrainedModel.create(model.scorer, SIGNALS[:2], two, np.ones(3))
    with pytest.raises(ArtifactError, match="repeat"):
        TrainedModel.create(model.scorer, ("a", "a", "b"), model.normalizer, np.ones(3))
    with pytest.raises(ArtifactError, match="finite"):
        TrainedModel.create(model.scorer, SIGNALS, model.normalizer, np.array([1.0, np.nan]))


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(
    tmp_path: Path,
) -> None:
    # A header of 128 + 256k bytes makes the first byte 0x80, the pickle opcode; found by
    # a quality model whose weights were refused as "a Python pickle" (issue 12).
    from safetensors.numpy import save as save_safetensors

    from models.artifact import _parse_safetensors

    for width in range(1, 300):
        data = bytes(save_safetensors({"w" * width: np.zeros(3, dtype=np.float32)}))
        if data[0] == 0x80:
            break
    else:
        pytest.fail("no name length gave a header length with low byte 0x80")
    tensors = _parse_safetensors(data, tmp_path / "model.safetensors")
    assert list(tensors) == ["w" * width]

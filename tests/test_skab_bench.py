"""Smoke test of the SKAB benchmark (``bench/skab.py``): two files, the PCA scorer.

The pure parsing helpers are tested everywhere; the runs need the SKAB data at
``../shared/datasets/skab`` and are skipped, saying so, where a clone lacks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from plantwatch.settings import load_settings
from stream.files import read_table
from tests.bench_scripts import load_bench

REPO = Path(__file__).resolve().parents[1]
SKAB = REPO.parent / "shared" / "datasets" / "skab"
needs_skab = pytest.mark.skipif(
    not (SKAB / "valve1").is_dir(),
    reason=f"SKAB data set not present at {SKAB} (read-only copy of waico/SKAB data/)",
)


skab = load_bench("skab")

KEYS = (
    "f1",
    "far_pct",
    "mar_pct",
    "event_f1",
    "nab_standard",
    "nab_low_fp",
    "nab_low_fn",
    "auc_roc",
    "auc_roc_file_mean",
    "train_s_per_file",
    "score_us_per_window",
    "undecided_pct",
    "files",
    "rows",
    "nab_changepoints",
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_hyper_applies_to_all_or_one_scorer() -> None:
    hyper = skab.parse_hyper(["epochs=5", "conv-ae:score_steps=2"], ["lstm-ae", "conv-ae"])
    assert hyper == {"lstm-ae": {"epochs": 5}, "conv-ae": {"epochs": 5, "score_steps": 2}}
    with pytest.raises(ValueError, match="not among --scorers"):
        skab.parse_hyper(["pca:tail=2"], ["conv-ae"])


def test_missing_data_folder_says_where(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data"):
        skab.skab_files(tmp_path / "nowhere")


@needs_skab
def test_two_files_pooled_report_has_keys_and_sane_ranges() -> None:
    paths = skab.skab_files(SKAB, 2)
    assert [skab.file_label(p) for p in paths] == ["valve1/0", "valve1/1"]
    settings = load_settings(env={}, overrides={"threshold": {"kind": "fixed", "grace": 0}})
    report, outcomes = skab.run_scorer(paths, "pca", settings, decision="alert")
    assert set(KEYS) <= set(report)
    assert report["files"] == 2
    tables = [read_table(p, label_column="changepoint") for p in paths]
    assert report["rows"] == sum(len(t) - skab.TRAIN_ROWS for t in tables)
    assert report["nab_changepoints"] == sum(
        int(t.labels[skab.TRAIN_ROWS :].sum()) for t in tables if t.labels is not None
    )
    assert 0.0 <= report["f1"] <= 1.0
    assert 0.0 <= report["far_pct"] <= 100.0
    assert 0.0 <= report["mar_pct"] <= 100.0
    assert 0.0 <= report["auc_roc"] <= 1.0
    for profile in ("nab_standard", "nab_low_fp", "nab_low_fn"):
        assert report[profile] <= 100.0
    # Trained on 400 rows and calibrated on its own training windows, the fixed threshold
    # with no grace decides from the first test row.
    assert report["undecided_pct"] == 0.0
    assert report["train_s_per_file"] > 0.0
    assert report["score_us_per_window"] > 0.0
    for outcome in outcomes:
        assert outcome.predictions.shape == outcome.labels.shape == outcome.scores.shape
        assert set(np.unique(outcome.predictions).tolist()) <= {0, 1}
        assert np.isfinite(outcome.scores).all()


@needs_skab
def test_all_rows_mode_reports_every_row_and_window_decision() -> None:
    paths = skab.skab_files(SKAB, 1)
    settings = load_settings(env={}, overrides={"threshold": {"kind": "fixed", "grace": 0}})
    report, outcomes = skab.run_scorer(paths, "pca", settings, decision="window", rows="all")
    assert report["rows"] == len(read_table(paths[0]))
    # The first window - 1 rows of a file have no window, so no decision.
    assert report["undecided_pct"] > 0.0
    assert outcomes[0].predictions[:10].sum() == 0


@needs_skab
def test_command_line_writes_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, js = tmp_path / "table.md", tmp_path / "results.json"
    argv = ["--data", str(SKAB), "--files", "1", "--set", "threshold.grace=0"]
    argv += ["--set", "threshold.kind=fixed", "--out", str(out), "--json", str(js)]
    assert skab.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert "| Algorithm | F1 | FAR % | MAR % |" in text
    assert "Conv-AE (published) | 0.78 | 13.55 | 28.02" in text
    assert "bench/skab.py --data" in text
    assert text in capsys.readouterr().out
    payload = json.loads(js.read_text(encoding="utf-8"))
    assert payload["results"][0]["files"] == 1
    assert payload["settings"]["threshold"]["kind"] == "fixed"
    assert [row["file"] for row in payload["per_file"]["pca"]] == ["valve1/0"]


@needs_skab
def test_the_defaults_decide_on_every_test_row_and_find_anomalies() -> None:
    """The README's command as deployed (no --set): before the bridge threshold, the
    default grace of 1000 scores outlasted every 400-row-trained file and F1 was 0.000."""
    paths = skab.skab_files(SKAB, 4)
    report, _ = skab.run_scorer(paths, "pca", load_settings(env={}), decision="alert")
    # Only the rows just after a gap in the file's timestamps wait for a full window.
    assert report["undecided_pct"] < 5.0
    assert report["f1"] > 0.4, report["f1"]

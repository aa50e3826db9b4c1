"""The command line as a person uses it: help, train, backtest on a simulated plant."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from plantwatch.cli import build_parser, main
from plantwatch.commands import DEFAULT_SCORER_NAME, SCORER_NAMES


def test_scorer_names_match_the_registry() -> None:
    from models.registry import DEFAULT_SCORER, SCORERS

    assert tuple(sorted(SCORERS)) == SCORER_NAMES
    assert DEFAULT_SCORER == DEFAULT_SCORER_NAME


@pytest.mark.parametrize("command", ["broker", "simulate", "train", "run", "backtest", "demo"])
def test_every_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "plantwatch" in out and "example" in out.lower()


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from plantwatch.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_then_backtest_on_simulated_plant(tmp_path: Path) -> None:
    history = tmp_path / "history.parquet"
    plant = tmp_path / "plant.csv"
    common = ["--assets", "3", "--period-ms", "1000", "--plant-seed", "5", "--quiet"]
    start = "2026-11-28T00:00:00Z"
    assert (
        main(
            [
                "simulate",
                *common,
                "--duration",
                "7200",
                "--faults",
                "0",
                "--seed",
                "1",
                "--out",
                str(history),
                "--start",
                start,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "simulate",
                *common,
                "--duration",
                "3600",
                "--faults",
                "2",
                "--seed",
                "2",
                "--control-assets",
                "1",
                "--out",
                str(plant),
                "--start",
                "2026-11-28T02:00:00Z",
            ]
        )
        == 0
    )
    model = tmp_path / "model"
    assert main(["train", "--input", str(history), "--model", str(model)]) == 0
    assert (model / "model.safetensors").is_file() and (model / "model.json").is_file()
    out = tmp_path / "scores.csv"
    report = tmp_path / "report.json"
    png = tmp_path / "plot.png"
    assert (
        main(
            [
                "backtest",
                "--input",
                str(plant),
                "--model",
                str(model),
                "--labels",
                "fault",
                "--out",
                str(out),
                "--report",
                str(report),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    table = pacsv.read_csv(out)
    assert {"timestamp", "asset", "score", "threshold", "anomaly", "label"} <= set(
        table.column_names
    )
    assert table.num_rows == 3 * 3600
    metrics = json.loads(report.read_text())
    assert metrics["alerts"]["events_labelled"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("clock", ["index", "none"])
def test_backtest_a_univariate_stream_timed_by_row_index_or_not_at_all(
    tmp_path: Path, clock: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Benchmarks of univariate streams number their rows (timestamp 1, 2, 3 ...: January
    # 1970 as seconds) or carry no time at all; both must backtest, alerts and all.
    rng = np.random.default_rng(3)
    n = 3000
    value = 10 + np.sin(np.arange(n) / 200) + rng.normal(0, 0.2, n)
    label = np.zeros(n, dtype=int)
    value[2000:2100] += 4.0
    label[2000:2100] = 1
    value[2500] += 6.0  # one spike: a sensor alert, spanned back over its excursion
    label[2500] = 1
    rows = [f"{v},{lab}" for v, lab in zip(value.tolist(), label.tolist(), strict=True)]
    if clock == "index":
        text = "timestamp,value,is_anomaly\n" + "".join(
            f"{i + 1},{r}\n" for i, r in enumerate(rows)
        )
    else:
        text = "value,is_anomaly\n" + "".join(f"{r}\n" for r in rows)
    src = tmp_path / "stream.csv"
    src.write_text(text)
    report = tmp_path / "report.json"
    args = ["backtest", "--input", str(src), "--train-fraction", "0.5", "--labels", "is_anomaly"]
    assert main([*args, "--out", str(tmp_path / "o.csv"), "--report", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["alerts"]["events_detected"] >= 1, metrics["alerts"]
    assert ("no time column" in capsys.readouterr().err) == (clock == "none")


def test_a_clock_read_as_a_signal_is_named_in_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two readings a minute, stamped to the minute: the clock repeats, so it does not rise
    # at every row and stays a signal; its name says what it may be.
    rng = np.random.default_rng(5)
    src = tmp_path / "x.csv"
    src.write_text(
        "epoch_s,value\n"
        + "".join(
            f"{1_700_000_000 + 60 * (i // 2)},{v:.4f}\n" for i, v in enumerate(rng.normal(size=600))
        )
    )
    args = ["backtest", "--input", str(src), "--train-fraction", "0.5"]
    assert main([*args, "--out", str(tmp_path / "o.csv")]) == 0
    err = capsys.readouterr().err
    assert "no time column" in err
    assert "'epoch_s' is read as a signal; if it is the time, name it: --time-column epoch_s" in err


def test_a_row_counter_is_left_out_of_the_signals_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(6)
    src = tmp_path / "x.csv"
    src.write_text(
        "sample,a,b\n"
        + "".join(f"{i + 1},{rng.normal():.4f},{rng.normal():.4f}\n" for i in range(600))
    )
    out = tmp_path / "o.csv"
    assert (
        main(["backtest", "--input", str(src), "--train-fraction", "0.5", "--out", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert (
        "not used as a signal, 'sample': rises at every row (a row counter or a clock); "
        "--time-column names a clock"
    ) in err


def test_backtest_writes_one_self_contained_html_page(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 3000
    value = 10 + np.sin(np.arange(n) / 200) + rng.normal(0, 0.2, n)
    label = np.zeros(n, dtype=int)
    value[2000:2100] += 4.0
    label[2000:2100] = 1
    src = tmp_path / "stream.csv"
    src.write_text(
        "timestamp,value,is_anomaly\n"
        + "".join(
            f"{i * 60},{v},{lab}\n" for i, (v, lab) in enumerate(zip(value, label, strict=True))
        )
    )
    page = tmp_path / "page" / "report.html"
    args = ["backtest", "--input", str(src), "--train-fraction", "0.5", "--labels", "is_anomaly"]
    assert main([*args, "--out", str(tmp_path / "o.csv"), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    # Self-contained: nothing fetched from anywhere, the figure inline as a PNG.
    assert "<script" not in text and "<link" not in text and 'src="http' not in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 1 and base64.b64decode(images[0])[:4] == b"\x89PNG"
    alerts = int(re.search(r"<h2>Alerts \((\d+)\)</h2>", text).group(1))  # type: ignore[union-attr]
    assert alerts >= 1 and text.count("windows over threshold") >= 1
    assert "event F1" in text and "stream.csv" in text


def test_errors_are_sentences_not_tracebacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "backtest",
                "--input",
                str(tmp_path / "missing.csv"),
                "--train-rows",
                "10",
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
    assert "does not exist" in str(exc.value)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", str(tmp_path / "nope")])
    assert "does not exist" in str(exc.value)


def test_parser_builds() -> None:
    assert build_parser().prog == "plantwatch"


@pytest.mark.parametrize("command", ["train", "backtest"])
def test_a_history_too_short_to_train_is_a_clear_error_not_a_traceback(
    tmp_path: Path, command: str
) -> None:
    src = tmp_path / "short.csv"
    src.write_text("a,b\n" + "".join(f"{i % 3},{i % 5}\n" for i in range(20)))
    args = (
        ["train", "--input", str(src), "--model", str(tmp_path / "m")]
        if command == "train"
        else ["backtest", "--input", str(src), "--train-rows", "15", "--out", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert str(exc.value).startswith("plantwatch: ")
    assert "window" in str(exc.value)

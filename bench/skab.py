"""SKAB benchmark: our scorers through the exact streaming code, under SKAB's protocol.

Protocol of the published SKAB leaderboard (waico/SKAB; ``../shared/datasets/README.md``):
each of the 34 labelled files (``valve1/*``, ``valve2/*``, ``other/*``; not the anomaly-free
one) is split in time order, the first 400 rows train and the rest test. Outlier metrics are
binary classification over all test rows of all files pooled: F1, FAR % (false alarm rate)
and MAR % (missed alarm rate). Changepoint metrics are SKAB's NAB scores (standard, low FP,
low FN) with a 60 s window to the right of each true changepoint (SKAB's ``changepoint``
column), predicted changepoints being both edges of each predicted run, as SKAB's notebooks
derive them.

Per file and scorer, a model is trained on the first 400 rows (labels unused) and the test
rows are replayed through :class:`plantwatch.monitor.Monitor` (windows, scorer, threshold, alert
policy: what ``plantwatch run`` does), after a warm-up with the last ``window - 1`` training
rows so the first test row has a full window. Labels only evaluate. ``--decision alert``
predicts "anomalous" for rows inside an open alert (what an operator is told);
``--decision window`` uses the threshold's verdict on each window alone.

    .venv/bin/python bench/skab.py                                  # PCA, defaults
    .venv/bin/python bench/skab.py --scorers pca,conv-ae --set threshold.q=1e-3
    .venv/bin/python bench/skab.py --hyper conv-ae:epochs=10 --files 4 --json out.json

Progress goes to stderr; the markdown table (ours beside the published rows) and the exact
command go to stdout (and ``--out``). ``torch`` runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.artifact import TrainedModel
from models.evaluation import Metric, auc_roc, evaluate
from models.registry import SCORERS
from models.training import windows_from_segments
from plantwatch.backtest import replay, train_in_file
from plantwatch.settings import Settings, load_settings
from stream.files import Table, read_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "skab"
TRAIN_ROWS = 400
NAB_WINDOW_MS = 60_000
FOLDERS = ("valve1", "valve2", "other")

# The published leaderboards (waico/SKAB README, "Proposed Leaderboard"), as copied into
# ../shared/datasets/README.md: name, F1, FAR %, MAR %, NAB standard, low FP, low FN.
PUBLISHED: tuple[tuple[str, float, float, float, float | None, float | None, float | None], ...] = (
    ("Perfect detector", 1.0, 0.0, 0.0, 100.0, 100.0, 100.0),
    ("Conv-AE", 0.78, 13.55, 28.02, 23.61, 21.54, 27.55),
    ("MSET", 0.78, 39.73, 14.13, 13.84, 10.22, 17.37),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92, 25.35, 14.51, 31.33),
    ("LSTM-AE", 0.74, 29.96, 25.92, 23.51, 20.11, 25.91),
    ("T-squared", 0.66, 19.21, 42.60, 19.54, 10.20, 24.31),
    ("LSTM-VAE", 0.56, 9.13, 55.03, None, None, None),
    ("Vanilla LSTM", 0.54, 12.54, 59.53, 11.31, -3.80, 17.25),
    ("MSCRED", 0.36, 49.94, 69.88, 32.42, 16.53, 40.28),
    ("Vanilla AE", 0.39, 2.59, 75.15, 11.41, 6.53, 13.91),
    ("Isolation forest", 0.29, 2.56, 82.89, 26.16, 19.50, 30.82),
    ("Null detector", 0.0, 0.0, 100.0, 0.0, 0.0, 0.0),
)

Progress = Callable[[str], None]


def skab_files(data_dir: Path, limit: int | None = None) -> list[Path]:
    """The 34 labelled SKAB files in a fixed order (folder, then file number)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"SKAB data not found at {data_dir}; pass --data DIR (the folder holding "
            "valve1/, valve2/ and other/ of waico/SKAB's data/)"
        )
    paths: list[Path] = []
    for folder in FOLDERS:
        found = sorted(
            (data_dir / folder).glob("*.csv"),
            key=lambda p: (int(p.stem) if p.stem.isdigit() else 10**9, p.name),
        )
        paths.extend(found)
    if not paths:
        raise FileNotFoundError(f"{data_dir} holds no valve1/, valve2/ or other/ CSV files")
    return paths[:limit] if limit is not None else paths


def file_label(path: Path) -> str:
    """``valve1/0`` for ``.../valve1/0.csv``: the asset name that keeps files apart."""
    return f"{path.parent.name}/{path.stem}"


@dataclass
class PreparedFile:
    """One file read and its model trained on the first rows; ready to replay."""

    name: str
    table: Table
    changepoints: npt.NDArray[np.int8]
    model: TrainedModel
    test_rows: npt.NDArray[np.int64]
    warm_rows: npt.NDArray[np.int64]
    train_s: float


@dataclass
class FileOutcome:
    """Per-row results on one file's test rows, and what it cost."""

    name: str
    labels: npt.NDArray[np.int8]
    predictions: npt.NDArray[np.int8]
    scores: npt.NDArray[np.float64]
    ts_ms: npt.NDArray[np.int64]
    changepoints: npt.NDArray[np.int8]
    train_s: float
    score_s: float
    windows_scored: int
    undecided_rows: int
    calibration_source: str
    calibration_windows: int


def prepare_file(
    path: Path,
    settings: Settings,
    *,
    scorer: str,
    window: int | None,
    hyper: Mapping[str, Any],
    seed: int = 0,
    train_rows: int = TRAIN_ROWS,
) -> PreparedFile:
    """Read a SKAB file and train ``scorer`` on its first ``train_rows`` rows."""
    table = read_table(path, label_column="anomaly")
    # Same file, same stable time sort: the changepoint column lines up row for row.
    cps = read_table(path, label_column="changepoint")
    if cps.labels is None or not np.array_equal(cps.ts_ms, table.ts_ms):
        raise ValueError(f"{path}: could not align the changepoint column with the rows")
    started = time.perf_counter()
    model, mask = train_in_file(
        table,
        settings,
        train_rows=train_rows,
        scorer=scorer,
        window=window,
        seed=seed,
        hyper=dict(hyper),
    )
    train_s = time.perf_counter() - started
    test = np.flatnonzero(~mask).astype(np.int64)
    train_end = int(mask.sum())
    warm = np.arange(max(0, train_end - model.window + 1), train_end, dtype=np.int64)
    return PreparedFile(
        name=file_label(path),
        table=table,
        changepoints=cps.labels,
        model=model,
        test_rows=test,
        warm_rows=warm,
        train_s=train_s,
    )


def _time_scoring(prep: PreparedFile) -> tuple[float, int]:
    """Seconds the scorer alone takes on the file's test windows (one batch), and how many."""
    model = prep.model
    first = int(prep.warm_rows[0]) if prep.warm_rows.size else int(prep.test_rows[0])
    end = int(prep.test_rows[-1]) + 1
    column_of = [prep.table.signals.index(s) for s in model.signals]
    rows = model.normalizer.transform(prep.table.values[first:end][:, column_of])
    if not np.isfinite(rows).all():
        return 0.0, 0
    windows = windows_from_segments(rows, [(0, rows.shape[0])], model.window)
    started = time.perf_counter()
    model.scorer.score_batch(windows)
    return time.perf_counter() - started, int(windows.shape[0])


def _undecided(
    scores: npt.NDArray[np.float64],
    thresholds: npt.NDArray[np.float64],
    prep: PreparedFile,
    settings: Settings,
) -> int:
    """Rows where no decision was possible: no window yet, no threshold yet, or in grace.

    The grace period counts the calibration scores, so a model calibrated on fewer scores
    than ``threshold.grace`` stays silent for the difference, whatever the threshold kind.
    """
    scored = np.isfinite(scores)
    position = np.cumsum(scored) - 1  # index of each row's window among the scored ones
    in_grace = scored & (prep.model.calibration_scores.size + position < settings.threshold.grace)
    return int((~scored | ~np.isfinite(thresholds) | in_grace).sum())


def replay_file(
    prep: PreparedFile, settings: Settings, decision: str, rows: str = "test"
) -> FileOutcome:
    """Replay the file through a fresh monitor; predictions per ``decision``.

    ``rows="test"`` replays (and reports) the test rows after a warm-up with the last
    training rows: the leaderboard's stated protocol. ``rows="all"`` replays and reports
    every row, the training rows included, as SKAB's notebooks evaluate (their binary
    metrics and changepoints cover whole files, so the in-sample training rows add easy
    true negatives and FAR comes out lower than on test rows alone).
    """
    if decision not in ("alert", "window"):
        raise ValueError(f"decision must be 'alert' or 'window', got {decision!r}")
    if rows not in ("test", "all"):
        raise ValueError(f"rows must be 'test' or 'all', got {rows!r}")
    if rows == "test":
        chosen, warm = prep.test_rows, prep.warm_rows
    else:
        chosen, warm = np.arange(len(prep.table), dtype=np.int64), None
    result = replay(
        prep.table,
        prep.model,
        settings,
        rows=chosen,
        warmup_rows=warm,
        default_asset=prep.name,
    )
    if result.labels is None:
        raise ValueError(f"{prep.name}: the file has no anomaly labels")
    predictions = result.anomaly if decision == "alert" else result.exceeds
    score_s, n_windows = _time_scoring(prep)
    calibration = prep.model.metadata.get("calibration", {})
    return FileOutcome(
        name=prep.name,
        labels=result.labels.astype(np.int8),
        predictions=predictions.astype(np.int8),
        scores=result.scores,
        ts_ms=result.ts_ms,
        changepoints=prep.changepoints[chosen],
        train_s=prep.train_s,
        score_s=score_s,
        windows_scored=n_windows,
        undecided_rows=_undecided(result.scores, result.thresholds, prep, settings),
        calibration_source=str(calibration.get("source", "")),
        calibration_windows=int(prep.model.calibration_scores.size),
    )


def aggregate(outcomes: Sequence[FileOutcome]) -> dict[str, Metric]:
    """Pooled metrics over all files' test rows (events and NAB never span two files)."""
    if not outcomes:
        raise ValueError("no file outcomes to aggregate")
    labels = np.concatenate([o.labels for o in outcomes])
    predictions = np.concatenate([o.predictions for o in outcomes])
    scores = np.concatenate([o.scores for o in outcomes])
    ts_ms = np.concatenate([o.ts_ms for o in outcomes])
    cps = np.concatenate([o.changepoints for o in outcomes])
    assets = np.concatenate([np.full(o.labels.size, o.name, dtype=object) for o in outcomes])
    report = evaluate(
        labels,
        predictions,
        ts_ms=ts_ms,
        scores=scores,
        assets=assets,
        nab_window_ms=NAB_WINDOW_MS,
        nab_changepoints=cps,
        nab_edges="both",
    )
    per_file_auc = [auc_roc(o.labels, o.scores) for o in outcomes]
    known = [a for a in per_file_auc if a is not None]
    windows = sum(o.windows_scored for o in outcomes)
    report["files"] = len(outcomes)
    report["auc_roc_file_mean"] = float(np.mean(known)) if known else None
    report["train_s_per_file"] = float(np.mean([o.train_s for o in outcomes]))
    report["score_us_per_window"] = (
        sum(o.score_s for o in outcomes) / windows * 1e6 if windows else None
    )
    report["undecided_pct"] = sum(o.undecided_rows for o in outcomes) / labels.size * 100
    report["calibrated_on_training_files"] = sum(
        o.calibration_source == "training" for o in outcomes
    )
    report["calibration_windows_mean"] = float(np.mean([o.calibration_windows for o in outcomes]))
    return report


def run_scorer(
    paths: Sequence[Path],
    scorer: str,
    settings: Settings,
    *,
    decision: str = "alert",
    rows: str = "test",
    window: int | None = None,
    hyper: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[dict[str, Metric], list[FileOutcome]]:
    """Train, replay and evaluate ``scorer`` on every file; pooled report and per-file rows."""
    outcomes: list[FileOutcome] = []
    for i, path in enumerate(paths, 1):
        if progress is not None:
            progress(f"{scorer}: file {i}/{len(paths)} {file_label(path)}")
        prep = prepare_file(
            path, settings, scorer=scorer, window=window, hyper=hyper or {}, seed=seed
        )
        outcomes.append(replay_file(prep, settings, decision, rows))
    return aggregate(outcomes), outcomes


# ---------------------------------------------------------------------------- command line


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_hyper(items: Sequence[str], scorers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["epochs=10", "pca:tail=8"]`` → per-scorer keyword hyper-parameters.

    ``KEY=VALUE`` applies to every scorer in the run, ``SCORER:KEY=VALUE`` to one.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in scorers}
    for item in items:
        target, colon, rest = item.partition(":")
        if not colon:
            target, rest = "", item
        key, sep, raw = rest.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--hyper {item!r}: write KEY=VALUE or SCORER:KEY=VALUE")
        if target and target not in out:
            raise ValueError(f"--hyper {item!r}: {target!r} is not among --scorers {scorers}")
        for name in [target] if target else scorers:
            out[name][key.strip()] = _parse_value(raw.strip())
    return out


def _fmt(value: Metric, digits: int) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def markdown_table(results: Sequence[tuple[str, Mapping[str, Metric]]]) -> str:
    """Our rows, then the published leaderboard rows, in the leaderboard's format."""
    header = (
        "| Algorithm | F1 | FAR % | MAR % | event F1 | NAB standard | NAB low FP | NAB low FN "
        "| AUC | train s/file | score µs/window |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for name, r in results:
        lines.append(
            f"| **{name}** | {_fmt(r['f1'], 2)} | {_fmt(r['far_pct'], 2)} "
            f"| {_fmt(r['mar_pct'], 2)} | {_fmt(r['event_f1'], 2)} "
            f"| {_fmt(r['nab_standard'], 2)} | {_fmt(r['nab_low_fp'], 2)} "
            f"| {_fmt(r['nab_low_fn'], 2)} | {_fmt(r['auc_roc'], 3)} "
            f"| {_fmt(r['train_s_per_file'], 3)} | {_fmt(r['score_us_per_window'], 1)} |"
        )
    for name, f1, far, mar, nab_s, nab_fp, nab_fn in PUBLISHED:
        lines.append(
            f"| {name} (published) | {f1:.2f} | {far:.2f} | {mar:.2f} | — "
            f"| {_fmt(nab_s, 2)} | {_fmt(nab_fp, 2)} | {_fmt(nab_fn, 2)} | — | — | — |"
        )
    return header + "\n".join(lines) + "\n"


def _file_row(outcome: FileOutcome) -> dict[str, Any]:
    """One file's own numbers, to see which files drive the pooled ones."""
    own = evaluate(outcome.labels, outcome.predictions)
    return {
        "file": outcome.name,
        "auc_roc": auc_roc(outcome.labels, outcome.scores),
        "f1": own["f1"],
        "far_pct": own["far_pct"],
        "mar_pct": own["mar_pct"],
        "calibration": outcome.calibration_source,
        "undecided_rows": outcome.undecided_rows,
    }


def _row_name(scorer: str, window: int | None, hyper: Mapping[str, Any]) -> str:
    bits = [f"W={window}" if window is not None else ""]
    bits += [f"{k}={v}" for k, v in sorted(hyper.items())]
    inner = ", ".join(b for b in bits if b)
    return f"{scorer} ({inner})" if inner else scorer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="SKAB benchmark of plantwatch's scorers through the streaming code."
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SKAB data/ folder")
    parser.add_argument(
        "--scorers", default="pca", help=f"comma-separated, from {', '.join(sorted(SCORERS))}"
    )
    parser.add_argument(
        "--decision",
        choices=("alert", "window"),
        default="alert",
        help="alert: rows inside an open alert; window: the threshold's verdict per window",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="settings override, e.g. threshold.q=1e-3 or alert.k=2 (repeatable)",
    )
    parser.add_argument(
        "--hyper",
        action="append",
        default=[],
        metavar="[SCORER:]KEY=VALUE",
        help="scorer hyper-parameter, e.g. epochs=10 or conv-ae:score_steps=4 (repeatable)",
    )
    parser.add_argument(
        "--rows",
        choices=("test", "all"),
        default="test",
        help="test: evaluate the test rows (the stated protocol); all: every row, training "
        "rows included, as SKAB's notebooks compute their published numbers",
    )
    parser.add_argument("--window", type=int, default=None, help="window length (readings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=int, default=None, help="only the first N files")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--json", type=Path, default=None, help="write every metric here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    scorers = [s.strip() for s in args.scorers.split(",") if s.strip()]
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        print(f"unknown scorers {unknown}; choose from {sorted(SCORERS)}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(env={}, sets=args.overrides)
        hyper = parse_hyper(args.hyper, scorers)
        paths = skab_files(args.data, args.files)
    except (ValueError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    results: list[tuple[str, dict[str, Metric]]] = []
    per_file: dict[str, list[dict[str, Any]]] = {}
    for scorer in scorers:
        params = dict(hyper[scorer])
        window = args.window if "window" not in params else int(params.pop("window"))
        t0 = time.perf_counter()
        report, outcomes = run_scorer(
            paths,
            scorer,
            settings,
            decision=args.decision,
            rows=args.rows,
            window=window,
            hyper=params,
            seed=args.seed,
            progress=progress,
        )
        report["wall_s"] = time.perf_counter() - t0
        undecided = report["undecided_pct"]
        if isinstance(undecided, float) and undecided > 5.0:
            progress(
                f"{scorer}: no decision was possible on {undecided:.0f} % of the rows: the "
                f"model has ~{report['calibration_windows_mean']:.0f} calibration scores, and "
                "the threshold waits for threshold.grace scores (and SPOT/DSPOT for enough to "
                "fit a tail). Try --set threshold.grace=0, or threshold.level=0.9 for SPOT."
            )
        progress(
            f"{scorer}: F1 {_fmt(report['f1'], 3)} FAR {_fmt(report['far_pct'], 2)} % "
            f"MAR {_fmt(report['mar_pct'], 2)} % in {report['wall_s']:.0f} s"
        )
        results.append((_row_name(scorer, window, params), report))
        per_file[scorer] = [_file_row(o) for o in outcomes]
    total_s = time.perf_counter() - started
    command = shlex.join([".venv/bin/python", "bench/skab.py", *sys.argv[1:]])
    if argv is not None:
        command = shlex.join([".venv/bin/python", "bench/skab.py", *argv])
    threshold = settings.threshold
    alert = settings.alert
    text = (
        f"SKAB, {len(paths)} files, first {TRAIN_ROWS} rows train, evaluated on {args.rows} rows, "
        f"decision={args.decision}, "
        f"threshold {threshold.kind} q={threshold.q:g} level={threshold.level:g} "
        f"quantile={threshold.quantile:g} margin={threshold.margin:g} depth={threshold.depth} "
        f"grace={threshold.grace}, alert k={alert.k} n={alert.n} m={alert.m}; "
        f"{total_s:.0f} s in all\n\n" + markdown_table(results) + f"\nCommand: `{command}`\n"
    )
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if args.json is not None:
        payload = {
            "command": command,
            "settings": {
                "threshold": {k: getattr(threshold, k) for k in threshold.__struct_fields__},
                "alert": {k: getattr(alert, k) for k in alert.__struct_fields__},
                "decision": args.decision,
                "rows": args.rows,
            },
            "total_s": total_s,
            "results": [{"name": name, **report} for name, report in results],
            "per_file": per_file,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

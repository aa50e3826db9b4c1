"""``plantwatch train``, ``plantwatch run`` and ``plantwatch backtest``: arguments and handlers.

Handlers read files and flags, call the pure code (training, the monitor, evaluation),
print what a person needs, and return an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.cadence import duration_text
from common.progress import Progress
from models.quality.registry import DEFAULT_KIND as DEFAULT_QUALITY_KIND
from models.quality.registry import KINDS as QUALITY_KINDS
from models.quality.registry import LAGGED_KINDS as QUALITY_LAGGED
from plantwatch.settings import Settings, with_overrides
from stream.files import (
    CLOCK_WORDS,
    RISING,
    ROW_ORDER,
    TIME_COLUMNS,
    FileFormatError,
    Table,
    read_table,
)

log = logging.getLogger("plantwatch")

TRAIN_EPILOG = """\
examples:
  plantwatch train --input history.parquet --model models/pump
  plantwatch train --input skab/anomaly-free/anomaly-free.csv --scorer conv-ae --model models/skab
  plantwatch train --input plant.csv --labels fault --model models/plant  # fault=1 rows left out

  Also left out, and named in a note: stretches where a signal flat-lined far longer than it
  usually holds a value (a sensor offline), fill values such as 0.0 or -9999 far outside the
  signal's band, and rows where a missing value would be carried past window.stale_limit.
  --set sensor_health.screen_history=false keeps the first two.

quality (soft sensor): predict a lab-measured quality column from the process readings
  plantwatch train --task quality --target y2 --inputs u1,u2,u3,u4,u5 \\
      --input SRU_data.txt --train-rows 8000 --predictor ridge --lags 0,2,4,6,8 --model models/so2
  plantwatch train --task quality --target y --input debutanizer_data.txt --train-rows 1600 \\
      --predictor conv --history 32 --model models/c4
  The first --train-rows rows are used (default all); their last --validation-fraction,
  in time order, is held out: it picks the penalty/components/epoch (early stopping),
  calibrates the prediction interval (split-conformal) and gives the RMSE, MAE and R² kept
  in model.json. The target is never an input; --inputs names them (default: every other
  numeric column, so leave out other quality columns such as SRU's y1 explicitly).
  Predictors: pls (default), ridge and lagged-mlp (lagged readings: --lags), mlp (current
  readings), conv and lstm (the last --history rows). A file without a time column gets one row per
  --row-interval-ms (one minute for quality data, one second otherwise).

The artifact is a directory: model.safetensors (weights, never pickle) and model.json
(signals, window, normalisation, calibration scores for the threshold, training metrics,
library versions, and a content hash that is the model version).
"""

RUN_EPILOG = """\
examples:
  plantwatch run --model models/pump
  PLANTWATCH_METRICS__PORT=9200 plantwatch run --model models/pump --config plant.toml
  plantwatch run --model models/sru --quality-model models/so2 --set quality.usl=0.3

--quality-model DIR (repeatable; or quality.models in the config) serves a quality model
(trained with --task quality) beside the anomaly model on the same readings: one prediction
per asset every quality.every_ms of reading time to topics.quality, a quality alert when a
prediction leaves the spec limits (quality.lsl/usl, or quality.limits per target), and lab
results from topics.lab joined to their predictions (rolling RMSE, bias, coverage; the bias
correction and the interval learn from them).

Stops cleanly on Ctrl-C or SIGTERM: the current batch is finished, alerts and state are
flushed, offsets committed. Metrics: http://127.0.0.1:9108/metrics by default.
"""

BACKTEST_EPILOG = """\
examples:
  plantwatch backtest --input valve1/0.csv --train-rows 400 --labels anomaly --out scores.csv \\
      --plot scores.png --report report.json
  plantwatch backtest --input plant.parquet --model models/pump --labels fault --out scores.csv

Columns of OUT.csv: timestamp, [asset,] score, threshold, exceeds (the threshold's verdict on
the window ending at the row), anomaly (1 while an alert is open: what operators are told),
severity, top_signal, and label when --labels is given. Labels are used only to evaluate.

quality model (trained with --task quality):
  plantwatch backtest --model models/so2 --input SRU_data.txt --out so2.csv --usl 0.3
  plantwatch backtest --model models/c4 --input debutanizer_data.txt --out c4.csv \\
      --lab-every 10 --lab-delay 5      # a lab value every 10 rows, known 5 rows later
  Columns: timestamp, [asset,] predicted, lower, upper (the interval holding
  quality.coverage of true values, 0.9 by default), in_spec (1 when the prediction lies
  within --lsl/--usl or quality.lsl/usl, 0 outside, empty without limits), and target
  when the file has the target column. The target is read only to evaluate, unless
  --lab-every simulates lab delivery: then each sampled value reaches the model
  --lab-delay rows after its sample, corrects its bias (quality.bias_rate) and renews
  the interval's residuals.
"""


def training_progress(bar: Progress) -> Callable[[dict[str, Any]], None]:
    """Training's progress events (one per epoch of a deep model) as lines on ``bar``."""

    def show(event: dict[str, Any]) -> None:
        if "epoch" in event:
            val = event.get("val_loss")
            val_text = f"  val_loss {val:.5f}" if isinstance(val, float) else ""
            loss = float(event.get("loss", math.nan))
            member = (
                f"member {int(event['member'])}/{int(event['members'])}  "
                if "member" in event
                else ""
            )
            bar.note(f"{member}epoch {int(event['epoch']):>3}  loss {loss:.5f}{val_text}")

    return show


#: Rows of a file without a time column: one second apart, one minute for quality data
#: (lab-measured quality variables are sampled in minutes, the soft-sensor sets so).
ROW_INTERVAL_MS = 1000
QUALITY_ROW_INTERVAL_MS = 60_000


def _read(
    args: argparse.Namespace,
    *,
    signals: tuple[str, ...] | None = None,
    row_interval_ms: int = ROW_INTERVAL_MS,
) -> Table:
    interval = getattr(args, "row_interval_ms", None) or row_interval_ms
    try:
        table = read_table(
            args.input,
            time_column=args.time_column,
            label_column=args.labels,
            signals=signals,
            row_interval_ms=interval,
        )
    except FileFormatError as exc:
        raise SystemExit(f"plantwatch: {exc}") from exc
    for why in dict.fromkeys(w for _, w in table.ignored):
        names = [name for name, w in table.ignored if w == why]
        print(
            f"note: not used as {'a signal' if len(names) == 1 else 'signals'}, "
            f"{', '.join(map(repr, names))}: {why}"
            + ("; --time-column names a clock" if why == RISING else ""),
            file=sys.stderr,
        )
    if table.time_column == ROW_ORDER:
        print(
            f"note: {args.input} has no time column ({', '.join(TIME_COLUMNS)}); "
            f"its rows are taken in file order, {interval / 1000:g} s apart "
            "(--time-column NAME names one, --row-interval-ms sets the spacing)",
            file=sys.stderr,
        )
        clocks = [s for s in table.signals if any(w in s.lower() for w in CLOCK_WORDS)]
        if clocks:
            # A clock read as a signal only ever rises: every window is new to the model.
            print(
                f"note: {', '.join(map(repr, clocks))} {'is' if len(clocks) == 1 else 'are'} "
                "read as a signal; if it is the time, name it: --time-column "
                f"{clocks[0]}",
                file=sys.stderr,
            )
    return table


def _hyper(args: argparse.Namespace) -> dict[str, Any]:
    hyper: dict[str, Any] = {}
    if getattr(args, "epochs", None) is not None:
        hyper["epochs"] = args.epochs
    return hyper


def _add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, metavar="FILE", help="CSV or Parquet file")
    p.add_argument(
        "--time-column",
        metavar="NAME",
        help=f"time column (default: the first of {', '.join(TIME_COLUMNS)}; a file with "
        "none is taken in row order, one second apart)",
    )
    p.add_argument(
        "--labels",
        metavar="COLUMN",
        help="label column (0/1); never used as a signal",
    )
    p.add_argument(
        "--row-interval-ms",
        type=int,
        metavar="MS",
        help="spacing of the rows of a file with no time column (default 1000; 60000 for "
        "quality models)",
    )


#: The registry's names and default, repeated here so that building the parser does not
#: import torch (a test keeps them equal to ``models.registry``).
SCORER_NAMES = ("conv-ae", "lstm-ae", "lstm-forecaster", "pca", "river-hst")
DEFAULT_SCORER_NAME = "pca"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scorer",
        default=None,
        choices=SCORER_NAMES,
        help=f"model to train (default {DEFAULT_SCORER_NAME})",
    )
    p.add_argument("--window", type=int, default=None, help="readings per window (default 32)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of a deep model")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


# -- train -------------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = TRAIN_EPILOG
    _add_table_args(p)
    p.add_argument("--model", required=True, metavar="DIR", help="where to write the artifact")
    _add_model_args(p)
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="last part of each series held out for early stopping and calibration",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact")
    q = p.add_argument_group("quality models (--task quality)")
    q.add_argument(
        "--task",
        choices=("anomaly", "quality"),
        default="anomaly",
        help="anomaly: a scorer of normal history (default); quality: a soft sensor of --target",
    )
    q.add_argument("--target", metavar="COLUMN", help="the quality column to predict")
    q.add_argument(
        "--inputs",
        metavar="COL,COL",
        help="process columns to predict from (default: every numeric column but the target)",
    )
    q.add_argument(
        "--train-rows",
        type=int,
        metavar="N",
        help="fit on the first N rows only (default all); later rows stay unseen",
    )
    q.add_argument(
        "--validation-rows",
        type=int,
        metavar="N",
        help="hold out the last N of the training rows (over --validation-fraction)",
    )
    q.add_argument(
        "--predictor",
        choices=sorted(QUALITY_KINDS),
        default=None,
        help="; ".join(f"{k}: {v}" for k, v in QUALITY_KINDS.items())
        + f" (default {DEFAULT_QUALITY_KIND})",
    )
    q.add_argument(
        "--lags",
        metavar="L,L",
        help="pls/ridge/lagged-mlp: rows back each reading is also read at, e.g. 0,2,4,8 "
        "(default 0)",
    )
    q.add_argument(
        "--history",
        type=int,
        metavar="ROWS",
        help="conv/lstm/mlp: rows of process history one prediction reads (default 32; mlp 1)",
    )


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(
            f"plantwatch: {flag} takes integers separated by commas, got {text!r}"
        ) from None


def _summary(args: argparse.Namespace, table: Table) -> dict[str, Any]:
    return {
        "source": str(args.input),
        "rows": len(table),
        "assets": sorted({str(a) for a in table.assets}) if table.assets is not None else [],
        "start_ms": int(table.ts_ms.min()),
        "end_ms": int(table.ts_ms.max()),
    }


def train_quality(args: argparse.Namespace, settings: Settings) -> int:
    """``train --task quality``: fit a soft sensor of ``--target``, write its artifact."""
    from plantwatch.quality import train_quality_table

    if not args.target:
        raise SystemExit("plantwatch: --task quality needs --target COLUMN (the quality column)")
    table = _read(args, row_interval_ms=QUALITY_ROW_INTERVAL_MS)
    inputs = [c.strip() for c in args.inputs.split(",") if c.strip()] if args.inputs else None
    kind = args.predictor or DEFAULT_QUALITY_KIND
    linear = kind in QUALITY_LAGGED
    if args.lags and not linear:
        raise SystemExit(
            f"plantwatch: --lags is for {', '.join(QUALITY_LAGGED)}; {kind} reads --history rows"
        )
    if args.history is not None and linear:
        raise SystemExit(f"plantwatch: --history is for the neural predictors; {kind} takes --lags")
    rows = len(table) if args.train_rows is None else min(args.train_rows, len(table))
    print(
        f"training a {kind} quality model of {args.target!r} on the first {rows:,} of "
        f"{len(table):,} rows of {args.input}; the last "
        + (
            f"{args.validation_rows:,} rows"
            if args.validation_rows
            else f"{args.validation_fraction:.0%}"
        )
        + " held out",
        file=sys.stderr,
    )
    bar = Progress("train")
    try:
        model = train_quality_table(
            table,
            settings,
            target=args.target,
            inputs=inputs,
            kind=kind,
            train_rows=args.train_rows,
            validation_fraction=args.validation_fraction,
            validation_rows=args.validation_rows,
            lags=_int_list(args.lags, "--lags"),
            history=args.history,
            hyper=_hyper(args),
            seed=args.seed,
            progress=training_progress(bar),
            data_summary=_summary(args, table),
        )
    except ValueError as exc:
        raise SystemExit(f"plantwatch: {exc}") from exc
    finally:
        bar.close()
    path = model.save(args.model, overwrite=args.overwrite)
    hold = model.metadata["holdout"]
    print(
        f"wrote {path}: quality-{kind} of {model.target} version {model.version}, inputs "
        f"{', '.join(model.signals)}; hold-out ({hold['rows']} rows): RMSE {_fmt(hold['rmse'])}"
        f"  MAE {_fmt(hold['mae'])}  R² {_fmt(hold['r2'])}"
    )
    return 0


def train(args: argparse.Namespace, settings: Settings) -> int:
    from plantwatch.backtest import train_table

    if args.task == "quality":
        return train_quality(args, settings)
    quality_flags = ("target", "inputs", "train_rows", "validation_rows", "predictor", "lags")
    quality_only = [f for f in (*quality_flags, "history") if getattr(args, f) is not None]
    if quality_only:
        flags = ", ".join("--" + f.replace("_", "-") for f in quality_only)
        raise SystemExit(f"plantwatch: {flags} belong to quality models; add --task quality")
    table = _read(args)
    exclude = None if table.labels is None else table.labels.astype(bool)
    kwargs: dict[str, Any] = dict(_hyper(args))
    if args.scorer:
        kwargs["scorer"] = args.scorer
    if args.window:
        kwargs["window"] = args.window
    print(
        f"training on {len(table):,} rows of {args.input}: {len(table.signals)} signals "
        f"({', '.join(table.signals)})"
        + (f", {int(exclude.sum()):,} labelled rows excluded" if exclude is not None else ""),
        file=sys.stderr,
    )

    try:
        model = train_table(
            table,
            settings,
            exclude=exclude,
            validation_fraction=args.validation_fraction,
            seed=args.seed,
            progress=training_progress(Progress("train")),
            data_summary=_summary(args, table),
            **kwargs,
        )
    except ValueError as exc:  # the history cannot train a model: what was found, and why
        raise SystemExit(f"plantwatch: {exc}") from exc
    _note_screened(model)
    path = model.save(args.model, overwrite=args.overwrite)
    cal = np.asarray(model.calibration_scores, dtype=np.float64)
    print(
        f"wrote {path}: {model.name} version {model.version}, window {model.window}, "
        f"{cal.size} calibration scores (median {np.median(cal):.4g}, "
        f"99th percentile {np.quantile(cal, 0.99):.4g})"
    )
    return 0


# -- run ---------------------------------------------------------------------------------


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = RUN_EPILOG
    p.add_argument("--model", metavar="DIR", help="model artifact to serve (or model.path)")
    p.add_argument(
        "--quality-model",
        metavar="QDIR",
        action="append",
        help="quality model to serve beside it (repeatable; replaces quality.models)",
    )
    p.add_argument("--group-id", help="consumer group (default plantwatch)")
    p.add_argument("--metrics-host", help="bind address of /metrics (default 127.0.0.1)")
    p.add_argument("--metrics-port", type=int, help="port of /metrics (default 9108)")


def _with_run_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    """The run flags as settings, validated by the same loader as the file."""
    changes: dict[str, dict[str, Any]] = {}
    if args.group_id:
        changes["kafka"] = {"group_id": args.group_id}
    if args.metrics_host:
        changes.setdefault("metrics", {})["host"] = args.metrics_host
    if args.metrics_port is not None:
        changes.setdefault("metrics", {})["port"] = args.metrics_port
    if args.model:
        changes["model"] = {"path": args.model}
    if getattr(args, "quality_model", None):
        changes["quality"] = {"models": list(args.quality_model)}
    return with_overrides(settings, changes) if changes else settings


def load_model(path: str | None) -> Any:
    from models.artifact import TrainedModel

    if not path:
        raise SystemExit(
            "plantwatch: no model given; train one with `plantwatch train` and pass "
            "--model DIR (or set model.path / PLANTWATCH_MODEL__PATH)"
        )
    if not Path(path).is_dir():
        raise SystemExit(f"plantwatch: model directory {path} does not exist")
    return TrainedModel.load(path)


def load_quality_model(path: str) -> Any:
    from models.artifact import ArtifactError, model_schema
    from models.quality.artifact import SCHEMA as QUALITY_SCHEMA
    from models.quality.artifact import QualityModel

    if not Path(path).is_dir():
        raise SystemExit(f"plantwatch: quality model directory {path} does not exist")
    if model_schema(path) != QUALITY_SCHEMA:
        raise SystemExit(
            f"plantwatch: {path} is not a quality model; train one with `plantwatch train "
            "--task quality --target COLUMN` (an anomaly model goes to --model)"
        )
    try:
        return QualityModel.load(path)
    except ArtifactError as exc:
        raise SystemExit(f"plantwatch: {exc}") from exc


def run(args: argparse.Namespace, settings: Settings) -> int:
    import torch
    from prometheus_client import REGISTRY

    from alerts.metrics import Metrics, start_http_server
    from plantwatch.runloop import RunLoop

    settings = _with_run_overrides(args, settings)
    if settings.model.torch_threads:
        torch.set_num_threads(settings.model.torch_threads)
    model = load_model(settings.model.path)
    quality_models = [load_quality_model(path) for path in settings.quality.models]
    # The default registry also carries the process and GC collectors an SRE expects.
    metrics = Metrics.create(REGISTRY, max_asset_series=settings.metrics.max_asset_series)
    server = None
    if settings.metrics.enabled:
        server = start_http_server(metrics, settings.metrics.host, settings.metrics.port)
    loop = RunLoop(settings, model, metrics, quality_models=quality_models)
    loop.install_signal_handlers()
    try:
        loop.run()
    finally:
        if server is not None:
            server.close()
    return 0


# -- backtest ----------------------------------------------------------------------------


def add_backtest_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = BACKTEST_EPILOG
    _add_table_args(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="a trained model artifact")
    source.add_argument(
        "--train-fraction",
        type=float,
        metavar="F",
        help="train on the first F of each asset's rows, score the rest",
    )
    source.add_argument(
        "--train-rows",
        type=int,
        metavar="N",
        help="train on the first N rows of each asset (SKAB's protocol: 400), score the rest",
    )
    p.add_argument("--out", required=True, metavar="OUT.csv", help="per-row results")
    p.add_argument("--plot", metavar="OUT.png", help="signals, score, threshold, alerts, labels")
    p.add_argument(
        "--html",
        metavar="OUT.html",
        help="one self-contained page: summary, metrics, every alert with why it opened and "
        f"ended, and a figure per asset (the first {MAX_HTML_FIGURES})",
    )
    p.add_argument("--report", metavar="OUT.json", help="metrics (needs --labels)")
    p.add_argument("--batch-rows", type=int, default=1000, help="rows per replayed batch")
    _add_model_args(p)
    q = p.add_argument_group("quality models")
    q.add_argument("--lsl", type=float, help="lower spec limit (over quality.lsl)")
    q.add_argument("--usl", type=float, help="upper spec limit (over quality.usl)")
    q.add_argument(
        "--lab-every",
        type=int,
        metavar="ROWS",
        help="simulate lab delivery: the target of every ROWS-th row is measured ...",
    )
    q.add_argument(
        "--lab-delay",
        type=int,
        default=0,
        metavar="ROWS",
        help="... and known ROWS rows after its sample (default 0)",
    )


def backtest_quality_model(args: argparse.Namespace, settings: Settings) -> int:
    """``backtest`` on a quality model: per-row predictions, interval and spec verdict."""
    from models.quality.artifact import QualityModel
    from plantwatch.quality import backtest_quality, write_quality_results

    if args.html:
        raise SystemExit(
            "plantwatch: --html pages an anomaly model's alerts; for a quality model --plot "
            "draws the prediction, its interval, the spec limits and the target"
        )
    model = QualityModel.load(args.model)
    table = _read(args, row_interval_ms=QUALITY_ROW_INTERVAL_MS)
    try:
        result = backtest_quality(
            table,
            model,
            settings,
            lsl=args.lsl,
            usl=args.usl,
            lab_every=args.lab_every,
            lab_delay=args.lab_delay,
        )
    except ValueError as exc:
        raise SystemExit(f"plantwatch: {exc}") from exc
    write_quality_results(result, args.out)
    summary: dict[str, Any] = {
        "input": str(args.input),
        "model": {"name": f"quality-{model.kind}", "version": model.version},
        "target": model.target,
        "rows": len(table),
        "lab_results": result.lab_rows,
    }
    if result.target is not None:
        trained = int(model.metadata.get("split", {}).get("train_rows", 0))
        summary["all_rows"] = result.metrics()
        if 0 < trained < len(table):
            summary["after_training_rows"] = result.metrics(np.arange(trained, len(table)))
        shown = summary.get("after_training_rows", summary["all_rows"])
        where = (
            f"rows {trained:,}+ (after the model's training rows)"
            if "after_training_rows" in summary
            else "all rows"
        )
        print(
            f"{model.target} on {where}: RMSE {_fmt(shown.get('rmse'))}  "
            f"MAE {_fmt(shown.get('mae'))}  R² {_fmt(shown.get('r2'))}  interval coverage "
            f"{_fmt(shown.get('coverage'))} (target {result.coverage:g})"
        )
    out_of_spec = int((result.in_spec == 0).sum())
    if (result.in_spec >= 0).any():
        summary["predicted_out_of_spec_rows"] = out_of_spec
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    if args.plot:
        from models.quality.plot import plot_quality

        plot_quality(
            args.plot,
            ts_ms=result.ts_ms,
            predicted=result.predicted,
            lower=result.lower,
            upper=result.upper,
            target=result.target,
            lsl=args.lsl if args.lsl is not None else settings.quality.lsl,
            usl=args.usl if args.usl is not None else settings.quality.usl,
            title=f"{Path(args.input).name}: {model.target} (quality-{model.kind})",
        )
    print(
        f"wrote {args.out}: {len(table):,} rows, {out_of_spec:,} predicted out of spec"
        + (f"; plot {args.plot}" if args.plot else "")
        + (f"; report {args.report}" if args.report else "")
    )
    return 0


#: The HTML page of a backtest draws this many assets' figures at most.
MAX_HTML_FIGURES = 12


def backtest(args: argparse.Namespace, settings: Settings) -> int:
    from models.artifact import model_schema
    from models.evaluation import auc_roc, evaluate
    from models.quality.artifact import SCHEMA as QUALITY_SCHEMA
    from plantwatch.backtest import backtest_table

    if args.model and model_schema(args.model) == QUALITY_SCHEMA:
        return backtest_quality_model(args, settings)
    if args.lab_every is not None:
        raise SystemExit("plantwatch: --lab-every simulates lab results for a quality model")
    model = load_model(args.model) if args.model else None
    table = _read(args)
    if args.report and table.labels is None:
        raise SystemExit("plantwatch: --report needs --labels COLUMN to evaluate against")
    try:
        result = backtest_table(
            table,
            settings,
            model=model,
            train_rows=args.train_rows,
            train_fraction=args.train_fraction,
            scorer=args.scorer,
            window=args.window,
            seed=args.seed,
            batch_rows=args.batch_rows,
            hyper=_hyper(args),
            progress=Progress("backtest", unit="rows"),
        )
    except ValueError as exc:  # the training part cannot train, or the file fits no model
        raise SystemExit(f"plantwatch: {exc}") from exc
    write_results(result, args.out)
    if model is None and result.model is not None:
        _note_screened(result.model)
    _warn_undecided(result, settings)
    summary: dict[str, Any] = {
        "input": str(args.input),
        "model": {"name": result.model.name, "version": result.model.version}
        if result.model
        else None,
        "rows": len(result.rows),
        "train_rows": result.train_rows,
        "alert_events": len(result.events),
    }
    if result.labels is not None:
        scored = ~np.isnan(result.scores)
        summary["alerts"] = evaluate(
            result.labels, result.anomaly, ts_ms=result.ts_ms, assets=result.assets
        )
        summary["windows"] = evaluate(
            result.labels, result.exceeds, ts_ms=result.ts_ms, assets=result.assets
        )
        summary["auc_roc"] = auc_roc(result.labels[scored], result.scores[scored])
        a = summary["alerts"]
        print(
            f"alerts: F1 {_fmt(a.get('f1'))}  FAR {_fmt(a.get('far_pct'))}%  "
            f"MAR {_fmt(a.get('mar_pct'))}%  event F1 {_fmt(a.get('event_f1'))}  "
            f"AUC {_fmt(summary['auc_roc'])}"
        )
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    if args.plot:
        plot_result(result, table, args.plot, title=f"{Path(args.input).name}")
    if args.html:
        html_report(result, table, args.html, summary=summary, title=Path(args.input).name)
    print(
        f"wrote {args.out}: {len(result.rows):,} rows, {len(result.events)} alert events"
        + (f"; plot {args.plot}" if args.plot else "")
        + (f"; page {args.html}" if args.html else "")
        + (f"; report {args.report}" if args.report else "")
    )
    return 0


def _note_screened(model: Any) -> None:
    """Say what of the history training left out (flat-lined stretches, fill values, rows
    gone stale), and how to keep it."""
    stretches = model.metadata.get("data", {}).get("screened") or []
    for s in stretches:
        where = f" of {s['asset']}" if s.get("asset") else ""
        print(
            f"note: left out of training: {s['signal']}{where} held {s['value']:.6g} for "
            f"{s['readings']:,} readings, {duration_text(1000.0 * s['duration_s'])} from "
            f"{s['from']} to {s['to']} (it usually changes far sooner: {s['limit']:,} "
            "readings unchanged count as flat-lined). A sensor offline?",
            file=sys.stderr,
        )
    gross = model.metadata.get("data", {}).get("screened_gross") or []
    for g in gross:
        values = (
            f"{g['low']:.6g}" if g["low"] == g["high"] else f"{g['low']:.6g} to {g['high']:.6g}"
        )
        print(
            f"note: left out of training: {g['readings']:,} readings of {g['signal']} far "
            f"outside its local band ({values}, against a spread of {g['spread']:.3g}; the "
            f"first at {g['first']}): fill values, dropouts or sentinels?",
            file=sys.stderr,
        )
    if stretches or gross:
        print(
            "note: --set sensor_health.screen_history=false trains on every row as given",
            file=sys.stderr,
        )
    data = model.metadata.get("data", {})
    stale = sum(int(data.get(part, {}).get("stale_rows", 0)) for part in ("train", "validation"))
    if stale:
        print(
            f"note: left out of training: {stale:,} rows where a signal's last value had been "
            "carried forward over missing readings for longer than window.stale_limit; the "
            "monitor does not score there either",
            file=sys.stderr,
        )


def _warn_undecided(result: Any, settings: Settings) -> None:
    """Say so when many rows got no verdict, and which setting decides that."""
    from models.thresholds.spot import MIN_BRIDGE_SCORES

    scored = np.isfinite(result.scores)
    unscored = float((~scored).mean()) if scored.size else 0.0
    if unscored > 0.05 and result.model is not None:
        print(
            f"note: {unscored:.0%} of rows were not scored: a window needs "
            f"{result.model.window} readings in a row, so the first {result.model.window - 1} "
            "of each asset (and of each run after a gap in its readings) only fill it",
            file=sys.stderr,
        )
    undecided = scored & ~np.isfinite(result.thresholds)
    share = float(undecided.mean()) if undecided.size else 0.0
    if share <= 0.05:
        return
    calibration = len(result.model.calibration_scores) if result.model is not None else 0
    print(
        f"warning: {share:.0%} of rows were scored but got no decision (no threshold yet). "
        f"The model brought {calibration} calibration scores and threshold.grace is "
        f"{settings.threshold.grace}; with fewer than {MIN_BRIDGE_SCORES} calibration scores "
        "the threshold waits for scores to stream in. Train on more rows (or a shorter "
        "--window), or lower threshold.grace",
        file=sys.stderr,
    )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def write_results(result: Any, path: str) -> None:
    """OUT.csv of a backtest (pyarrow's writer: fast, and quotes what needs quoting)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from common.timestamps import format_ts

    columns: dict[str, Any] = {"timestamp": [format_ts(int(t)) for t in result.ts_ms.tolist()]}
    if result.assets is not None:
        columns["asset"] = [str(a) for a in result.assets]
    columns.update(
        {
            "score": result.scores,
            "threshold": result.thresholds,
            "anomaly": result.anomaly,
            "exceeds": result.exceeds,
            "severity": result.severity,
            "top_signal": result.top_signal,
        }
    )
    if result.labels is not None:
        columns["label"] = result.labels
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(pa.table(columns), path)


def _figure_args(result: Any, table: Table, asset: Any) -> dict[str, Any]:
    """``backtest_figure``'s data for one asset (``None``: the file has no asset column)."""
    keep = np.ones(len(result.rows), dtype=bool) if asset is None else result.assets == asset
    rows = result.rows[keep]
    return {
        "ts_ms": table.ts_ms[rows],
        "signals": {s: table.values[rows, i] for i, s in enumerate(table.signals)},
        "scores": result.scores[keep],
        "thresholds": result.thresholds[keep],
        "predictions": result.anomaly[keep],
        "labels": result.labels[keep] if result.labels is not None else None,
    }


def _assets(result: Any) -> list[Any]:
    if result.assets is None:
        return [None]
    return list(dict.fromkeys(result.assets.tolist()))


def plot_result(result: Any, table: Table, path: str, *, title: str) -> None:
    from models.plot import plot_backtest

    assets = _assets(result)
    if len(assets) > 1:
        title = f"{title} — asset {assets[0]} (of {len(assets)})"
    plot_backtest(path, title=title, **_figure_args(result, table, assets[0]))


def html_report(
    result: Any, table: Table, path: str, *, summary: Mapping[str, Any], title: str
) -> None:
    """The backtest as one self-contained HTML page (:mod:`plantwatch.report`)."""
    import io

    from models.plot import backtest_figure
    from plantwatch.report import write_html

    assets = _assets(result)
    figures: list[tuple[str, bytes]] = []
    for asset in assets[:MAX_HTML_FIGURES]:
        caption = "the replayed rows" if asset is None else f"asset {asset}"
        fig = backtest_figure(
            title=title if asset is None else f"{title} — {asset}",
            **_figure_args(result, table, asset),
        )
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        figures.append((caption, png.getvalue()))
    note = (
        f"Figures for the first {MAX_HTML_FIGURES} of {len(assets)} assets."
        if len(assets) > MAX_HTML_FIGURES
        else ""
    )
    write_html(
        path,
        title=f"plantwatch backtest: {title}",
        summary=summary,
        events=result.events,
        figures=figures,
        note=note,
    )

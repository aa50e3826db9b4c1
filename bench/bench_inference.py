"""Inference speed of the deep scorers on CPU, as ratios within one run.

For each model: windows/s at batch 1, 64 and 1024 for eager fp32 (the library's default
path), bf16 autocast (``InferenceOptions(bf16_min_batch=1)``) and ``torch.compile``; the
ratio column is against that model's eager fp32 batch-1 speed measured in the same run.
Then the streaming forecaster: one ``ForecasterStream.step`` per reading against
re-running the window with ``score_batch``, for the same number of assets.

    .venv/bin/python bench/bench_inference.py --quick          # ~1 minute, no compile
    .venv/bin/python bench/bench_inference.py --compile        # adds torch.compile
    .venv/bin/python bench/bench_inference.py --quick --train  # adds fit() seconds

Weights are random (speed does not depend on them). Thread count: ``--threads`` (the
library never sets it; the calling process does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from models.deep import (
    ConvAutoencoderScorer,
    DeepScorer,
    InferenceOptions,
    LSTMAutoencoderScorer,
    LSTMForecasterScorer,
)
from models.protocol import Normalizer

BATCHES = (1, 64, 1024)


@dataclass(frozen=True)
class Row:
    model: str
    variant: str
    batch: int
    per_s: float
    ratio: float


def seconds_per_call(fn: Callable[[], object], budget_s: float) -> float:
    """Median seconds per call after two warm-up calls, calling for about ``budget_s``."""
    fn()
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(
    name: str, n_signals: int, window: int, inference: InferenceOptions | None = None
) -> DeepScorer:
    makers: dict[str, Callable[[], DeepScorer]] = {
        "lstm-ae": lambda: LSTMAutoencoderScorer(
            n_signals, window, device="cpu", inference=inference
        ),
        "lstm-forecaster": lambda: LSTMForecasterScorer(
            n_signals, window, device="cpu", inference=inference
        ),
        "conv-ae": lambda: ConvAutoencoderScorer(
            n_signals, window, device="cpu", inference=inference
        ),
    }
    return makers[name]()


def bench_models(args: argparse.Namespace) -> list[Row]:
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    variants = ["eager fp32", "bf16 autocast"] + (["compile fp32"] if args.compile else [])
    for name in args.models:
        baseline = 0.0
        for variant in variants:
            bf16 = InferenceOptions(bf16_min_batch=1) if variant == "bf16 autocast" else None
            scorer = build(name, args.signals, args.window, bf16)
            if variant == "compile fp32":
                compiled = torch.compile(scorer.module, dynamic=False)
                scorer.module = cast(nn.Module, compiled)
            for batch in BATCHES:
                windows = rng.normal(size=(batch, args.window, args.signals)).astype(np.float32)
                started = time.perf_counter()
                per_call_s = seconds_per_call(partial(scorer.score_batch, windows), args.budget_s)
                per_s = batch / per_call_s
                if variant == "eager fp32" and batch == 1:
                    baseline = per_s
                rows.append(Row(name, variant, batch, per_s, per_s / baseline))
                print(
                    f"  {name:16s} {variant:14s} batch {batch:5d}: {per_s:10.0f} windows/s "
                    f"({time.perf_counter() - started:.1f}s incl. warm-up)",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def skab_rows(rows: int) -> tuple[str, np.ndarray[Any, np.dtype[np.float32]]]:
    """The first ``rows`` readings of a SKAB file, normalised; synthetic when it is absent."""
    root = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab"
    path = root / ("anomaly-free/anomaly-free.csv" if rows > 400 else "valve1/0.csv")
    if path.exists():
        table = np.genfromtxt(path, delimiter=";", skip_header=1, usecols=range(1, 9))
        data = table[:rows].astype(np.float32)
        source = f"SKAB {path.relative_to(root)}"
    else:
        t = np.arange(rows)[:, None] / np.arange(10, 90, 10)[None, :]
        data = np.sin(2 * np.pi * t).astype(np.float32)
        source = "synthetic (SKAB not found)"
    return source, Normalizer.fit(data).transform(data)


def bench_training(args: argparse.Namespace) -> list[tuple[str, str, int, float, int]]:
    """(model, data, rows, fit seconds, epochs run) with the default hyper-parameters."""
    out: list[tuple[str, str, int, float, int]] = []
    for rows in (400, 2000):
        source, data = skab_rows(rows)
        for name in args.models:
            scorer = build(name, data.shape[1], args.window)
            metrics = scorer.fit([data], seed=0)
            out.append((name, source, rows, metrics["seconds"], metrics["epochs_run"]))
            print(f"  trained {name} on {rows} rows", file=sys.stderr, flush=True)
    return out


def bench_stream(args: argparse.Namespace) -> list[tuple[int, float, float]]:
    """(assets, window re-run s per reading, stream step s per reading) per asset count."""
    rng = np.random.default_rng(1)
    scorer = LSTMForecasterScorer(args.signals, args.window, device="cpu")
    out: list[tuple[int, float, float]] = []
    for assets in BATCHES:
        ids = [f"asset-{i}" for i in range(assets)]
        stream = scorer.stream(max_assets=max(assets, 16))
        readings = rng.normal(size=(assets, args.signals)).astype(np.float32)
        for _ in range(args.window):
            stream.step(ids, readings)
        windows = rng.normal(size=(assets, args.window, args.signals)).astype(np.float32)
        window_s = seconds_per_call(partial(scorer.score_batch, windows), args.budget_s)
        step_s = seconds_per_call(partial(stream.step, ids, readings), args.budget_s)
        out.append((assets, window_s / assets, step_s / assets))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short timings (~1 minute)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument(
        "--train", action="store_true", help="also time fit() on SKAB-sized data (400, 2000 rows)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--signals", type=int, default=8)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["lstm-ae", "lstm-forecaster", "conv-ae"])
    args = parser.parse_args(argv)
    args.budget_s = 0.4 if args.quick else 2.0
    torch.set_num_threads(args.threads)
    command = "bench/bench_inference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = bench_models(args)
    stream_rows = bench_stream(args)
    train_rows = bench_training(args) if args.train else []

    print(f"\n`.venv/bin/python {command.strip()}` — torch {torch.__version__}, ", end="")
    print(f"{args.threads} thread(s), {args.signals} signals, window {args.window}, CPU\n")
    print("| model | variant | batch | windows/s | ratio vs eager fp32 batch 1 |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.model} | {r.variant} | {r.batch} | {r.per_s:.0f} | {r.ratio:.1f} |")
    print("\nStreaming forecaster, per reading (one asset's new reading):\n")
    print("| assets per call | window re-run µs | stream step µs | speed-up |")
    print("|---:|---:|---:|---:|")
    for assets, window_s, step_s in stream_rows:
        print(
            f"| {assets} | {window_s * 1e6:.1f} | {step_s * 1e6:.1f} | {window_s / step_s:.1f}x |"
        )

    if train_rows:
        print("\nTraining with default hyper-parameters (fit seconds, this thread count):\n")
        print("| model | data | rows | fit s | epochs |")
        print("|---|---|---:|---:|---:|")
        for name, source, n_rows, fit_s, epochs in train_rows:
            print(f"| {name} | {source} | {n_rows} | {fit_s:.2f} | {epochs} |")


if __name__ == "__main__":
    main()

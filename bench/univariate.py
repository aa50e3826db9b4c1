"""Univariate streams of the kinds public benchmarks hold, through the deployed command line.

plantwatch is also judged on univariate streams we do not have (NAB- and Yahoo-like: one
value column, minutes apart, a few labelled anomalies, and benign change the labels call
normal). This bench makes a family of such streams from stated generators, several seeds
each, and runs every one through ``plantwatch backtest --train-fraction F --labels label``
with the defaults, exactly as a user would; the ``anomaly`` column (an open alert) is the
prediction. It reports per kind and pooled: point F1, FAR %, MAR %, events detected of
labelled, false alerts, and the share of normal rows under an alert.

Kinds (5-minute cadence, daily cycle of 288 rows unless said; ``label`` marks the anomaly):

- ``seasonal_spikes``  daily cycle + noise; three one-row spikes of 6 noise sd
- ``seasonal_shift``   daily cycle; a level shift of 4 noise sd for 100 rows
- ``seasonal_dropout`` daily cycle; for a day the cycle is missing (flat at its mean)
- ``variance_burst``   daily cycle; the noise 4x for 100 rows
- ``stuck``            daily cycle; the value frozen for 150 rows
- ``walk_spikes``      AR(1) with phi 0.995 (a wandering level, like a temperature); spikes
- ``trend_shift``      a slow benign trend that goes on past training; a drop of 5 sd
- ``new_level``        a permanent level change of 5 sd at 70 %: the first 40 rows after it
                       are labelled (NAB labels a window at the change), the new level after
                       them is normal
- ``offline_history``  daily cycle; 10 h at 0.0 inside the *training* part (a sensor
                       offline in the export, unlabelled), and 10 rows 8 noise sd up later
- ``sentinel_history`` the same excursion after 20 training readings written as -9999

    .venv/bin/python bench/univariate.py                    # every kind, 3 seeds
    .venv/bin/python bench/univariate.py --kinds stuck,new_level --seeds 1 --set alert.k=2
    .venv/bin/python bench/univariate.py --interval-s 3600   # the same streams, hourly

Progress to stderr; the markdown table and the command to stdout (and ``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from plantwatch.cli import main as plantwatch

F = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
ROWS = 6000
DAY = 288
INTERVAL_S = 300
TRAIN_FRACTION = 0.4


def _cycle(rng: np.random.Generator, n: int) -> F:
    t = np.arange(n)
    phase = rng.uniform(0, 2 * np.pi)
    return 10.0 + 2.0 * np.sin(2 * np.pi * t / DAY + phase) + 0.5 * np.sin(4 * np.pi * t / DAY)


def _test_starts(rng: np.random.Generator, n: int, count: int, length: int) -> list[int]:
    """``count`` anomaly starts spread over the test part, at least a day apart."""
    lo, hi = int(n * TRAIN_FRACTION) + DAY, n - length - DAY // 2
    slots = np.linspace(lo, hi, count + 1).astype(int)
    return [int(rng.integers(slots[i], slots[i + 1] - length)) for i in range(count)]


def seasonal_spikes(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    x = _cycle(rng, ROWS) + rng.normal(0, sd, ROWS)
    y = np.zeros(ROWS, dtype=np.int64)
    for s in _test_starts(rng, ROWS, 3, 1):
        x[s] += rng.choice([-1, 1]) * 6 * sd
        y[s] = 1
    return x, y


def seasonal_shift(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    x = _cycle(rng, ROWS) + rng.normal(0, sd, ROWS)
    y = np.zeros(ROWS, dtype=np.int64)
    (s,) = _test_starts(rng, ROWS, 1, 100)
    x[s : s + 100] += 4 * sd
    y[s : s + 100] = 1
    return x, y


def seasonal_dropout(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.2
    x = _cycle(rng, ROWS)
    (s,) = _test_starts(rng, ROWS, 1, DAY)
    x[s : s + DAY] = 10.0
    x += rng.normal(0, sd, ROWS)
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + DAY] = 1
    return x, y


def variance_burst(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    noise = rng.normal(0, sd, ROWS)
    (s,) = _test_starts(rng, ROWS, 1, 100)
    noise[s : s + 100] *= 4
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + 100] = 1
    return _cycle(rng, ROWS) + noise, y


def stuck(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    x = _cycle(rng, ROWS) + rng.normal(0, sd, ROWS)
    (s,) = _test_starts(rng, ROWS, 1, 150)
    x[s : s + 150] = x[s - 1]
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + 150] = 1
    return x, y


def walk_spikes(rng: np.random.Generator) -> tuple[F, Ints]:
    e = rng.normal(0, 0.1, ROWS)
    x = np.empty(ROWS)
    level = 0.0
    for i in range(ROWS):
        level = 0.995 * level + e[i]
        x[i] = 50.0 + level
    sd = float(np.std(np.diff(x)))
    y = np.zeros(ROWS, dtype=np.int64)
    for s in _test_starts(rng, ROWS, 3, 3):
        x[s : s + 3] += rng.choice([-1, 1]) * 12 * sd
        y[s : s + 3] = 1
    return x, y


def trend_shift(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    t = np.arange(ROWS)
    x = _cycle(rng, ROWS) + 1.5 * t / ROWS + rng.normal(0, sd, ROWS)
    (s,) = _test_starts(rng, ROWS, 1, 80)
    x[s : s + 80] -= 5 * sd
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + 80] = 1
    return x, y


def new_level(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    x = _cycle(rng, ROWS) + rng.normal(0, sd, ROWS)
    s = int(ROWS * 0.7) + int(rng.integers(-50, 50))
    x[s:] += 5 * sd
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + 40] = 1
    return x, y


def offline_history(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    x = _cycle(rng, ROWS) + rng.normal(0, sd, ROWS)
    # Ten hours offline inside the training part, exported as 0.0: unlabelled, as a
    # historian export holds it; then an excursion of 8 noise sd for 50 minutes.
    off = int(rng.integers(DAY // 2, int(ROWS * TRAIN_FRACTION) - DAY // 2 - 120))
    x[off : off + 120] = 0.0
    (s,) = _test_starts(rng, ROWS, 1, 10)
    x[s : s + 10] += 8 * sd
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + 10] = 1
    return x, y


def sentinel_history(rng: np.random.Generator) -> tuple[F, Ints]:
    sd = 0.3
    x = _cycle(rng, ROWS) + rng.normal(0, sd, ROWS)
    # 20 readings of the training part exported as a historian's bad-quality sentinel
    # (-9999, unlabelled); then an excursion of 8 noise sd for 50 minutes.
    bad = rng.choice(np.arange(DAY // 4, int(ROWS * TRAIN_FRACTION)), 20, replace=False)
    x[bad] = -9999.0
    (s,) = _test_starts(rng, ROWS, 1, 10)
    x[s : s + 10] += 8 * sd
    y = np.zeros(ROWS, dtype=np.int64)
    y[s : s + 10] = 1
    return x, y


KINDS: dict[str, Callable[[np.random.Generator], tuple[F, Ints]]] = {
    f.__name__: f
    for f in (
        seasonal_spikes,
        seasonal_shift,
        seasonal_dropout,
        variance_burst,
        stuck,
        walk_spikes,
        trend_shift,
        new_level,
        offline_history,
        sentinel_history,
    )
}


def _write(path: Path, x: F, y: Ints, interval_s: int = INTERVAL_S) -> None:
    t0 = 1_700_000_000
    lines = ["timestamp,value,label"]
    rows = enumerate(zip(x.tolist(), y.tolist(), strict=True))
    lines += [f"{t0 + i * interval_s},{v:.6f},{lab}" for i, (v, lab) in rows]
    path.write_text("\n".join(lines) + "\n")


def spans(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """The (start, end) row ranges where ``mask`` is true, end exclusive."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def backtest_flags(
    src: Path, split: list[str], sets: list[str], scorer: str | None, what: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """``plantwatch backtest`` on ``src`` (a CSV with a ``label`` column) as a user runs
    it, ``split`` saying what trains (``--train-fraction F`` or ``--train-rows N``), and
    per scored row: (an alert is open, the row is labelled). ``what`` names the run in
    an error."""
    out = src.with_name(f"{src.stem}-out.csv")
    args = ["backtest", "--input", str(src), *split, "--labels", "label", "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    if scorer:
        args += ["--scorer", scorer]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = plantwatch(args)
    if code != 0:
        raise SystemExit(f"{what}: plantwatch backtest exited {code}")
    lines = out.read_text().splitlines()
    header = [h.strip('"') for h in lines[0].split(",")]
    col = {h: i for i, h in enumerate(header)}
    rows = [line.split(",") for line in lines[1:]]
    pred = np.array([r[col["anomaly"]] == "1" for r in rows], dtype=bool)
    label = np.array([r[col["label"]] == "1" for r in rows], dtype=bool)
    return pred, label


def run_one(
    kind: str,
    seed: int,
    sets: list[str],
    work: Path,
    scorer: str | None = None,
    interval_s: int = INTERVAL_S,
) -> dict[str, Any]:
    x, y = KINDS[kind](np.random.default_rng(seed))
    src = work / f"{kind}-{seed}.csv"
    _write(src, x, y, interval_s)
    split = ["--train-fraction", str(TRAIN_FRACTION)]
    pred, label = backtest_flags(src, split, sets, scorer, f"{kind} seed {seed}")
    truth = spans(label)
    alerts = spans(pred)
    # An alert that overlaps a labelled event (or opens within a window after it) counts
    # for it; any other alert is false.
    slack = 32
    detected = sum(any(a < e + slack and b > s for a, b in alerts) for s, e in truth)
    false = sum(not any(a < e + slack and b > s for s, e in truth) for a, b in alerts)
    return {
        "kind": kind,
        "seed": seed,
        "tp": int((pred & label).sum()),
        "fp": int((pred & ~label).sum()),
        "fn": int((~pred & label).sum()),
        "tn": int((~pred & ~label).sum()),
        "events": len(truth),
        "detected": int(detected),
        "false_alerts": int(false),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    tp, fp, fn, tn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn", "tn"))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    events, detected = sum(r["events"] for r in rows), sum(r["detected"] for r in rows)
    false = sum(r["false_alerts"] for r in rows)
    ep = detected / (detected + false) if detected + false else 0.0
    er = detected / events if events else 0.0
    return {
        "f1": f1,
        "far_pct": 100.0 * fp / (fp + tn) if fp + tn else 0.0,
        "mar_pct": 100.0 * fn / (fn + tp) if fn + tp else 0.0,
        "events": events,
        "detected": detected,
        "false_alerts": false,
        "event_f1": 2 * ep * er / (ep + er) if ep + er else 0.0,
    }


def add_run_options(p: argparse.ArgumentParser, known: Sequence[str]) -> None:
    """The options a generated-stream bench shares: kinds, seeds, settings, scorer, JSON."""
    p.add_argument("--kinds", default=",".join(known), help="comma-separated (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per kind (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--scorer", help="plantwatch backtest's --scorer (default: its default)")
    p.add_argument("--json", type=Path, help="write every run's counts here")
    p.add_argument(
        "--interval-s",
        type=int,
        help="seconds between rows (default: the bench's own); the same rows, further apart",
    )


def chosen_kinds(
    p: argparse.ArgumentParser, args: argparse.Namespace, known: Sequence[str]
) -> list[str]:
    """``--kinds`` as a list, or a usage error naming the unknown ones."""
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(known))
    if unknown:
        p.error(f"unknown kinds {unknown}; known: {', '.join(known)}")
    return kinds


def by_kind(
    results: list[dict[str, Any]], kinds: Sequence[str]
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each kind's runs under its table name, then every run as ``**all**``."""
    for kind in kinds:
        yield kind, [r for r in results if r["kind"] == kind]
    yield "**all**", results


def main(argv: list[str] | None = None) -> int:
    global TRAIN_FRACTION  # the generators place their anomalies after it
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_run_options(p, list(KINDS))
    p.add_argument(
        "--train-fraction",
        type=float,
        default=TRAIN_FRACTION,
        help=f"share of each stream that trains (default {TRAIN_FRACTION}; NAB's probation is"
        " 0.15); the anomalies move with it, staying in the test part",
    )
    args = p.parse_args(argv)
    TRAIN_FRACTION = args.train_fraction
    kinds = chosen_kinds(p, args, list(KINDS))
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for seed in range(args.seeds):
                interval = args.interval_s or INTERVAL_S
                results.append(run_one(kind, seed, args.set, Path(tmp), args.scorer, interval))
                r = results[-1]
                print(
                    f"{kind} seed {seed}: detected {r['detected']}/{r['events']}, "
                    f"false {r['false_alerts']}, fp rows {r['fp']}  "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                )
    cmd = "python bench/univariate.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"Command: `{cmd.strip()}`\n")
    print("| kind | F1 | FAR % | MAR % | detected | false alerts | event F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in by_kind(results, kinds):
        s = _summary(rows)
        print(
            f"| {name} | {s['f1']:.2f} | {s['far_pct']:.2f} | {s['mar_pct']:.1f} | "
            f"{s['detected']}/{s['events']} | {s['false_alerts']} | {s['event_f1']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

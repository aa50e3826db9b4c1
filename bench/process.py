"""Many-variable process data at minute cadence, under the Tennessee Eastman protocol.

plantwatch is also judged on many-variable process data we do not have: tens of signals
every few minutes, a short normal history, then runs in which a fault starts at a known row
and persists (the Tennessee Eastman benchmark's shape: 52 signals every 3 minutes, 500
normal training rows, test runs of 960 rows with the fault from row 160 on). This bench
makes such a plant from stated generators and runs each test run through ``plantwatch
backtest --train-rows TRAIN --labels label`` with the defaults, exactly as a user would:
the training rows first, then the test run (a fresh run of the same plant, so its slow
disturbances are not a continuation of the training ones). The ``anomaly`` column (an open
alert) is the prediction.

The plant: ``--signals`` signals driven by 6 latent disturbances (AR(1), phi 0.90-0.98, so
a few hundred rows hold only tens of independent looks at them), each signal a mix of one
to three of them plus its own noise; some are controlled (noise around a set point), two
are valves held constant, and six are analysers whose value is updated every 2 or 5 rows
and held in between (sample-and-hold, as Tennessee Eastman's composition analysers are).
Every signal has its own offset and unit.

Kinds (the fault starts at test row ``--onset`` and lasts to the end; ``label`` marks it):

- ``normal``          no fault: every alert is false (Tennessee Eastman's d00 test run)
- ``disturbance_step``  one disturbance's mean steps by 4 sd (moves many signals together)
- ``sensor_bias``     one measured signal reads 8 noise-sd off (a broken relation)
- ``variation``       one disturbance's random variation triples
- ``sensor_drift``    one signal drifts away, 0 to 12 noise-sd over 400 rows
- ``stuck``           one signal freezes at its last value
- ``relation``        one signal's response to its disturbance reverses (a valve sticking,
                      a changed loop): same range, broken relation

Reported per kind and pooled: detected runs, detection delay (rows from onset to the first
open alert), false alerts (alerts that open before the onset, or in a ``normal`` run),
FAR % (normal test rows under an alert), detection rate % (fault rows under an alert, the
Tennessee Eastman figure) and point F1.

    .venv/bin/python bench/process.py                       # every kind, 3 seeds
    .venv/bin/python bench/process.py --kinds normal --seeds 5 --set alert.k=2

Progress to stderr; the markdown table and the command to stdout (and ``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from univariate import add_run_options, backtest_flags, by_kind, chosen_kinds, spans

F = npt.NDArray[np.float64]
INTERVAL_S = 180
N_FACTORS = 6
N_ANALYSERS = 6


@dataclass
class Plant:
    """The stated structure of one seed's plant (the same for training and test runs)."""

    phi: F  # (factors,) AR(1) coefficients
    loadings: F  # (factors, signals)
    noise: F  # (signals,) noise sd
    offset: F  # (signals,)
    unit: F  # (signals,)
    constant: npt.NDArray[np.bool_]  # (signals,) valves held constant
    hold: npt.NDArray[np.int64]  # (signals,) 1, or the analyser's update period in rows

    @classmethod
    def make(cls, rng: np.random.Generator, n_signals: int) -> Plant:
        phi = rng.choice([0.90, 0.95, 0.98], N_FACTORS)
        loadings = np.zeros((N_FACTORS, n_signals))
        for j in range(n_signals):
            chosen = rng.choice(N_FACTORS, size=int(rng.integers(1, 4)), replace=False)
            loadings[chosen, j] = rng.normal(0, 1, chosen.size)
        controlled = rng.choice(n_signals, size=max(1, n_signals // 10), replace=False)
        loadings[:, controlled] *= 0.05
        noise = rng.uniform(0.2, 0.6, n_signals)
        constant = np.zeros(n_signals, dtype=bool)
        constant[rng.choice(n_signals, size=2, replace=False)] = True
        hold = np.ones(n_signals, dtype=np.int64)
        analysers = rng.choice(np.flatnonzero(~constant), size=N_ANALYSERS, replace=False)
        hold[analysers] = rng.choice([2, 5], N_ANALYSERS)
        offset = rng.uniform(10, 500, n_signals)
        unit = 10.0 ** rng.uniform(-1, 1, n_signals)
        return cls(phi, loadings, noise, offset, unit, constant, hold)

    def measured(self) -> npt.NDArray[np.int64]:
        """Signals a sensor fault may hit: not a held valve, not an analyser."""
        return np.flatnonzero(~self.constant & (self.hold == 1))

    def run(
        self,
        rng: np.random.Generator,
        n: int,
        *,
        factor_shift: F | None = None,
        factor_gain: F | None = None,
    ) -> tuple[F, F]:
        """A run of ``n`` rows from the stationary state: (values in units, noise-free
        normalised signals). ``factor_shift`` / ``factor_gain`` (rows, factors) change the
        disturbances' means and innovation sd row by row."""
        innov = rng.normal(0, 1, (n, N_FACTORS)) * np.sqrt(1 - self.phi**2)
        if factor_gain is not None:
            innov *= factor_gain
        f = np.empty((n, N_FACTORS))
        state = rng.normal(0, 1, N_FACTORS)
        for i in range(n):
            state = self.phi * state + innov[i]
            f[i] = state
        if factor_shift is not None:
            f = f + factor_shift
        clean = f @ self.loadings
        return clean, rng.normal(0, 1, clean.shape) * self.noise

    def observe(self, clean: F, noise: F) -> F:
        z = clean + noise
        z[:, self.constant] = 0.0
        for j in np.flatnonzero(self.hold > 1):
            period = int(self.hold[j])
            idx = (np.arange(z.shape[0]) // period) * period
            z[:, j] = z[idx, j]
        values: F = self.offset + self.unit * z
        return values


def _fault(kind: str, plant: Plant, rng: np.random.Generator, n: int, onset: int) -> F:
    """The test run of ``kind``: values (n, signals)."""
    shift = np.zeros((n, N_FACTORS))
    gain = np.ones((n, N_FACTORS))
    factor = int(rng.integers(N_FACTORS))
    if kind == "disturbance_step":
        shift[onset:, factor] = 4.0 * rng.choice([-1, 1])
    if kind == "variation":
        gain[onset:, factor] = 3.0
    clean, noise = plant.run(rng, n, factor_shift=shift, factor_gain=gain)
    signal = int(rng.choice(plant.measured()))
    sign = rng.choice([-1, 1])
    if kind == "relation":
        # The signal's strongest disturbance now moves it the other way.
        strongest = int(np.abs(plant.loadings[:, signal]).argmax())
        f = clean @ np.linalg.pinv(plant.loadings)  # recover the disturbances
        clean[onset:, signal] -= 2 * plant.loadings[strongest, signal] * f[onset:, strongest]
    if kind == "sensor_bias":
        noise[onset:, signal] += sign * 8 * plant.noise[signal]
    if kind == "sensor_drift":
        ramp = np.clip((np.arange(n) - onset) / 400.0, 0.0, None)
        noise[:, signal] += sign * 12 * plant.noise[signal] * ramp
    values = plant.observe(clean, noise)
    if kind == "stuck":
        values[onset:, signal] = values[onset - 1, signal]
    return values


def classic_pca(
    history: F, run: F, *, variance: float = 0.95, alpha: float = 0.01
) -> npt.NDArray[np.bool_]:
    """The textbook reference (Chiang, Russell & Braatz 2000, the Tennessee Eastman
    baseline): PCA of the standardised training rows keeping ``variance``, each test row
    flagged when T² exceeds its chi-square limit or Q its Jackson-Mudholkar limit at
    ``1 - alpha``; no smoothing, no alert logic. Signals constant in training are left out
    (a standard deviation of zero)."""
    sd = history.std(axis=0, ddof=1)
    used = sd > 1e-12
    mean = history[:, used].mean(axis=0)
    z = (history[:, used] - mean) / sd[used]
    eigvals, eigvecs = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = np.clip(eigvals[order], 0, None), eigvecs[:, order]
    k = int(np.searchsorted(np.cumsum(eigvals) / eigvals.sum(), variance) + 1)
    p, lam = eigvecs[:, :k], eigvals[:k]
    x = (run[:, used] - mean) / sd[used]
    t = x @ p
    t2 = (t * t / lam).sum(axis=1)
    resid = x - t @ p.T
    q = (resid * resid).sum(axis=1)
    z_a = NormalDist().inv_cdf(1 - alpha)
    # chi-square quantile (Wilson-Hilferty) for T²
    t2_limit = k * (1 - 2 / (9 * k) + z_a * math.sqrt(2 / (9 * k))) ** 3
    th = [float((eigvals[k:] ** i).sum()) for i in (1, 2, 3)]
    h0 = 1 - 2 * th[0] * th[2] / (3 * th[1] ** 2)
    q_limit = th[0] * (
        z_a * math.sqrt(2 * th[1] * h0**2) / th[0] + 1 + th[1] * h0 * (h0 - 1) / th[0] ** 2
    ) ** (1 / h0)
    flags: npt.NDArray[np.bool_] = (t2 > t2_limit) | (q > q_limit)
    return flags


KINDS = (
    "normal",
    "disturbance_step",
    "sensor_bias",
    "variation",
    "sensor_drift",
    "stuck",
    "relation",
)


def _write(
    path: Path, values: F, label: npt.NDArray[np.int64], interval_s: int = INTERVAL_S
) -> None:
    t0 = 1_700_000_000
    n_signals = values.shape[1]
    lines = ["timestamp," + ",".join(f"x{j + 1:02d}" for j in range(n_signals)) + ",label"]
    for i, (row, lab) in enumerate(zip(values.tolist(), label.tolist(), strict=True)):
        lines.append(f"{t0 + i * interval_s}," + ",".join(f"{v:.5g}" for v in row) + f",{lab}")
    path.write_text("\n".join(lines) + "\n")


def run_one(
    kind: str,
    seed: int,
    *,
    signals: int,
    train: int,
    test: int,
    onset: int,
    sets: list[str],
    work: Path,
    scorer: str | None = None,
    interval_s: int = INTERVAL_S,
) -> dict[str, Any]:
    plant_rng = np.random.default_rng([seed, 0])
    plant = Plant.make(plant_rng, signals)
    history = plant.observe(*plant.run(np.random.default_rng([seed, 1]), train))
    rng = np.random.default_rng([seed, 2, KINDS.index(kind)])
    run = _fault(kind, plant, rng, test, onset)
    label = np.zeros(train + test, dtype=np.int64)
    if kind != "normal":
        label[train + onset :] = 1
    src = work / f"{kind}-{seed}.csv"
    _write(src, np.vstack([history, run]), label, interval_s)
    split = ["--train-rows", str(train)]
    pred, truth = backtest_flags(src, split, sets, scorer, f"{kind} seed {seed}")
    alerts = spans(pred)
    first_fault = int(np.argmax(truth)) if truth.any() else len(truth)
    false = sum(a < first_fault for a, _ in alerts)
    later = [a for a, b in alerts if b > first_fault]
    delay = (max(later[0], first_fault) - first_fault) if later and truth.any() else None
    if len(truth) != test:
        raise SystemExit(f"{kind} seed {seed}: {len(truth)} scored rows, expected {test}")
    ref = classic_pca(history, run)
    return {
        "kind": kind,
        "seed": seed,
        "ref_fp": int((ref & ~truth).sum()),
        "ref_tp": int((ref & truth).sum()),
        "tp": int((pred & truth).sum()),
        "fp": int((pred & ~truth).sum()),
        "fn": int((~pred & truth).sum()),
        "tn": int((~pred & ~truth).sum()),
        "faulty": bool(truth.any()),
        "detected": delay is not None,
        "delay": delay,
        "false_alerts": int(false),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tp, fp, fn, tn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn", "tn"))
    faulty = [r for r in rows if r["faulty"]]
    delays = [r["delay"] for r in faulty if r["delay"] is not None]
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "far_pct": 100.0 * fp / (fp + tn) if fp + tn else 0.0,
        "dr_pct": 100.0 * tp / (tp + fn) if tp + fn else None,
        "runs": len(faulty),
        "detected": len(delays),
        "delay": float(np.median(delays)) if delays else None,
        "false_alerts": sum(r["false_alerts"] for r in rows),
        "ref_far_pct": 100.0 * sum(r["ref_fp"] for r in rows) / (fp + tn) if fp + tn else 0.0,
        "ref_dr_pct": 100.0 * sum(r["ref_tp"] for r in rows) / (tp + fn) if tp + fn else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_run_options(p, KINDS)
    p.add_argument("--signals", type=int, default=52, help="signals per plant (default 52)")
    p.add_argument("--train", type=int, default=500, help="normal training rows (default 500)")
    p.add_argument("--test", type=int, default=960, help="rows per test run (default 960)")
    p.add_argument("--onset", type=int, default=160, help="fault's first test row (160)")
    args = p.parse_args(argv)
    kinds = chosen_kinds(p, args, KINDS)
    if not 0 < args.onset < args.test:
        p.error(f"--onset must lie inside the test run (1..{args.test - 1})")
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for seed in range(args.seeds):
                r = run_one(
                    kind,
                    seed,
                    signals=args.signals,
                    train=args.train,
                    test=args.test,
                    onset=args.onset,
                    sets=args.set,
                    work=Path(tmp),
                    scorer=args.scorer,
                    interval_s=args.interval_s or INTERVAL_S,
                )
                results.append(r)
                print(
                    f"{kind} seed {seed}: detected {r['detected']} (delay {r['delay']}), "
                    f"false {r['false_alerts']}, fp rows {r['fp']}  "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                )
    cmd = "python bench/process.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"Command: `{cmd.strip()}`\n")
    print(
        "| kind | detected | delay (rows, median) | false alerts | FAR % | detection rate % | F1 "
        "| reference FAR % | reference detection rate % |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in by_kind(results, kinds):
        s = _summary(rows)
        detected = f"{s['detected']}/{s['runs']}" if s["runs"] else "–"
        delay = "–" if s["delay"] is None else f"{s['delay']:.0f}"
        dr = "–" if s["dr_pct"] is None else f"{s['dr_pct']:.1f}"
        ref_dr = "–" if s["ref_dr_pct"] is None else f"{s['ref_dr_pct']:.1f}"
        print(
            f"| {name} | {detected} | {delay} | {s['false_alerts']} | {s['far_pct']:.2f} | "
            f"{dr} | {s['f1']:.2f} | {s['ref_far_pct']:.2f} | {ref_dr} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

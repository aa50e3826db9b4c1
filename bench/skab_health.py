"""Where the sensor-health rules fire on SKAB: inside the labelled anomalies or outside.

The rules alone (no model, no alert policy), under SKAB's protocol: each file's first 400
rows fit the profile, the rest are checked in one batch. A run of flagged readings is
*inside* when one of its first reading or the three before it is labelled anomalous (a
step is known 3 readings after it), else *outside*: those are the rule's false alarms on
a real test bed.

    .venv/bin/python bench/skab_health.py [--data ../shared/datasets/skab] [--rules step]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from models.health import RULES, SensorHealth, SensorHealthProfile

REPO = Path(__file__).resolve().parents[1]
TRAIN_ROWS = 400
LOOKBACK = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "skab")
    parser.add_argument("--rules", default=",".join(RULES), help="rules to count")
    args = parser.parse_args()
    files = sorted(p for p in args.data.rglob("*.csv") if "anomaly-free" not in p.parts)
    if not files:
        raise SystemExit(f"no SKAB files under {args.data}")
    rules = args.rules.split(",")
    inside = dict.fromkeys(rules, 0)
    outside = dict.fromkeys(rules, 0)
    options = pacsv.ParseOptions(delimiter=";")
    for path in files:
        table = pacsv.read_csv(path, parse_options=options)
        signals = [c for c in table.column_names if c not in ("datetime", "anomaly", "changepoint")]
        x = np.column_stack([table.column(s).to_numpy().astype(np.float64) for s in signals])
        labels = table.column("anomaly").to_numpy().astype(bool)[TRAIN_ROWS:]
        profile = SensorHealthProfile.fit(x[:TRAIN_ROWS], [(0, TRAIN_ROWS)], signals)
        found = SensorHealth(profile).check(x[TRAIN_ROWS:])
        for rule in rules:
            fired = found.fired[rule]  # type: ignore[index]
            for j in range(fired.shape[1]):
                edges = np.flatnonzero(np.diff(np.r_[0, fired[:, j].astype(np.int8), 0]))
                for start in edges[::2].tolist():
                    if labels[max(0, start - LOOKBACK) : start + 1].any():
                        inside[rule] += 1
                    else:
                        outside[rule] += 1
                        where = path.relative_to(args.data)
                        print(f"  outside: {where} {signals[j]} row {start + TRAIN_ROWS} ({rule})")
    print(f"\nSKAB, {len(files)} files, first {TRAIN_ROWS} rows fit, the rest checked")
    print("| rule | runs inside a labelled anomaly | runs outside |")
    print("|---|---:|---:|")
    for rule in rules:
        print(f"| {rule} | {inside[rule]} | {outside[rule]} |")


if __name__ == "__main__":
    main()

"""Run every benchmark under bench/, one after another (``make bench``).

Each script runs in its own process (a fresh interpreter, so one's threads or caches never
colour another's timings) with its quick settings unless ``--full`` is given; the output
of each goes to the terminal as it comes and, with ``--out DIR``, to ``DIR/NAME.txt``.
A script that fails does not stop the others; the exit code says whether all passed.

    .venv/bin/python bench/run_all.py                 # quick: ~10 minutes on 2 cores
    .venv/bin/python bench/run_all.py --full --out bench-results
    .venv/bin/python bench/run_all.py --only skab,bench_monitor
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKAB_DATA = HERE.parent.parent / "shared" / "datasets" / "skab"


@dataclass(frozen=True)
class Bench:
    name: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()
    needs: Path | None = None


BENCHES = (
    Bench("bench_monitor", ("--quick",)),
    Bench("batch_latency", ("--quick",)),
    Bench("bench_inference", ("--quick",)),
    Bench("bench_thresholds", ("--quick",)),
    Bench("bench_health", ("--quick",)),
    Bench(
        "bench_scaling",
        ("--assets", "100,1000", "--scored", "10"),
        ("--assets", "100,1000,10000,100000", "--windows", "16,32,64,128"),
    ),
    Bench("bench_simulator", ("--quick",)),
    Bench("skab", ("--files", "8"), (), needs=SKAB_DATA),
    Bench("sim_faults", ("--quick",)),
    Bench("univariate", ("--seeds", "1"), ("--seeds", "3")),
    Bench("process", ("--seeds", "1"), ("--seeds", "3")),
    Bench("chaos", ("--kills", "5", "--produce-s", "40")),
    Bench(
        "soak",
        ("--minutes", "2", "--warmup-min", "0.5", "--interval-min", "0.5"),
        ("--minutes", "60"),
    ),
    Bench(
        "e2e_broker",
        ("--quick", "--profile", "pca"),
        (
            "--repeat",
            "3",
            "--scorers",
            "pca,conv-ae,lstm-forecaster",
            "--profile",
            "conv-ae",
            "--latency-set",
            "consumer.batch_wait_ms=20",
        ),
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="each script's full run (hours)")
    parser.add_argument("--only", help="comma-separated script names, e.g. skab,bench_monitor")
    parser.add_argument("--out", type=Path, help="also write each script's output here")
    args = parser.parse_args(argv)
    chosen = list(BENCHES)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {b.name for b in BENCHES}
        if unknown:
            parser.error(f"unknown benchmarks {sorted(unknown)}; have {[b.name for b in BENCHES]}")
        chosen = [b for b in BENCHES if b.name in wanted]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, str, float]] = []
    for bench in chosen:
        if bench.needs is not None and not bench.needs.exists():
            print(f"== {bench.name}: skipped, {bench.needs} is absent", flush=True)
            results.append((bench.name, "skipped", 0.0))
            continue
        cmd = [
            sys.executable,
            str(HERE / f"{bench.name}.py"),
            *(bench.full if args.full else bench.quick),
        ]
        print(f"== {bench.name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "")
        if args.out:
            (args.out / f"{bench.name}.txt").write_text(proc.stdout)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        results.append((bench.name, status, elapsed))
        print(f"== {bench.name}: {status} in {elapsed:,.0f} s", flush=True)
    print("\nsummary:")
    for name, status, elapsed in results:
        print(f"  {name:<18} {status:<20} {elapsed:>8,.0f} s")
    return 0 if all(s in ("ok", "skipped") for _, s, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

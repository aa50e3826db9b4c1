"""Memory per asset of the monitor's state, traced in-process (companion to ``e2e_broker.py``).

``e2e_broker.py`` compares the RSS of two ``plantwatch run`` processes, which also counts
what is not per-asset state: librdkafka's fetch queue (it pre-fetches more of a larger
topic), allocator pools kept after a 2,000-reading batch. Here ``tracemalloc`` counts only
what stays allocated in Python after ``--assets`` more assets have each streamed
``--readings`` readings through ``Monitor.process``, grouped by the file that allocated it.

    .venv/bin/python bench/e2e_memory.py [--assets 200] [--scorer pca]
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_broker import history_table, simulator

from plantwatch.backtest import train_table
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from stream.simulator import SIGNALS

START_MS = 1_795_899_600_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--readings", type=int, default=200, help="per asset")
    parser.add_argument("--scorer", default="pca")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    n_assets, first = args.assets, 10
    table = history_table(simulator(n_assets, 600, START_MS - 86_400_000, seed=1).generate())
    settings = load_settings(env={})
    hyper = {} if args.scorer in ("pca", "river-hst") else {"epochs": args.epochs}
    model = train_table(table, settings, scorer=args.scorer, window=32, **hyper)
    live = simulator(n_assets, args.readings, START_MS, seed=2).generate()
    readings = [
        SensorReading(
            live.assets[a],
            int(live.ts_ms[t, a]),
            dict(zip(SIGNALS, live.values[t, a].tolist(), strict=True)),
        )
        for t in range(args.readings)
        for a in range(n_assets)
    ]
    monitor = Monitor.from_settings(model, settings)
    early = set(live.assets[:first])

    def stream(part: list[SensorReading]) -> None:
        for s in range(0, len(part), 2000):
            monitor.process(part[s : s + 2000], now_ms=START_MS)

    stream([r for r in readings if r.asset in early])  # imports, caches, first-asset setup
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    stream([r for r in readings if r.asset not in early])
    after = tracemalloc.take_snapshot()
    diff = after.compare_to(before, "filename")
    extra = n_assets - first
    total = sum(d.size_diff for d in diff)
    print(f"| allocated in | KB per asset ({args.scorer}, {extra} assets traced) |")
    print("|---|---|")
    for d in diff[:8]:
        name = d.traceback[0].filename
        shown = name.split("site-packages/")[-1] if "site-packages" in name else Path(name).name
        parent = Path(name).parent.name
        print(
            f"| {shown if 'site-packages' in name else f'{parent}/{shown}'} "
            f"| {d.size_diff / 1024 / extra:.1f} |"
        )
    print(f"| **total** | **{total / 1024 / extra:.0f}** |")
    cmd = " ".join([".venv/bin/python bench/e2e_memory.py", *sys.argv[1:]])
    print(f"\n`{cmd}`")


if __name__ == "__main__":
    main()

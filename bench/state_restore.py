"""How long a monitor takes to restore its assets' state from the state topic, by size.

On every assignment the run loop reads its partitions of the compacted state topic
(``stream.state.load_states``) before it processes a reading, so the restore is the
start-up and rebalance pause. Here a real local broker (``KAFKA_BOOTSTRAP_SERVERS`` when
set) gets a state topic holding ``--assets`` assets' snapshots, each a real one (a
simulated pump through ``Monitor.process``, so the size is a warmed-up asset's) written
``--versions`` times (compaction lags: every checkpoint appends one record per changed
asset), then ``load_states`` reads it: all partitions, and one partition (what a member
owning a quarter of the plant reads).

    .venv/bin/python bench/state_restore.py                     # 1,000 and 5,000 assets
    .venv/bin/python bench/state_restore.py --assets 200 --versions 2    # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_broker import broker, simulator
from e2e_monitor import create_topic, say

from models.training import train_model
from plantwatch.monitor import Monitor
from plantwatch.settings import load_settings
from stream.schema import SensorReading
from stream.simulator import SIGNALS
from stream.state import STATE_TOPIC_CONFIG, load_states

START_MS = 1_795_899_600_000


def snapshot_template(readings: int) -> bytes:
    """One pump's snapshot after ``readings`` readings through the real monitor (PCA)."""
    history = simulator(1, 3600, START_MS - 86_400_000, seed=1).generate()
    values, segments = history.by_asset()
    model = train_model(values, SIGNALS, segments=segments, scorer="pca", window=32)
    live = simulator(1, readings, START_MS, seed=2).generate()
    monitor = Monitor.from_settings(model, load_settings(env={}))
    batch = [
        SensorReading(
            "pump-0",
            int(live.ts_ms[t, 0]),
            dict(zip(SIGNALS, live.values[t, 0].tolist(), strict=True)),
        )
        for t in range(readings)
    ]
    for i in range(0, readings, 500):
        monitor.process(batch[i : i + 500], now_ms=START_MS)
    snap = monitor.snapshot_asset("pump-0")
    assert snap is not None
    return msgspec.json.encode(snap)


def fill(bootstrap: str, topic: str, template: bytes, assets: int, versions: int) -> float:
    """Write every asset's snapshot ``versions`` times; seconds taken."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": "50", "compression.type": "lz4"}
    )
    started = time.monotonic()
    for _ in range(versions):
        for a in range(assets):
            key = f"pump-{a:05d}".encode()
            while True:
                try:
                    producer.produce(topic, template, key)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} state records undelivered")
    return time.monotonic() - started


def measure(
    bootstrap: str, template: bytes, assets: int, versions: int, partitions: int
) -> dict[str, float]:
    topic = f"state-restore-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions, dict(STATE_TOPIC_CONFIG))
    fill_s = fill(bootstrap, topic, template, assets, versions)
    conf = {"bootstrap.servers": bootstrap}
    started = time.monotonic()
    states = load_states(conf, topic)
    all_s = time.monotonic() - started
    if len(states) != assets:
        raise RuntimeError(f"restored {len(states)} assets of {assets}")
    started = time.monotonic()
    part = load_states(conf, topic, partitions=[0])
    one_s = time.monotonic() - started
    mb = len(template) * assets * versions / 1e6
    return {
        "assets": assets,
        "records": assets * versions,
        "mb": mb,
        "fill_s": fill_s,
        "all_s": all_s,
        "one_s": one_s,
        "one_assets": len(part),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", default="1000,5000", help="comma-separated sizes")
    parser.add_argument("--versions", type=int, default=3, help="records per asset")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--readings", type=int, default=1200, help="per asset before its snapshot")
    args = parser.parse_args(argv)
    template = snapshot_template(args.readings)
    say(f"one asset's snapshot: {len(template):,} bytes")
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="plantwatch-restore-") as tmp,
        broker(Path(tmp)) as bootstrap,
    ):
        for n in (int(x) for x in args.assets.split(",") if x.strip()):
            rows.append(measure(bootstrap, template, n, args.versions, args.partitions))
            say(f"{n:,} assets: read in {rows[-1]['all_s']:.1f} s")
    print(
        f"snapshot {len(template):,} bytes per asset, {args.versions} records per asset, "
        f"{args.partitions} partitions\n"
    )
    print("| assets | records | MB | write s | restore all s | ms per asset | one partition s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['assets']:,} | {r['records']:,} | {r['mb']:,.0f} | {r['fill_s']:.1f} | "
            f"{r['all_s']:.1f} | {1000 * r['all_s'] / r['assets']:.2f} | "
            f"{r['one_s']:.1f} ({r['one_assets']:,} assets) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

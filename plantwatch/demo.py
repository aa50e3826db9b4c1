"""``plantwatch demo``: the whole product on one machine, in a few minutes.

1. a Kafka broker: the configured one if it answers, else ``plantwatch broker`` (local);
2. normal history from the simulator, written to a Parquet file;
3. a scorer trained on it (a real model artifact in the work folder);
4. the monitor, live, against the simulated plant with injected faults (one control asset
   never gets a fault), with a live terminal view and the metrics endpoint;
5. a summary read back from the alert topic: faults injected vs alerts raised, and the run
   as a self-contained HTML page (``report.html``: every asset's score, threshold, alerts and
   injected faults, and the alert table) with the first faulty asset's figure as
   ``report.png``, in the work folder.

The last line is ``summary: faults=N detected=M false_alerts=K median_delay_s=D``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from common.progress import Progress
from common.timestamps import parse_ts
from plantwatch.commands import training_progress
from plantwatch.settings import Settings, with_overrides
from stream.broker import free_port
from stream.files import read_table

log = logging.getLogger("plantwatch.demo")

EPILOG = """\
examples:
  plantwatch demo                              # about 4 minutes
  plantwatch demo --assets 10 --duration-s 300 --faults 8 --scorer conv-ae
  KAFKA_BOOTSTRAP_SERVERS=... is not read here: use --bootstrap-servers or the config.

Work files (history, model, fault labels, alerts, report.html, report.png) go to
--workdir (default .demo/).
"""

#: An alert opened this long after a fault ended still counts as detecting it (the
#: windows that reach past the fault's end are still abnormal).
MATCH_GRACE_MS = 30_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("--assets", type=int, default=6, help="simulated pumps (default 6)")
    p.add_argument("--faults", type=int, default=5, help="faults injected live (default 5)")
    p.add_argument("--duration-s", type=float, default=180.0, help="live phase (default 180)")
    p.add_argument("--period-ms", type=int, default=250, help="reading period per asset")
    p.add_argument("--history-s", type=float, default=3 * 3600.0, help="normal history to train on")
    p.add_argument("--scorer", default=None, help="model to train (default: the project default)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of a deep model")
    p.add_argument("--workdir", default=".demo", help="where work files go (default .demo)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    p.add_argument("--keep-broker", action="store_true", help="leave a started broker running")
    p.add_argument("--no-live", action="store_true", help="no live view, plain progress lines")


@dataclass
class Fault:
    asset: str
    kind: str
    start_ms: int
    end_ms: int


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "plantwatch.cli", *args]


def _broker_answers(settings: Settings, timeout_s: float = 3.0) -> bool:
    try:
        conf: dict[str, Any] = dict(settings.kafka.client_config())
        AdminClient(conf).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started_broker = False
    _step("1/5 Kafka broker")
    if _broker_answers(settings):
        print(f"using the broker at {settings.kafka.bootstrap_servers}")
    else:
        print("no broker answers there; starting a local one (first start downloads Kafka)")
        subprocess.run(_cli("broker", "start", "--background"), check=True)
        started_broker = True
        address = subprocess.run(
            _cli("broker", "address"), check=True, capture_output=True, text=True
        ).stdout.strip()
        settings = with_overrides(settings, {"kafka": {"bootstrap_servers": address}})
        print(f"broker ready at {address}")
    try:
        summary = _demo(args, settings, work)
    finally:
        if started_broker and not args.keep_broker:
            subprocess.run(_cli("broker", "stop"), check=False)
    # Last, after the broker's own goodbye: scripts read this line.
    print(summary)
    return 0


def _demo(args: argparse.Namespace, settings: Settings, work: Path) -> str:
    """Steps 2 to 5; returns the summary line."""
    from alerts.metrics import Metrics, start_http_server
    from plantwatch.backtest import train_table
    from plantwatch.runloop import RunLoop

    bootstrap = settings.kafka.bootstrap_servers
    run_id = uuid.uuid4().hex[:8]
    names = {
        name: f"plantwatch.demo-{run_id}.{name}"
        for name in ("sensors", "alerts", "dlq", "notices", "state")
    }
    port = free_port(preferred=settings.metrics.port)
    settings = with_overrides(
        settings,
        {
            "topics": names,
            "kafka": {"group_id": f"plantwatch-demo-{run_id}"},
            "metrics": {"port": port},
            "delivery": {"checkpoint_interval_s": 5.0},
        },
    )
    topics = settings.topics

    _step(f"2/5 simulating {args.history_s / 3600:.1f} h of normal history for {args.assets} pumps")
    history = work / "history.parquet"
    # One plant (same set-points and gains), two days of it: history, then the live run.
    common = [
        "--assets",
        str(args.assets),
        "--period-ms",
        str(args.period_ms),
        "--plant-seed",
        str(args.seed),
    ]
    subprocess.run(
        _cli(
            "simulate",
            *common,
            "--duration",
            str(args.history_s),
            "--faults",
            "0",
            "--seed",
            str(args.seed),
            "--out",
            str(history),
            "--quiet",
        ),
        check=True,
    )
    table = read_table(history)
    print(f"{len(table):,} readings, signals {', '.join(table.signals)}")

    _step("3/5 training")
    hyper: dict[str, Any] = {}
    if args.scorer:
        hyper["scorer"] = args.scorer
    if args.epochs:
        hyper["epochs"] = args.epochs

    model = train_table(
        table,
        settings,
        seed=args.seed,
        progress=training_progress(Progress("train", stream=sys.stdout)),
        data_summary={"source": str(history), "rows": len(table)},
        **hyper,
    )
    model_dir = model.save(work / f"model-{model.version}", overwrite=True)
    print(f"model {model.name} version {model.version} written to {model_dir}")

    _step(f"4/5 monitoring live for {args.duration_s:.0f} s with {args.faults} injected faults")
    metrics = Metrics.create(max_asset_series=settings.metrics.max_asset_series)
    server = start_http_server(metrics, settings.metrics.host, port)
    print(f"metrics: http://{settings.metrics.host}:{port}/metrics   alerts topic: {topics.alerts}")
    view = LiveView(model.signals, live=not args.no_live and sys.stdout.isatty())
    loop = RunLoop(settings, model, metrics, on_batch=view.update)
    errors: list[BaseException] = []

    def monitor() -> None:
        try:
            loop.run()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    thread = threading.Thread(target=monitor, name="plantwatch-monitor", daemon=True)
    thread.start()
    labels = work / "faults.csv"
    rate = args.assets * 1000.0 / args.period_ms
    sim = subprocess.Popen(
        _cli(
            "simulate",
            *common,
            "--rate",
            f"{rate:g}",
            "--duration",
            str(args.duration_s),
            "--faults",
            str(args.faults),
            "--control-assets",
            "1",
            "--seed",
            str(args.seed + 1),
            "--topic",
            topics.sensors,
            "--labels",
            str(labels),
            "--bootstrap-servers",
            bootstrap,
            "--quiet",
        )
    )
    try:
        while sim.poll() is None:
            view.render(loop)
            time.sleep(1.0)
            if errors:
                sim.terminate()
                raise RuntimeError(f"the monitor stopped: {errors[0]}") from errors[0]
        if sim.returncode != 0:
            raise RuntimeError(f"the simulator failed (exit {sim.returncode})")
        # Let the monitor drain what is left: done when no reading arrived for 3 s.
        seen, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 30.0
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 3.0:
            if loop.stats.readings != seen:
                seen, quiet_since = loop.stats.readings, time.monotonic()
            time.sleep(0.25)
    finally:
        loop.stop()
        thread.join(timeout=60)
        server.close()
        if sim.poll() is None:
            sim.terminate()
    view.render(loop, final=True)

    _step("5/5 summary (read back from the alert topic)")
    events = _read_alerts(settings, topics.alerts)
    faults = _read_faults(labels)
    report = summarise(faults, events)
    (work / "alerts.jsonl").write_bytes(b"\n".join(msgspec.json.encode(e) for e in events) + b"\n")
    for line in report.lines:
        print(line)
    page, png = write_pages(view, faults, events, report, work)
    if page is not None:
        print(f"report: {page} (self-contained HTML), {png} (PNG)")
    return (
        f"summary: faults={report.faults} detected={report.detected} "
        f"false_alerts={report.false_alerts} median_delay_s={report.median_delay_s}"
    )


class LiveView:
    """A terminal table of assets: latest score, threshold, alert state, alerts so far."""

    def __init__(self, signals: tuple[str, ...], *, live: bool) -> None:
        self.signals = signals
        self.live = live
        self.rows: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._last_plain = 0.0
        #: Per asset, every scored window: reading time, score, threshold, alert open
        #: (for the report page written at the end).
        self.history: dict[str, list[tuple[int, float, float, bool]]] = {}

    def update(self, outcome: Any, _stats: Any) -> None:
        scored = outcome.scored
        with self.lock:
            for j, asset in enumerate(scored.assets):
                self.history.setdefault(asset, []).append(
                    (
                        int(scored.ts_ms[j]),
                        float(scored.scores[j]),
                        float(scored.thresholds[j]),
                        bool(scored.alert_open[j]),
                    )
                )
            for j, asset in enumerate(scored.assets):
                row = self.rows.setdefault(asset, {"alerts": 0})
                row["score"] = float(scored.scores[j])
                row["threshold"] = float(scored.thresholds[j])
                row["open"] = bool(scored.alert_open[j])
                row["top"] = self.signals[int(scored.contributions[j].argmax())]
            for event in outcome.events:
                if event.event == "opened":
                    self.rows.setdefault(event.asset, {"alerts": 0})["alerts"] += 1

    def render(self, loop: Any, *, final: bool = False) -> None:
        stats = loop.stats
        elapsed = time.monotonic() - stats.started_s
        head = (
            f"readings {stats.readings:,}  rejected {stats.rejected}  windows {stats.windows:,}  "
            f"alert events {stats.events}  open {loop.monitor.open_alerts()}  "
            f"({stats.readings / max(elapsed, 1e-9):,.0f} readings/s)"
        )
        with self.lock:
            lines = [
                f"{'asset':<12} {'score':>9} {'threshold':>10}  "
                f"{'state':<6} {'alerts':>6}  top signal"
            ]
            for asset in sorted(self.rows):
                r = self.rows[asset]
                lines.append(
                    f"{asset:<12} {r.get('score', float('nan')):>9.3f} "
                    f"{r.get('threshold', float('nan')):>10.3f}  "
                    f"{'ALERT' if r.get('open') else 'ok':<6} {r['alerts']:>6}  {r.get('top', '')}"
                )
        if self.live and not final:
            sys.stdout.write("\x1b[H\x1b[2J" + head + "\n\n" + "\n".join(lines) + "\n")
            sys.stdout.flush()
        elif final or time.monotonic() - self._last_plain >= 15.0:
            self._last_plain = time.monotonic()
            print(head + ("\n" + "\n".join(lines) if final else ""), flush=True)


def write_pages(
    view: LiveView, faults: list[Fault], events: list[Any], report: Report, work: Path
) -> tuple[Path | None, Path | None]:
    """The live run as ``report.html`` (every asset) and ``report.png`` (the first asset
    with a fault): scores, thresholds, alerts, and the injected faults shaded."""
    import io

    import numpy as np

    from models.plot import backtest_figure
    from plantwatch.report import write_html

    with view.lock:
        history = {a: list(rows) for a, rows in view.history.items() if rows}
    if not history:
        return None, None
    figures: list[tuple[str, bytes]] = []
    faulty = {f.asset for f in faults}
    first = next((a for a in sorted(history) if a in faulty), sorted(history)[0])
    png_path = work / "report.png"
    for asset in sorted(history):
        ts, scores, thresholds, open_ = (np.asarray(c) for c in zip(*history[asset], strict=True))
        labels = np.zeros(ts.size, dtype=bool)
        for f in faults:
            if f.asset == asset:
                labels |= (ts >= f.start_ms) & (ts <= f.end_ms)
        kinds = sorted({f.kind for f in faults if f.asset == asset})
        title = f"{asset}: " + (", ".join(kinds) if kinds else "no fault injected")
        fig = backtest_figure(
            ts_ms=ts, signals={}, scores=scores, thresholds=thresholds,
            predictions=open_, labels=labels, title=title,
        )  # fmt: skip
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        figures.append((title, png.getvalue()))
        if asset == first:
            png_path.write_bytes(png.getvalue())
    summary = {
        "input": "the live simulated plant (plantwatch demo)",
        "rows": sum(len(r) for r in history.values()),
        "alert_events": len(events),
    }
    note = (
        f"faults injected {report.faults}, detected {report.detected}, false alerts "
        f"{report.false_alerts}, median delay {report.median_delay_s} s. Scores of every "
        "scored window as the monitor saw them live; injected faults shaded red, the time "
        "under an open alert in orange."
    )
    page = write_html(
        work / "report.html", title="plantwatch demo", summary=summary, events=events,
        figures=figures, note=note,
    )  # fmt: skip
    return page, png_path


def _read_alerts(settings: Settings, topic: str, *, idle_s: float = 3.0) -> list[Any]:
    from alerts.events import SCHEMA, decode_event

    conf = settings.kafka.consumer_config()
    conf.update(
        {
            "group.id": f"plantwatch-demo-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    events = []
    last = time.monotonic()
    deadline = time.monotonic() + 60.0
    try:
        while time.monotonic() - last < idle_s and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                value = msg.value()
                if msg.error() is not None or not value:
                    continue
                last = time.monotonic()
                # Drift notices share the topic; the schema header tells them apart.
                headers = dict(msg.headers() or [])
                if headers.get("schema", SCHEMA.encode()) == SCHEMA.encode():
                    events.append(decode_event(value))
    finally:
        consumer.close()
    return events


def _read_faults(path: Path) -> list[Fault]:
    faults: list[Fault] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if str(row.get("is_fault", "true")).lower() in ("false", "0"):
                continue
            faults.append(
                Fault(row["asset"], row["kind"], int(row["start_ms"]), int(row["end_ms"]))
            )
    return faults


@dataclass
class Report:
    faults: int
    detected: int
    false_alerts: int
    median_delay_s: float | None
    lines: list[str]


def summarise(faults: list[Fault], events: list[Any]) -> Report:
    """Match opened alerts to injected faults of the same asset (by detection time)."""
    opened = [e for e in events if e.event == "opened"]
    # Under at-least-once a replay may repeat an event: the alert id makes it one alert.
    unique = {e.alert_id: e for e in opened}
    used: set[str] = set()
    lines = [f"{'fault':<16} {'asset':<10} {'start':<25} {'detected after':>15}"]
    delays: list[float] = []
    detected = 0
    for f in sorted(faults, key=lambda f: f.start_ms):
        match = None
        for e in sorted(unique.values(), key=lambda e: parse_ts(e.window_at)):
            at = parse_ts(e.window_at)
            if e.asset == f.asset and f.start_ms <= at <= f.end_ms + MATCH_GRACE_MS:
                match = e
                break
        if match is None:
            lines.append(f"{f.kind:<16} {f.asset:<10} {_iso(f.start_ms):<25} {'missed':>15}")
            continue
        used.add(match.alert_id)
        detected += 1
        delay = (parse_ts(match.window_at) - f.start_ms) / 1000.0
        delays.append(delay)
        lines.append(f"{f.kind:<16} {f.asset:<10} {_iso(f.start_ms):<25} {delay:>13.1f} s")
    # Further alerts inside a fault already detected are not false: the same fault
    # re-opened after a quiet spell (e.g. intermittent cavitation).
    false_alerts = 0
    for e in unique.values():
        if e.alert_id in used:
            continue
        at = parse_ts(e.window_at)
        if any(
            f.asset == e.asset and f.start_ms <= at <= f.end_ms + MATCH_GRACE_MS for f in faults
        ):
            continue
        false_alerts += 1
        lines.append(f"false alert: {e.asset} at {e.window_at} (score {e.score:.3g})")
    median = round(statistics.median(delays), 1) if delays else None
    return Report(len(faults), detected, false_alerts, median, lines)


def _iso(ms: int) -> str:
    from common.timestamps import format_ts

    return format_ts(ms)

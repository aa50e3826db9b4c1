"""``plantwatch run`` as a subprocess, measured from its own /metrics (for ``e2e_broker.py``).

Each :class:`Monitor` is one process with its own consumer group, output topics and
metrics port, so runs on the same sensor topic never share state or offsets.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from stream.broker import free_port

#: Seconds without a change of the count after which a run is declared stuck.
STALL_S = 90.0


def say(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


def create_topic(
    bootstrap: str, name: str, partitions: int, config: dict[str, str] | None = None
) -> None:
    """Create ``name`` and wait until every partition has a leader that answers."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(name, partitions, 1, config=config or {})]
    ).values():
        future.result(timeout=30)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-probe"})
    deadline = time.monotonic() + 60
    try:
        for p in range(partitions):
            while True:
                try:
                    probe.get_watermark_offsets(TopicPartition(name, p), timeout=5)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
    finally:
        probe.close()


def scrape(port: int) -> dict[str, Any] | None:
    """``messages`` (all results), ``buckets`` of the e2e latency histogram, ``batches``
    (count and sum of consumed batch sizes) and ``checkpoints`` (per phase of the
    checkpoint: count and sum of seconds) of the ``/metrics`` on ``port``; None if the
    endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    messages = 0.0
    batches = {"count": 0.0, "sum": 0.0}
    buckets: dict[float, float] = {}
    checkpoints: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "plantwatch_messages_total":
                messages += sample.value
            elif sample.name == "plantwatch_e2e_latency_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == "plantwatch_batch_size_count":
                batches["count"] = sample.value
            elif sample.name == "plantwatch_batch_size_sum":
                batches["sum"] = sample.value
            elif sample.name in (
                "plantwatch_checkpoint_seconds_count",
                "plantwatch_checkpoint_seconds_sum",
            ):
                phase = checkpoints.setdefault(sample.labels["phase"], {"count": 0.0, "sum": 0.0})
                phase["count" if sample.name.endswith("_count") else "sum"] = sample.value
    return {
        "messages": messages,
        "buckets": buckets,
        "batches": batches,
        "checkpoints": checkpoints,
    }


@dataclass
class MonitorRun:
    readings: int
    rate: float
    rss_mb: float
    peak_rss_mb: float
    latency: dict[str, float] = field(default_factory=dict)


class Monitor:
    """One ``plantwatch run`` process on its own group, output topics and metrics port."""

    def __init__(
        self,
        bootstrap: str,
        model_dir: Path,
        topic: str,
        logdir: Path,
        *,
        sets: Sequence[str] = (),
        profile: Path | None = None,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.port = free_port()
        self.log_path = logdir / f"monitor-{tag}.log"
        prefix = [sys.executable]
        if profile is not None:
            prefix += ["-m", "cProfile", "-o", str(profile)]
        cmd = [
            *prefix,
            "-m",
            "plantwatch.cli",
            "run",
            "--model",
            str(model_dir),
            "--bootstrap-servers",
            bootstrap,
            "--group-id",
            f"e2e-{tag}",
            "--metrics-port",
            str(self.port),
            "--set",
            f'topics.sensors="{topic}"',
        ]
        for name in ("alerts", "dlq", "notices", "state", "labels"):
            cmd += ["--set", f'topics.{name}="e2e-{tag}.{name}"']
            # Created here, leaders awaited: on a topic created a moment before, reading
            # the state topic on assignment fails with NOT_LEADER_FOR_PARTITION (the
            # monitor's own ensure_topics does not wait; reported, not fixed here).
            config = {"cleanup.policy": "compact"} if name == "state" else None
            create_topic(bootstrap, f"e2e-{tag}.{name}", 3, config)
        for item in sets:
            cmd += ["--set", item]
        self.command = cmd
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def scrape(self) -> dict[str, Any] | None:
        """This process's /metrics, as :func:`scrape` reads them."""
        return scrape(self.port)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_has(self, text: str) -> bool:
        return text in self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.log_has("assigned partitions"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partitions assigned in {timeout_s:.0f} s: {self.tail()}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"plantwatch run exited {self.proc.returncode}: {self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def rss_mb(self) -> tuple[float, float]:
        """Resident and peak resident memory of the process, MB."""
        fields: dict[str, float] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = float(value.split()[0]) / 1024
        return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))

    def stop(self) -> None:
        """SIGINT: the run loop finishes its batch, checkpoints, commits and exits 0."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"plantwatch run did not stop on SIGINT: {self.tail()}") from None
        finally:
            self._log.close()
        if code != 0:
            raise RuntimeError(f"plantwatch run exited {code} after SIGINT: {self.tail()}")
        if not self.log_has("stopped after"):
            raise RuntimeError(f"plantwatch run did not say it stopped cleanly: {self.tail()}")


def drain_rate(mon: Monitor, expected: int) -> tuple[int, float]:
    """Poll /metrics until ``expected`` messages are counted: (counted, readings/s).

    The rate runs from the first change of the count to the last, so start-up (imports,
    group join, state topic read) is left out, as it is for the River reference.
    """
    changes: list[tuple[float, float]] = []
    last_change = time.monotonic()
    while True:
        mon.check_alive()
        got = mon.scrape()
        now = time.monotonic()
        if got is not None and (not changes or got["messages"] != changes[-1][1]):
            changes.append((now, got["messages"]))
            last_change = now
            if got["messages"] >= expected:
                break
        if now - last_change > STALL_S + (60 if not changes else 0):
            raise RuntimeError(f"stuck at {changes[-1:]} of {expected}: {mon.tail()}")
        time.sleep(0.05)
    (t0, n0), (t1, n1) = changes[0], changes[-1]
    return int(n1), (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def measure_monitor(
    bootstrap: str,
    model_dir: Path,
    topic: str,
    expected: int,
    logdir: Path,
    sets: Sequence[str],
    profile: Path | None = None,
) -> MonitorRun:
    mon = Monitor(bootstrap, model_dir, topic, logdir, sets=sets, profile=profile)
    try:
        counted, rate = drain_rate(mon, expected)
        rss, peak = mon.rss_mb()
    finally:
        mon.stop()
    return MonitorRun(counted, rate, rss, peak)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket the quantile falls in.

    >>> histogram_quantile(0.5, {0.1: 0.0, 0.2: 10.0, float("inf"): 10.0})
    0.15000000000000002
    """
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def quantile_bucket(q: float, buckets: dict[float, float]) -> tuple[float, float]:
    """The bucket ``(lower, upper]`` the ``q`` quantile falls in: all a histogram knows.

    >>> quantile_bucket(0.99, {0.1: 0.0, 0.25: 95.0, 1.0: 100.0, float("inf"): 100.0})
    (0.25, 1.0)
    """
    total = buckets.get(float("inf"), 0.0)
    lower = 0.0
    for le in sorted(buckets):
        if total > 0 and buckets[le] >= q * total:
            return lower, le
        lower = le
    return float("nan"), float("nan")

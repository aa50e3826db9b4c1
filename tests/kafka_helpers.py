"""Shared pieces of the integration tests: a trained model, a monitor thread, reading topics."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
from confluent_kafka import Consumer

from alerts.events import SCHEMA, AlertEvent, decode_event
from alerts.metrics import Metrics
from common.timestamps import parse_ts
from models.artifact import TrainedModel
from models.quality.artifact import QualityModel
from models.training import train_model
from plantwatch.monitor import Outcome
from plantwatch.runloop import LoopStats, RunLoop
from plantwatch.settings import Settings, load_settings
from stream.simulator import PlantSimulator, SimConfig

PLANT_SEED = 21
#: Simulated time starts here; history is the day before.
LIVE_START_MS = 1_795_899_600_000


def settings_for(bootstrap: str, topics: dict[str, str], **sections: dict[str, Any]) -> Settings:
    if "sensors" in topics and "commands" not in topics:
        # Each test its own operator commands topic, created by the run loop partitioned
        # like its sensors topic (a shared default one would carry commands across tests).
        topics = {**topics, "commands": f"{topics['sensors']}-commands"}
    overrides: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"test-{uuid.uuid4().hex[:8]}"},
        "topics": topics,
        "consumer": {"batch_wait_ms": 100},
        "delivery": {"checkpoint_interval_s": 1.0},
        "metrics": {"enabled": False},
    }
    overrides.update(sections)
    return load_settings(env={}, overrides=overrides)


def kafka_with_lag_stats(bootstrap: str, group_id: str) -> dict[str, Any]:
    """A ``kafka`` settings section with librdkafka statistics (the consumer lag gauge)
    every second instead of every 5 s."""
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "properties": {"statistics.interval.ms": "1000"},
    }


def faulty_plant(n_assets: int, duration_s: int, *, seed: int = 4) -> PlantSimulator:
    """The plant with three clearly detectable faults (level shift, cavitation, bearing
    wear, 2 to 5 minutes each, after a 5 minute warm-up) and one fault-free control asset."""
    return PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=1000,
            start_ms=LIVE_START_MS,
            duration_s=duration_s,
            seed=seed,
            plant_seed=PLANT_SEED,
            faults=3,
            control_assets=1,
            fault_kinds=("level_shift", "cavitation", "bearing_wear"),
            fault_duration_s=(120.0, 300.0),
            warmup_s=300.0,
        )
    )


def alert_events(
    bootstrap: str, topic: str, *, config: Mapping[str, str] | None = None
) -> list[AlertEvent]:
    """Every alert event on ``topic`` (read_committed), in order."""
    return [
        decode_event(m.value())
        for m in read_topic(bootstrap, topic, config=config)
        if dict(m.headers() or []).get("schema", SCHEMA.encode()) == SCHEMA.encode()
    ]


def unalerted_faults(
    sim: PlantSimulator, events: list[AlertEvent], max_delay_ms: int
) -> list[tuple[str, str]]:
    """(kind, asset) of each fault with no ``opened`` event within ``max_delay_ms`` of it."""
    return [
        (fault.kind, fault.asset)
        for fault in sim.faults
        if not any(
            e.event == "opened"
            and e.asset == fault.asset
            and fault.start_ms <= parse_ts(e.window_at) <= fault.start_ms + max_delay_ms
            for e in events
        )
    ]


def trained_model(n_assets: int, *, hours: float = 24.0, period_ms: int = 1000) -> TrainedModel:
    """A PCA model on normal history of the same simulated plant."""
    sim = PlantSimulator(
        SimConfig(
            n_assets=n_assets,
            period_ms=period_ms,
            start_ms=LIVE_START_MS - int(hours * 3_600_000),
            duration_s=hours * 3600,
            seed=1,
            plant_seed=PLANT_SEED,
        )
    )
    values, segments = sim.generate().by_asset()
    from stream.simulator import SIGNALS

    return train_model(values, SIGNALS, segments=segments, scorer="pca", window=32)


def start_loop(loop: RunLoop) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``loop`` in a daemon thread; what it raises lands in the returned list."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


@contextmanager
def running_monitor(
    settings: Settings,
    model: TrainedModel,
    metrics: Metrics | None = None,
    quality_models: Sequence[QualityModel] = (),
    *,
    on_batch: Callable[[Outcome, LoopStats], None] | None = None,
) -> Iterator[RunLoop]:
    """``plantwatch run``'s loop in a thread; stopped (checkpoint, commit, close) on exit."""
    loop = RunLoop(
        settings,
        model,
        metrics or Metrics.create(),
        on_batch=on_batch,
        quality_models=quality_models,
    )
    thread, errors = start_loop(loop)
    try:
        yield loop
    finally:
        loop.stop()
        thread.join(timeout=60)
        if errors:
            raise errors[0]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def read_topic(
    bootstrap: str,
    topic: str | Sequence[str],
    *,
    config: Mapping[str, str] | None = None,
    expect: int | None = None,
    idle_s: float = 3.0,
    timeout_s: float = 60.0,
) -> list[Any]:
    """Every message of ``topic`` (or of several) from the start (until ``expect`` are read,
    or idle); ``config`` adds client settings (a secured listener's)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            **(config or {}),
        }
    )
    consumer.subscribe([topic] if isinstance(topic, str) else list(topic))
    out: list[Any] = []
    last = time.monotonic()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            if expect is None and out and time.monotonic() - last > idle_s:
                break
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    out.append(msg)
                    last = time.monotonic()
    finally:
        consumer.close()
    return out


def decode_json(value: bytes | None) -> Any:
    return msgspec.json.decode(value or b"null")

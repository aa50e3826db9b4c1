"""The Kafka sink: a run to the readings topic (key = asset), labels optionally to theirs.

Every message goes through :class:`common.delivery.TrackedProducer`, the delivery loop the
alert publisher uses too: a full local queue is waited out, a refused message is recorded,
every delivery report is checked, and :class:`DeliveryError` names what did not arrive.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaException

from common import delivery
from common.delivery import TrackedProducer
from common.progress import Progress
from stream.schema import encode_reading
from stream.simulator.config import SIGNALS
from stream.simulator.generator import PlantSimulator
from stream.simulator.labels import write_labels
from stream.simulator.summary import RunSummary, started_labels, summarize


class DeliveryError(delivery.DeliveryError):
    """Some readings or labels were not acknowledged by the broker."""

    fatal_advice = "run the simulator again"
    consequence = (
        "Check that the broker is up and the topic exists (or that the broker auto-creates topics)."
    )


class KafkaUnreachableError(RuntimeError):
    """No broker answered before the run started, so nothing was sent."""


def producer_config(client_config: Mapping[str, str]) -> dict[str, str]:
    """The client config plus what the simulator needs: idempotence (ordered, no
    duplicates per asset), a little batching and lz4 (overridable)."""
    conf = dict(client_config)
    conf.setdefault("linger.ms", "20")
    conf.setdefault("compression.type", "lz4")
    conf["enable.idempotence"] = "true"
    return conf


def produce(
    sim: PlantSimulator,
    client_config: Mapping[str, str],
    topic: str,
    *,
    labels_topic: str | None = None,
    labels_path: str | Path | None = None,
    pace: bool = True,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    flush_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
) -> RunSummary:
    """Send the run to Kafka: key = asset, value = the DESIGN's reading JSON.

    With ``pace`` each step is sent when its time comes (``period_ms`` apart), so the total
    rate is ``n_assets / period``; otherwise as fast as the producer takes them. A label
    goes to ``labels_topic`` (key = asset) when its event's first reading is sent. Every
    delivery report is checked; :class:`DeliveryError` after the final flush if any
    message was not acknowledged (the labels file is written first), and
    :class:`KafkaUnreachableError` before the run if no broker answers.
    """
    conf = producer_config(client_config)
    # A queue that stays full as long as a flush may wait means the broker is not keeping up.
    out = TrackedProducer(conf, queue_full_timeout_s=flush_timeout_s, error_type=DeliveryError)
    where = conf.get("bootstrap.servers", "?")
    try:
        out.producer.list_topics(timeout=connect_timeout_s)
    except KafkaException as exc:
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {where} within {connect_timeout_s:g} s ({exc}); start one "
            "with `plantwatch broker start`, or pass --bootstrap-servers HOST:PORT"
        ) from exc
    keys = [a.encode() for a in sim.assets]
    labels = list(sim.labels)
    next_label = 0
    n_a = sim.config.n_assets
    period_s = sim.config.period_s
    if pace:
        per_chunk = max(1, min(math.ceil(0.5 / period_s), max(1, 50_000 // n_a)))
    else:
        per_chunk = max(1, 50_000 // n_a)

    started = time.monotonic()
    steps = 0
    interrupted = False
    failure: DeliveryError | None = None
    try:
        for chunk in sim.chunks(per_chunk):
            rows = chunk.values.tolist()
            stamps = chunk.ts_ms.tolist()
            for t in range(chunk.n_steps):
                step = chunk.start_step + t
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
                if pace:
                    wait_s = started + step * period_s - time.monotonic()
                    if wait_s > 0.001:
                        if stop is not None:
                            stop.wait(wait_s)
                        else:
                            time.sleep(wait_s)
                while next_label < len(labels) and labels[next_label].start_step <= step:
                    label = labels[next_label]
                    if labels_topic is not None:
                        out.produce(labels_topic, label.asset.encode(), label.to_json())
                    next_label += 1
                row, stamp = rows[t], stamps[t]
                for a in range(n_a):
                    value = encode_reading(
                        sim.assets[a], stamp[a], dict(zip(SIGNALS, row[a], strict=True))
                    )
                    out.produce(topic, keys[a], value)
                steps += 1
                out.poll(0)
                if progress is not None:
                    progress.update(steps * n_a)
            if interrupted:
                break
    finally:
        # The flush's verdict waits until the labels file is written: it says which events
        # the readings sent so far cover, delivered or not.
        try:
            out.flush(flush_timeout_s)
        except DeliveryError as exc:
            failure = exc
        out.close(timeout_s=0)
        if progress is not None:
            progress.close()
    if labels_path is not None:
        write_labels(labels_path, started_labels(sim.labels, steps))
    if failure is not None:
        raise failure
    target = f"topic {topic}"
    label_target = f"topic {labels_topic}" if labels_topic else None
    if labels_path is not None:
        file_target = str(labels_path)
        label_target = f"{label_target} and {file_target}" if label_target else file_target
    return summarize(sim, steps, time.monotonic() - started, target, label_target, interrupted)

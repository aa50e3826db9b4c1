"""The sections of the settings that belong to moving data: Kafka, topics, consumer,
windows, delivery.

They are composed with the other rooms' sections into one ``Settings`` by
``plantwatch/settings.py``, which also loads files and the environment. Kafka client
properties (SASL, SSL, …) pass through to librdkafka untouched; secrets never show in a
``repr``.

>>> k = KafkaSettings(properties={"sasl.password": "hunter2", "sasl.mechanism": "PLAIN"})
>>> "hunter2" in repr(k), k.client_config()["sasl.password"]
(False, 'hunter2')
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from common.config import Config

#: The gap limit for models that carry no measured sampling interval.
LEGACY_MAX_GAP_MS = 60_000
_SECRET_WORDS = ("password", "secret", "token", "key", "credential", "jaas")


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS) and not lowered.endswith(
        ("location", ".endpoint.identification.algorithm")
    )


#: librdkafka properties plantwatch sets itself because its delivery guarantees rest on
#: them (name → why). ``kafka.properties`` may not set them: a setting is refused when the
#: configuration loads, by name, rather than forced with a warning that scrolls away, so
#: what runs is what the file says. ``isolation.level`` may be set to the value needed.
MANAGED_PROPERTIES: dict[str, str] = {
    "enable.auto.commit": (
        "offsets are committed by plantwatch only after everything a batch caused is "
        "delivered and its state checkpointed"
    ),
    "enable.auto.offset.store": "offsets are stored by plantwatch only for processed batches",
    "partition.assignment.strategy": (
        "the state checkpoint on revocation assumes the eager range assignment"
    ),
    "group.protocol": "the state checkpoint on revocation assumes the classic group protocol",
    "transactional.id": (
        "it would make every producer transactional; set delivery.transactional_id "
        '(with delivery.mode = "exactly_once") instead'
    ),
    "isolation.level": (
        "only read_committed is accepted: read_uncommitted would restore per-asset state "
        "written by aborted transactions"
    ),
}
_ACCEPTED = {"isolation.level": "read_committed"}


class KafkaSettings(Config, frozen=True, kw_only=True):
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "plantwatch"
    client_id: str = "plantwatch"
    #: librdkafka properties passed through untouched (security.protocol, sasl.*, ssl.*, …),
    #: except the few in ``MANAGED_PROPERTIES`` that plantwatch sets itself.
    properties: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.properties.items():
            key = name.strip().lower()
            why = MANAGED_PROPERTIES.get(key)
            if why is None or _ACCEPTED.get(key) == str(value).strip().lower():
                continue
            # The key is named, never the value: the same table holds the secrets.
            raise ValueError(
                f"kafka.properties.{key} cannot be set: plantwatch sets it itself ({why}); "
                "remove it"
            )

    def client_config(self) -> dict[str, str]:
        """The librdkafka dict for a producer or an admin client (no group id)."""
        conf = {"bootstrap.servers": self.bootstrap_servers, "client.id": self.client_id}
        conf.update(self.properties)
        return conf

    def consumer_config(self) -> dict[str, str]:
        conf = self.client_config()
        conf["group.id"] = self.group_id
        return conf

    def __repr__(self) -> str:
        # Never print a secret, even by accident in a log line or a traceback.
        shown = {k: ("***" if _is_secret(k) else v) for k, v in self.properties.items()}
        return (
            f"KafkaSettings(bootstrap_servers={self.bootstrap_servers!r}, "
            f"group_id={self.group_id!r}, client_id={self.client_id!r}, properties={shown!r})"
        )

    __str__ = __repr__


class TopicSettings(Config, frozen=True, kw_only=True):
    sensors: str = "plantwatch.sensors"
    alerts: str = "plantwatch.alerts"
    dlq: str = "plantwatch.dlq"
    #: What the monitor says about itself: drift, re-baselining (``plantwatch.notice/v1``).
    notices: str = "plantwatch.notices"
    #: Compacted changelog of per-asset state (windows, thresholds, alert state).
    state: str = "plantwatch.state"
    labels: str = "plantwatch.labels"
    #: Quality (soft-sensor) predictions, keyed by asset (``plantwatch.quality/v1``).
    quality: str = "plantwatch.quality"
    #: Lab results (asset, ts, target, value), keyed by asset: consumed beside the
    #: readings when quality models are served, joined to the predictions.
    lab: str = "plantwatch.lab"
    #: Operator commands (``plantwatch.command/v1``: ack, shelve, unshelve, maintenance),
    #: keyed by asset, consumed beside the readings by the same consumer.
    commands: str = "plantwatch.commands"


class ConsumerSettings(Config, frozen=True, kw_only=True):
    """How readings are consumed: one model call per batch of up to ``batch_size``."""

    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 2000
    #: The longest ``consume()`` waits for a full batch. A backlog fills batches at once
    #: whatever this is; a live stream's readings each wait up to this long before their
    #: batch starts, so it is a floor under the end-to-end latency. 20 ms by measurement
    #: (docs/BENCHMARKS.md): p50 at half the maximum rate 1.3-3x lower than with 200 ms.
    batch_wait_ms: Annotated[int, msgspec.Meta(ge=0)] = 20
    #: Larger messages go to the dead-letter topic as ``oversize``.
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 * 1024
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    #: A reading stamped further ahead of now than this (the consumer's clock, or the
    #: broker's append time if later) goes to the dead-letter topic as
    #: ``future_timestamp``; kept, it would make every later reading of its asset late.
    #: ``None``: no check. File replays (``backtest``) never apply it.
    max_future_ms: Annotated[int, msgspec.Meta(ge=0)] | None = 60_000


class WindowSettings(Config, frozen=True, kw_only=True):
    """Per-asset windowing; the window length itself comes from the model artifact.

    Time rules are in multiples of the asset's own sampling interval (measured at training
    and kept in the artifact), so 10 ms, 1 s and 5 min data run on the same defaults. Readings
    of an asset are put in time order within each consumed batch; one older than the asset's
    newest reading of an earlier batch is dropped and counted as ``late``.

    >>> WindowSettings().gap_limit_ms(1000.0), WindowSettings().gap_limit_ms(300_000.0)
    (20000, 6000000)
    >>> WindowSettings(max_gap_ms=60_000).gap_limit_ms(300_000.0)
    60000
    """

    #: Score every ``stride``-th reading's window.
    stride: Annotated[int, msgspec.Meta(ge=1)] = 1
    #: Readings a missing value may be carried forward before the window is not scored.
    stale_limit: Annotated[int, msgspec.Meta(ge=0)] = 5
    #: A gap longer than this many sampling intervals restarts the asset's window (and
    #: splits the history in training): a window must not join two runs of the machine.
    max_gap_intervals: Annotated[float, msgspec.Meta(gt=1)] = 20.0
    #: The same as an absolute time, over ``max_gap_intervals`` when set.
    max_gap_ms: Annotated[int, msgspec.Meta(gt=0)] | None = None
    #: Assets not heard from for this long (of reading time) leave memory; their state
    #: stays checkpointed and is restored when they speak again. 0 keeps every asset.
    idle_evict_ms: Annotated[int, msgspec.Meta(ge=0)] = 6 * 3_600_000

    def gap_limit_ms(self, interval_ms: float | None) -> int:
        """The longest gap a window may span, for an asset sampled every ``interval_ms``.

        Without a known interval (a model trained before intervals were measured) the
        limit is one minute, the old fixed default.
        """
        if self.max_gap_ms is not None:
            return self.max_gap_ms
        if interval_ms is None:
            return LEGACY_MAX_GAP_MS
        return max(1, math.ceil(self.max_gap_intervals * interval_ms))


class DeliverySettings(Config, frozen=True, kw_only=True):
    """How alerts and state reach the broker, and how often offsets are committed."""

    mode: Literal["at_least_once", "exactly_once"] = "at_least_once"
    #: Exactly-once: stable per process across restarts (default: group id + host name).
    transactional_id: str | None = None
    flush_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    checkpoint_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: At-least-once: how long a flush whose messages are still in flight (none refused)
    #: and a commit refused for a retriable reason (the broker or the group coordinator
    #: unreachable) keep waiting before the monitor gives up and exits. Under librdkafka's
    #: ``message.timeout.ms`` (300 s by default), which would fail the messages itself.
    outage_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 240.0

"""The plant alert lifecycle on the real broker (issue 13, item 3, Done means): a running
monitor fed readings with a known fault, and operator commands on their own topic.

(a) a ``maintenance_start`` command suppresses the alert during the window, with notices;
(b) readings whose mode signal says stopped raise no alert, one follows once the asset runs
    and its start-up grace is over;
(c) an ``ack`` produces the acknowledged event exactly once, and the acknowledgement
    survives a restart of the monitor (state topic).
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from alerts.events import AlertEvent
from alerts.metrics import Metrics
from alerts.notices import decode_notice
from common.timestamps import format_ts, parse_ts
from plantwatch.runloop import RunLoop
from stream.operator import encode_command
from stream.schema import SensorReading, encode_reading
from stream.source import DLQ_REASON
from tests.conftest import TopicFactory
from tests.kafka_helpers import alert_events, read_topic, running_monitor, settings_for, wait_for
from tests.test_lifecycle import ASSET, STEP, T0, model, readings

pytestmark = pytest.mark.integration

ALERT = {"k": 3, "n": 5, "m": 10, "cooldown_ms": 0}


def _topics(new_topic: TopicFactory) -> dict[str, str]:
    names = ("sensors", "alerts", "dlq", "state", "notices", "commands")
    return {p: new_topic(p, partitions=1) for p in names}


def _send(producer: Producer, topic: str, batch: list[SensorReading]) -> None:
    for r in batch:
        producer.produce(topic, encode_reading(r.asset, r.ts_ms, r.values), r.asset)
    producer.flush(30)


def _command(producer: Producer, topic: str, command: str, **kw: Any) -> None:
    producer.produce(topic, encode_command(command, ASSET, **kw), ASSET)
    producer.flush(30)


def _fed(loop: RunLoop, n: int, what: str) -> None:
    wait_for(lambda: loop.stats.readings >= n, 90, what)


def test_a_maintenance_command_suppresses_the_alert_and_notices_mark_the_window(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topics = _topics(new_topic)
    settings = settings_for(kafka_bootstrap, topics, alert=ALERT)
    metrics = Metrics.create(CollectorRegistry())
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    with running_monitor(settings, model(), metrics) as loop:
        _send(producer, topics["sensors"], readings(0, 200))
        _fed(loop, 200, "the normal readings")
        _command(producer, topics["commands"], "maintenance_start", at_ms=T0 + 200 * STEP,
                 until_ms=T0 + 600 * STEP, by="ops", note="seal change")  # fmt: skip
        wait_for(lambda: loop.stats.commands >= 1, 60, "the maintenance command")
        # A fault inside the window (300..500 s) and one after it (700..800 s).
        faults = set(range(300, 500)) | set(range(700, 800))
        _send(producer, topics["sensors"], readings(200, 700, fault=faults))
        _fed(loop, 900, "the readings through and after the window")
        get = metrics.registry.get_sample_value
        suppressed = get("plantwatch_readings_suppressed_total", {"reason": "maintenance"})
        applied = get(
            "plantwatch_commands_total", {"command": "maintenance_start", "result": "applied"}
        )
    events = alert_events(kafka_bootstrap, topics["alerts"])
    opened = [e for e in events if e.event == "opened"]
    assert len(opened) == 1, [(e.event, e.started_at) for e in events]
    assert parse_ts(opened[0].started_at) >= T0 + 700 * STEP
    notices = [decode_notice(m.value()) for m in read_topic(kafka_bootstrap, topics["notices"])]
    window = [(n.notice, n.at) for n in notices if n.notice.startswith("maintenance")]
    assert window == [
        ("maintenance_started", format_ts(T0 + 200 * STEP)),
        ("maintenance_ended", format_ts(T0 + 600 * STEP)),
    ]
    assert notices[0].detail["by"] == "ops" and notices[0].detail["note"] == "seal change"
    assert suppressed == 400 and applied == 1


def test_a_stopped_asset_raises_no_alert_and_a_running_one_does_after_its_grace(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topics = _topics(new_topic)
    mode = {"signal": "run", "running_above": 0.5, "startup_grace_ms": 60_000}
    settings = settings_for(kafka_bootstrap, topics, alert=ALERT, operating_mode=mode)
    fault = range(100, 450)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    with running_monitor(settings, model()) as loop:
        _send(producer, topics["sensors"], readings(0, 100, run=1.0))
        # Stopped from 100 s, with the fault: nothing is alerted.
        _send(producer, topics["sensors"], readings(100, 200, run=0.0, fault=fault))
        _fed(loop, 300, "the readings while stopped")
        assert alert_events(kafka_bootstrap, topics["alerts"]) == []
        # Started at 300 s: starting up until 360 s, then running with the fault on.
        _send(producer, topics["sensors"], readings(300, 200, run=1.0, fault=fault))
        _fed(loop, 500, "the readings once running")
        wait_for(lambda: loop.stats.events >= 1, 30, "an alert after the grace")
    events = alert_events(kafka_bootstrap, topics["alerts"])
    opened = [e for e in events if e.event == "opened"]
    assert len(opened) == 1
    assert parse_ts(opened[0].started_at) >= T0 + 360 * STEP
    notices = [decode_notice(m.value()) for m in read_topic(kafka_bootstrap, topics["notices"])]
    assert [(n.detail["mode"], n.at) for n in notices if n.notice == "operating_mode"] == [
        ("stopped", format_ts(T0 + 100 * STEP)),
        ("startup", format_ts(T0 + 300 * STEP)),
        ("running", format_ts(T0 + 360 * STEP)),
    ]


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_an_ack_is_published_once_and_survives_a_restart(
    kafka_bootstrap: str, new_topic: TopicFactory, mode: str
) -> None:
    topics = _topics(new_topic)
    settings = settings_for(kafka_bootstrap, topics, alert=ALERT, delivery={
        "checkpoint_interval_s": 1.0, "mode": mode})  # fmt: skip
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    fault = range(150, 400)
    metrics = Metrics.create(CollectorRegistry())
    with running_monitor(settings, model(), metrics) as loop:
        _send(producer, topics["sensors"], readings(0, 200, fault=fault))
        wait_for(lambda: loop.stats.events >= 1, 90, "the alert")
        [alert_id] = {e.alert_id for e in alert_events(kafka_bootstrap, topics["alerts"])}
        for target in (alert_id, alert_id, "0" * 32):  # twice, then an unknown alert
            _command(producer, topics["commands"], "ack", alert_id=target,
                     at_ms=T0 + 200 * STEP, by="j.smith", note="on it")  # fmt: skip
        wait_for(lambda: loop.stats.commands >= 3, 60, "the ack commands")
        get = metrics.registry.get_sample_value
        counted = {
            result: get("plantwatch_commands_total", {"command": "ack", "result": result})
            for result in ("applied", "duplicate", "unknown_alert")
        }
        acknowledged = get("plantwatch_alerts_acknowledged")
    assert counted == {"applied": 1, "duplicate": 1, "unknown_alert": 1}
    assert acknowledged == 1
    acked = _acknowledged(alert_events(kafka_bootstrap, topics["alerts"]))
    assert len(acked) == 1
    assert (acked[0].acknowledged_by, acked[0].acknowledged_at) == (
        "j.smith", format_ts(T0 + 200 * STEP)
    )  # fmt: skip
    [dead] = read_topic(kafka_bootstrap, topics["dlq"])
    assert dict(dead.headers())[DLQ_REASON] == b"unknown_alert"

    # Restarted: the acknowledgement comes back from the state topic. A replayed ack is a
    # duplicate, and the alert's later events (its resolve) still carry it.
    with running_monitor(settings, model()) as loop:
        _command(producer, topics["commands"], "ack", alert_id=alert_id,
                 at_ms=T0 + 300 * STEP, by="someone else")  # fmt: skip
        _send(producer, topics["sensors"], readings(200, 300, fault=fault))
        _fed(loop, 300, "the readings after the restart")
        _resolved(kafka_bootstrap, topics["alerts"])
    events = alert_events(kafka_bootstrap, topics["alerts"])
    assert len(_acknowledged(events)) == 1
    after = events[events.index(_acknowledged(events)[0]) :]
    assert after[-1].event == "resolved" and after[-1].alert_id == alert_id
    assert {(e.acknowledged_by, e.acknowledged_at) for e in after} == {
        ("j.smith", format_ts(T0 + 200 * STEP))
    }


def _resolved(bootstrap: str, topic: str) -> None:
    """Wait until an alert's ``resolved`` event is on the alert topic."""
    wait_for(
        lambda: any(e.event == "resolved" for e in alert_events(bootstrap, topic)),
        60,
        "the resolve",
    )


def _acknowledged(events: list[AlertEvent]) -> list[AlertEvent]:
    return [e for e in events if e.reason.startswith("acknowledged")]


def test_a_shelved_alert_stays_quiet_across_a_restart_and_is_announced_when_it_ends(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    """A ``shelve`` over the commands topic: the shelved event goes out at once, the alert's
    updates are withheld until its end (reading time), also after a restart in between (the
    shelving is in the state topic), then it is announced again and resolves under its id."""
    topics = _topics(new_topic)
    settings = settings_for(kafka_bootstrap, topics, alert=ALERT,
                            delivery={"checkpoint_interval_s": 1.0})  # fmt: skip
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    fault = range(150, 650)
    until = T0 + 450 * STEP
    with running_monitor(settings, model()) as loop:
        _send(producer, topics["sensors"], readings(0, 200, fault=fault))
        wait_for(lambda: loop.stats.events >= 1, 90, "the alert")
        [alert_id] = {e.alert_id for e in alert_events(kafka_bootstrap, topics["alerts"])}
        _command(producer, topics["commands"], "shelve", alert_id=alert_id,
                 at_ms=T0 + 200 * STEP, until_ms=until, by="ops", note="known leak")  # fmt: skip
        wait_for(lambda: loop.stats.commands >= 1, 60, "the shelve command")
        _send(producer, topics["sensors"], readings(200, 100, fault=fault))
        _fed(loop, 300, "readings while shelved")
    events = alert_events(kafka_bootstrap, topics["alerts"])
    shelved = [e for e in events if e.shelved_until is not None]
    assert [(e.alert_id, e.shelved_until, e.shelved_by) for e in shelved][:1] == [
        (alert_id, format_ts(until), "ops")
    ]
    before_restart = len(events)

    with running_monitor(settings, model()) as loop:
        _send(producer, topics["sensors"], readings(300, 500, fault=fault))
        _fed(loop, 500, "the readings after the restart")
        _resolved(kafka_bootstrap, topics["alerts"])
    events = alert_events(kafka_bootstrap, topics["alerts"])
    assert {e.alert_id for e in events} == {alert_id}
    later = events[before_restart:]
    # Nothing of the alert between the restart and the end of its shelving.
    quiet = [e for e in later if parse_ts(e.window_at) < until]
    assert quiet == [], [(e.event, e.window_at, e.reason) for e in quiet]
    # The first event past the end says the shelving ended: an announcement while the alert
    # is still open, or its resolve when the backlog went through in one batch.
    assert later and all(e.shelved_until is None for e in later)
    assert later[0].reason.startswith(f"shelving ended at {format_ts(until)}")
    assert later[-1].event == "resolved" and parse_ts(later[-1].window_at) >= T0 + 650 * STEP

"""The plant alert lifecycle on the pure core (issue 13, item 3): maintenance windows,
operating-mode suppression, acknowledgement and shelving, with no broker.

A two-signal PCA model learns ``b = 2a``; a fault breaks the relation (``b = 2a + 3``), so
it is alerted within a few windows wherever it is judged.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec
import numpy as np
import pytest

from alerts.events import AlertEvent
from alerts.policy import AlertConfig, AlertPolicy, Decision
from common.reasons import Reason
from common.timestamps import format_ts, parse_ts
from models.artifact import TrainedModel
from models.training import train_model
from plantwatch.backtest import replay
from plantwatch.lifecycle import MaintenanceConfig, MaintenanceWindow, OperatingModeConfig
from plantwatch.monitor import Monitor, Outcome
from plantwatch.settings import load_settings
from stream.files import Table
from stream.operator import OperatorCommand
from stream.schema import Rejection, SensorReading

T0 = 1_795_899_600_000  # 2026-11-28T21:00:00Z
STEP = 1000
ASSET = "pump-1"
ALERT = AlertConfig(k=3, n=5, m=10, cooldown_ms=0)


@cache
def model() -> TrainedModel:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 1))
    history = np.hstack([x, 2 * x]) + rng.normal(0, 0.05, (3000, 2))
    return train_model(history, ("a", "b"), window=8, scorer="pca")


def readings(
    start: int, n: int, *, fault: Container[int] = range(0), run: float | None = None, seed: int = 1
) -> list[SensorReading]:
    """``n`` readings a second from reading ``start``; those in ``fault`` broken; ``run``
    the value of the mode signal, when given."""
    rng = np.random.default_rng(seed + start)
    out = []
    for i in range(start, start + n):
        a = float(rng.normal())
        b = 2 * a + float(rng.normal(0, 0.05)) + (3.0 if i in fault else 0.0)
        values: dict[str, float | None] = {"a": a, "b": b}
        if run is not None:
            values["run"] = run
        out.append(SensorReading(ASSET, T0 + i * STEP, values))
    return out


def feed(monitor: Monitor, batch: list[SensorReading], size: int = 50) -> list[Outcome]:
    outs = []
    for k in range(0, len(batch), size):
        part = batch[k : k + size]
        outs.append(monitor.process(part, now_ms=part[-1].ts_ms))
    return outs


def events_of(outs: list[Outcome]) -> list[AlertEvent]:
    return [e for o in outs for e in o.events]


def window(start_s: int, end_s: int, asset: str = ASSET) -> MaintenanceConfig:
    return MaintenanceConfig(
        windows=[
            MaintenanceWindow(
                asset=asset,
                start=datetime.fromtimestamp((T0 + start_s * STEP) / 1000, UTC),
                end=datetime.fromtimestamp((T0 + end_s * STEP) / 1000, UTC),
            )
        ]
    )


def cmd(command: str, at_s: int, **kw: Any) -> OperatorCommand:
    until = kw.pop("until_s", None)
    return OperatorCommand(
        command=command,  # type: ignore[arg-type]
        asset=ASSET,
        at_ms=T0 + at_s * STEP,
        until_ms=None if until is None else T0 + until * STEP,
        **kw,
    )


# -- maintenance --------------------------------------------------------------------------


def test_a_configured_window_suppresses_alerts_learns_nothing_and_resumes_after() -> None:
    monitor = Monitor(model(), alert=ALERT, maintenance=window(200, 500))
    outs = feed(monitor, readings(0, 200))
    assert events_of(outs) == []
    threshold_before = monitor.threshold_of(ASSET).snapshot()  # type: ignore[union-attr]
    drift_before = monitor.snapshot_asset(ASSET)["drift"]  # type: ignore[index]
    # A fault inside the window: nothing judged, nothing learned, two notices.
    inside = feed(monitor, readings(200, 300, fault=range(250, 450)))
    assert events_of(inside) == []
    assert sum(o.suppressed["maintenance"] for o in inside) == 300
    assert sum(len(o.scored) for o in inside) == 0
    assert monitor.threshold_of(ASSET).snapshot() == threshold_before  # type: ignore[union-attr]
    assert monitor.snapshot_asset(ASSET)["drift"] == drift_before  # type: ignore[index]
    assert [(n.notice, n.at) for o in inside for n in o.notices] == [
        ("maintenance_started", format_ts(T0 + 200 * STEP))
    ]
    # After it: the window refills from fresh readings, then a fault is alerted as before.
    after = feed(monitor, readings(500, 300, fault=range(600, 700)))
    notices = [(n.notice, n.at) for o in after for n in o.notices]
    assert notices == [("maintenance_ended", format_ts(T0 + 500 * STEP))]
    opened = [e for e in events_of(after) if e.event == "opened"]
    assert len(opened) == 1 and parse_ts(opened[0].started_at) >= T0 + 600 * STEP
    # The first window scored after the window holds only readings from after it.
    first = min(int(o.scored.ts_ms.min()) for o in after if len(o.scored))
    assert first == T0 + (500 + model().window - 1) * STEP


def test_an_open_alert_is_resolved_as_maintenance_when_the_window_opens() -> None:
    monitor = Monitor(model(), alert=ALERT)
    before = [e for e in events_of(feed(monitor, readings(0, 200, fault=range(150, 400))))
              if e.event == "opened"]  # fmt: skip
    assert len(before) == 1 and monitor.open_alerts() == 1
    # The same, in one batch that straddles a commanded window's start.
    out = monitor.process(readings(200, 100, fault=range(150, 400)), now_ms=T0, commands=[
        cmd("maintenance_start", 250, by="ops", note="seal change")
    ])  # fmt: skip
    assert out.commands == ["applied"]
    resolved = [e for e in out.events if e.event == "resolved"]
    assert [(e.alert_id, e.reason, e.window_at) for e in resolved] == [
        (before[0].alert_id, "maintenance", format_ts(T0 + 250 * STEP))
    ]
    assert monitor.open_alerts() == 0
    assert out.suppressed["maintenance"] == 50
    started = [n for n in out.notices if n.notice == "maintenance_started"]
    assert started[0].detail == {"start": format_ts(T0 + 250 * STEP), "end": None, "by": "ops",
                                 "note": "seal change"}  # fmt: skip
    # A replayed command changes nothing; maintenance_end returns the asset to service.
    again = monitor.process([], now_ms=T0, commands=[cmd("maintenance_start", 250)])
    assert again.commands == ["duplicate"]
    end = monitor.process(readings(300, 20), now_ms=T0, commands=[cmd("maintenance_end", 310)])
    assert end.commands == ["applied"]
    assert end.suppressed["maintenance"] == 10
    assert [n.notice for n in end.notices] == ["maintenance_ended"]


def test_a_backtest_alerts_nothing_inside_a_configured_window() -> None:
    n = 900
    batch = readings(0, n, fault=range(300, 450)) + readings(n, 300, fault=range(1000, 1100))
    table = Table(
        ts_ms=np.array([r.ts_ms for r in batch], np.int64),
        signals=("a", "b"),
        values=np.array([[r.values["a"], r.values["b"]] for r in batch], np.float64),
        assets=None,
        labels=None,
        time_column="ts",
    )
    start, end = format_ts(T0 + 250 * STEP), format_ts(T0 + 600 * STEP)
    sets = [
        "alert.k=3", "alert.n=5", "alert.m=10", "alert.cooldown_ms=0",
        f'maintenance.windows=[{{asset = "asset", start = {start}, end = {end}}}]',
    ]  # fmt: skip
    plain = replay(table, model(), load_settings(env={}, sets=sets[:4]), default_asset="asset")
    kept = replay(table, model(), load_settings(env={}, sets=sets), default_asset="asset")
    assert [e.event for e in plain.events if e.event == "opened"] == ["opened", "opened"]
    opened = [e for e in kept.events if e.event == "opened"]
    assert len(opened) == 1 and parse_ts(opened[0].started_at) >= T0 + 1000 * STEP
    inside = (table.ts_ms >= T0 + 250 * STEP) & (table.ts_ms < T0 + 600 * STEP)
    assert np.isnan(kept.scores[inside]).all() and not kept.anomaly[inside].any()


def test_rows_with_no_scored_window_inside_an_open_alert_are_under_it() -> None:
    # Mid-fault the readings go missing for longer than values may be carried forward: no
    # window is scored there, no decision made, so the alert that was open stays open (the
    # backtest's anomaly column said 0 there, as if the alert had closed and reopened).
    batch = readings(0, 900, fault=range(300, 450))
    values = np.array([[r.values["a"], r.values["b"]] for r in batch], np.float64)
    values[360:380] = np.nan
    table = Table(
        ts_ms=np.array([r.ts_ms for r in batch], np.int64),
        signals=("a", "b"),
        values=values,
        assets=None,
        labels=None,
        time_column="ts",
    )
    sets = ["alert.k=3", "alert.n=5", "alert.m=10", "alert.cooldown_ms=0"]
    result = replay(table, model(), load_settings(env={}, sets=sets), default_asset="asset")
    opened = [e for e in result.events if e.event == "opened" and e.kind == "anomaly"]
    assert len(opened) == 1 and T0 + 300 * STEP <= parse_ts(opened[0].window_at) < T0 + 360 * STEP
    gap = np.arange(360, 380)
    assert np.isnan(result.scores[gap]).any()  # windows skipped: stale values
    assert result.anomaly[gap].all()
    assert result.anomaly[300 + 20 : 450].all()
    # Before the fault and after the alert resolved, unscored rows stay clear.
    assert not result.anomaly[:300].any() and not result.anomaly[-100:].any()


def test_maintenance_windows_are_validated() -> None:
    bad = (
        'maintenance.windows=[{asset = "p", start = 2026-11-28T22:00:00Z, '
        "end = 2026-11-28T21:00:00Z}]"
    )
    with pytest.raises(ValueError, match="is not after start"):
        load_settings(env={}, sets=[bad])
    naive = (
        'maintenance.windows=[{asset = "p", start = 2026-11-28T21:00:00, '
        "end = 2026-11-28T22:00:00Z}]"
    )
    with pytest.raises(ValueError, match="timezone"):
        load_settings(env={}, sets=[naive])


# -- operating mode -----------------------------------------------------------------------


def test_a_stopped_asset_is_not_alerted_and_a_started_one_only_after_the_grace() -> None:
    mode = OperatingModeConfig(signal="run", running_above=0.5, startup_grace_ms=60_000)
    monitor = Monitor(model(), alert=ALERT, operating_mode=mode)
    assert events_of(feed(monitor, readings(0, 100, run=1.0))) == []
    threshold_before = monitor.threshold_of(ASSET).snapshot()  # type: ignore[union-attr]
    # Stopped, with a broken relation all the while: no alert, nothing learned.
    stopped = feed(monitor, readings(100, 200, run=0.0, fault=range(100, 450)))
    assert events_of(stopped) == []
    assert sum(o.suppressed["stopped"] for o in stopped) == 200
    assert monitor.threshold_of(ASSET).snapshot() == threshold_before  # type: ignore[union-attr]
    # Started: the fault goes on through the 60 s grace, and is alerted only after it.
    started = feed(monitor, readings(300, 200, run=1.0, fault=range(100, 450)))
    assert sum(o.suppressed["startup"] for o in started) == 60
    opened = [e for e in events_of(started) if e.event == "opened"]
    assert len(opened) == 1
    assert parse_ts(opened[0].started_at) >= T0 + 360 * STEP + (model().window - 1) * STEP
    modes = [(n.detail["mode"], n.at) for o in stopped + started for n in o.notices]
    assert modes == [
        ("stopped", format_ts(T0 + 100 * STEP)),
        ("startup", format_ts(T0 + 300 * STEP)),
        ("running", format_ts(T0 + 360 * STEP)),
    ]


def test_operating_mode_off_by_default_and_per_asset_overrides() -> None:
    monitor = Monitor(model(), alert=ALERT)
    outs = feed(monitor, readings(0, 200, run=0.0, fault=range(100, 200)))
    assert next(e.event for e in events_of(outs)) == "opened"  # today's behaviour
    mode = OperatingModeConfig.validated(
        signal="", assets={ASSET: {"signal": "run", "running_above": 0.5}}
    )
    assert mode.rule(ASSET) == ("run", 0.5, 300_000) and mode.rule("other")[0] == ""
    monitor = Monitor(model(), alert=ALERT, operating_mode=mode)
    outs = feed(monitor, readings(0, 200, run=0.0, fault=range(100, 200)))
    assert events_of(outs) == [] and sum(o.suppressed["stopped"] for o in outs) == 200


def test_an_alert_open_when_the_asset_stops_is_resolved_as_stopped() -> None:
    mode = OperatingModeConfig(signal="run", running_above=0.5)
    monitor = Monitor(model(), alert=ALERT, operating_mode=mode)
    opened = events_of(feed(monitor, readings(0, 200, run=1.0, fault=range(150, 300))))
    assert opened[0].event == "opened" and monitor.open_alerts() == 1
    stop = events_of(feed(monitor, readings(200, 50, run=0.0, fault=range(150, 300))))
    assert [(e.event, e.reason, e.alert_id) for e in stop] == [
        ("resolved", "stopped", opened[0].alert_id)
    ]


def test_lifecycle_state_survives_a_snapshot_round_trip() -> None:
    mode = OperatingModeConfig(signal="run", running_above=0.5, startup_grace_ms=60_000)
    monitor = Monitor(model(), alert=ALERT, operating_mode=mode)
    feed(monitor, readings(0, 100, run=0.0))
    monitor.process([], now_ms=T0, commands=[cmd("maintenance_start", 150, until_s=200)])
    snap = msgspec.json.decode(msgspec.json.encode(monitor.snapshot_asset(ASSET)))
    again = Monitor(model(), alert=ALERT, operating_mode=mode)
    again.park(ASSET, snap)
    outs = feed(again, readings(100, 160, run=1.0))
    counts = sum((o.suppressed for o in outs), start=type(outs[0].suppressed)())
    # Started at 100 (grace to 160), maintenance 150..200, then running.
    assert dict(counts) == {"startup": 50, "maintenance": 50}


# -- acknowledgement and shelving: the policy ---------------------------------------------


def decision(ts_s: int, score: float, *, policy_asset: str = ASSET) -> Decision:
    anomalous = score > 4.0
    return Decision(policy_asset, T0 + ts_s * STEP, score, 4.0, anomalous,
                    (2 if score >= 8.0 else 1) if anomalous else 0, {"a": 0.7, "b": 0.3},
                    "pca", "1")  # fmt: skip


def step(policy: AlertPolicy, ts_s: int, score: float) -> list[AlertEvent]:
    events, _ = policy.screen(policy.step(decision(ts_s, score), now_ms=T0))
    return events + policy.expire_shelves(now_ms=T0, model=("pca", "1"))


def opened_policy() -> tuple[AlertPolicy, str]:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=3, cooldown_ms=0, update_every_ms=0,
                                     max_shelve_ms=600_000))  # fmt: skip
    [ev] = step(policy, 0, 6.0)  # 1.5x the threshold: opens at once
    assert ev.event == "opened" and ev.acknowledged_by is None
    return policy, ev.alert_id


def test_ack_is_idempotent_carried_by_later_events_and_snapshotted() -> None:
    policy, alert_id = opened_policy()
    result, events = policy.acknowledge(
        ASSET, alert_id, by="j.smith", at_ms=T0 + 500, now_ms=T0, model=("pca", "1"), note="on it"
    )
    assert result == "applied"
    [ev] = events
    assert (ev.event, ev.alert_id, ev.acknowledged_by, ev.acknowledged_at) == (
        "updated",
        alert_id,
        "j.smith",
        format_ts(T0 + 500),
    )
    assert ev.reason == "acknowledged by j.smith: on it"
    again = policy.acknowledge(ASSET, alert_id, by="x", at_ms=T0, now_ms=T0, model=("pca", "1"))
    assert again == ("duplicate", [])
    assert policy.operator_counts() == (1, 0)
    restored = AlertPolicy(policy.config)
    restored.restore(msgspec.json.decode(msgspec.json.encode(policy.snapshot())))
    later = step(restored, 1, 9.0) + [e for t in (2, 3, 4) for e in step(restored, t, 1.0)]
    assert [e.event for e in later] == ["updated", "resolved"]
    assert {e.acknowledged_by for e in later} == {"j.smith"}
    unknown = policy.acknowledge(ASSET, "nope", by="x", at_ms=T0, now_ms=T0, model=("pca", "1"))
    assert unknown == ("unknown_alert", [])


def test_a_shelved_alert_is_quiet_until_its_shelving_ends_and_then_announced_again() -> None:
    policy, alert_id = opened_policy()
    result, [ev] = policy.shelve(ASSET, alert_id, by="ops", at_ms=T0, until_ms=T0 + 10 * STEP,
                                 now_ms=T0, model=("pca", "1"))  # fmt: skip
    assert result == "applied" and ev.shelved_until == format_ts(T0 + 10 * STEP)
    assert ev.shelved_by == "ops" and policy.operator_counts() == (0, 1)
    # Escalation and rising peaks while shelved: withheld, counted.
    withheld = 0
    for t, score in ((1, 9.0), (2, 12.0), (3, 20.0)):
        events, n = policy.screen(policy.step(decision(t, score), now_ms=T0))
        assert events == [] and n == 1
        withheld += n
    assert policy.expire_shelves(now_ms=T0, model=("pca", "1")) == []
    # The shelving ends at 10 s of reading time: the alert, still open, is announced again.
    [back] = step(policy, 10, 20.0)
    assert (back.event, back.shelved_until, back.alert_id) == ("updated", None, alert_id)
    assert "shelving ended" in back.reason and "3 updates withheld" in back.reason
    assert policy.operator_counts() == (0, 0)


def test_shelving_is_bounded_survives_restore_and_a_resolve_is_never_withheld() -> None:
    policy, alert_id = opened_policy()
    _, [ev] = policy.shelve(ASSET, alert_id, by="ops", at_ms=T0, until_ms=T0 + 86_400_000,
                            now_ms=T0, model=("pca", "1"))  # fmt: skip
    assert ev.shelved_until == format_ts(T0 + 600_000) and "bounded" in ev.reason
    restored = AlertPolicy(policy.config)
    restored.restore(msgspec.json.decode(msgspec.json.encode(policy.snapshot())))
    assert restored.operator_counts() == (0, 1)
    assert step(restored, 1, 9.0) == []  # an escalation, withheld after the restart too
    resolved = [e for t in (2, 3, 4) for e in step(restored, t, 1.0)]
    assert [(e.event, e.shelved_until) for e in resolved] == [("resolved", format_ts(T0 + 600_000))]
    assert restored.operator_counts() == (0, 0)


def test_a_resolve_after_the_shelvings_end_in_the_same_batch_says_the_shelving_ended() -> None:
    """A batch stepped in one go (a restart's backlog) may pass the end of a shelving and
    resolve the alert before the end of the batch expires the shelving: the resolve then
    says so instead of carrying a shelving already over."""
    policy, alert_id = opened_policy()
    policy.shelve(ASSET, alert_id, by="ops", at_ms=T0, until_ms=T0 + 5 * STEP, now_ms=T0,
                  model=("pca", "1"))  # fmt: skip
    stepped = [e for t in (1, 2, 6, 7, 8) for e in policy.step(decision(t, 1.0), now_ms=T0)]
    events, withheld = policy.screen(stepped)
    assert withheld == 0
    [resolved] = events
    assert (resolved.event, resolved.alert_id, resolved.shelved_until) == (
        "resolved",
        alert_id,
        None,
    )
    assert resolved.reason.startswith(f"shelving ended at {format_ts(T0 + 5 * STEP)}; ")
    assert policy.expire_shelves(now_ms=T0, model=("pca", "1")) == []
    # A resolve inside the shelving still says it was shelved.
    policy, alert_id = opened_policy()
    policy.shelve(ASSET, alert_id, by="ops", at_ms=T0, until_ms=T0 + 50 * STEP, now_ms=T0,
                  model=("pca", "1"))  # fmt: skip
    [resolved] = [e for t in (1, 2, 3) for e in step(policy, t, 1.0)]
    assert resolved.shelved_until == format_ts(T0 + 50 * STEP)


def test_unshelve_announces_the_alert_again() -> None:
    policy, alert_id = opened_policy()
    policy.shelve(ASSET, alert_id, by="", at_ms=T0, until_ms=None, now_ms=T0, model=("pca", "1"))
    result, [ev] = policy.unshelve(ASSET, alert_id, by="ops", now_ms=T0, model=("pca", "1"))
    assert result == "applied" and ev.shelved_until is None and "unshelved by ops" in ev.reason
    assert policy.unshelve(ASSET, alert_id, by="ops", now_ms=T0, model=("pca", "1")) == (
        "duplicate", [],
    )  # fmt: skip


def test_monitor_commands_ack_and_refuse_an_unknown_alert() -> None:
    monitor = Monitor(model(), alert=ALERT)
    opened = events_of(feed(monitor, readings(0, 200, fault=range(150, 400))))[0]
    assert opened.event == "opened"
    out = monitor.process([], now_ms=T0, commands=[
        cmd("ack", 200, alert_id=opened.alert_id, by="j.smith"),
        cmd("ack", 200, alert_id=opened.alert_id, by="j.smith"),
        cmd("ack", 200, alert_id="0" * 32, by="j.smith"),
    ])  # fmt: skip
    assert out.commands[:2] == ["applied", "duplicate"]
    refused = out.commands[2]
    assert isinstance(refused, Rejection) and refused.reason is Reason.UNKNOWN_ALERT
    assert [(e.event, e.acknowledged_by) for e in out.events] == [("updated", "j.smith")]
    # A shelving through the monitor withholds the updates and counts them.
    shelve = cmd("shelve", 200, alert_id=opened.alert_id, until_s=260)
    out = monitor.process(readings(200, 50, fault=range(150, 400), seed=9), now_ms=T0,
                          commands=[shelve])  # fmt: skip
    assert [e.shelved_until for e in out.events] == [format_ts(T0 + 260 * STEP)]
    # Its end, on the asset's reading time, announces the still-open alert again.
    out = monitor.process(readings(250, 20, fault=range(150, 400), seed=10), now_ms=T0)
    assert [(e.event, e.shelved_until, e.alert_id) for e in out.events] == [
        ("updated", None, opened.alert_id)
    ]
    assert out.events[0].reason.startswith("shelving ended at")


def test_lifecycle_metrics_exist_from_the_start_and_count() -> None:
    from prometheus_client import CollectorRegistry

    from alerts.metrics import Metrics

    metrics = Metrics.create(CollectorRegistry())
    get = metrics.registry.get_sample_value
    for reason in ("maintenance", "stopped", "startup"):
        assert get("plantwatch_assets_suppressed", {"reason": reason}) == 0.0
        assert get("plantwatch_readings_suppressed_total", {"reason": reason}) == 0.0
    assert get("plantwatch_commands_total", {"command": "ack", "result": "applied"}) == 0.0
    metrics.count_commands(
        [("ack", "applied"), ("ack", "duplicate"), ("shelve", "unknown_alert")], invalid=2
    )
    metrics.count_suppressed({"maintenance": 5}, withheld=3)
    metrics.set_lifecycle(1, 2, {"stopped": 4})
    assert get("plantwatch_commands_total", {"command": "ack", "result": "applied"}) == 1.0
    assert get("plantwatch_commands_total", {"command": "shelve", "result": "unknown_alert"}) == 1
    assert get("plantwatch_commands_total", {"command": "invalid", "result": "rejected"}) == 2.0
    assert get("plantwatch_readings_suppressed_total", {"reason": "maintenance"}) == 5.0
    assert get("plantwatch_alert_events_shelved_total") == 3.0
    assert (get("plantwatch_alerts_acknowledged"), get("plantwatch_alerts_shelved")) == (1, 2)
    assert get("plantwatch_assets_suppressed", {"reason": "stopped"}) == 4.0

"""The alert state machine: scripted sequences, then hypothesis for its invariants."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from alerts.events import AlertEvent, decode_event, encode_event
from alerts.policy import SENSOR_ALERT_DEFAULTS, AlertConfig, AlertPolicy, Decision, alert_id_for
from common.timestamps import format_ts, parse_ts

T0 = 1_795_899_600_000  # 2026-11-28T21:00:00Z
NOW = T0 + 3_600_000
CONTRIB = {"temp": 0.1, "vibration_rms": 0.6, "pressure": 0.25, "current": 0.05}


def dec(
    i: int,
    anomalous: bool,
    *,
    score: float | None = None,
    threshold: float = 4.0,
    severity: int | None = None,
    asset: str = "pump-1",
    step_ms: int = 1_000,
    contributions: dict[str, float] | None = None,
    model: str = "lstm-ae",
) -> Decision:
    """Window ``i`` of an asset, one per ``step_ms`` of reading time."""
    return Decision(
        asset=asset,
        ts_ms=T0 + i * step_ms,
        score=score if score is not None else (8.0 if anomalous else 1.0),
        threshold=threshold,
        anomalous=anomalous,
        severity=severity if severity is not None else (1 if anomalous else 0),
        contributions=contributions if contributions is not None else CONTRIB,
        model_name=model,
        model_version="7",
    )


def run(policy: AlertPolicy, pattern: str, start: int = 0) -> list[tuple[int, AlertEvent]]:
    """Feed 'A'/'.' (anomalous/normal) windows; returns (window index, event) pairs."""
    out: list[tuple[int, AlertEvent]] = []
    for offset, ch in enumerate(pattern):
        i = start + offset
        for ev in policy.step(dec(i, ch == "A"), now_ms=NOW):
            out.append((i, ev))
    return out


# -- scripted sequences -------------------------------------------------------------------


def test_opens_on_the_kth_anomalous_window_of_the_last_n() -> None:
    policy = AlertPolicy(AlertConfig(k=3, n=5, m=10))
    events = run(policy, "A.A.A")
    assert [(i, e.event) for i, e in events] == [(4, "opened")]
    ev = events[0][1]
    assert ev.started_at == format_ts(T0)
    assert ev.ended_at is None
    assert ev.detected_at == format_ts(NOW)
    assert ev.window_at == format_ts(T0 + 4_000)
    assert ev.reason == "3 of the last 5 windows over threshold"
    assert ev.alert_id == alert_id_for("pump-1", "lstm-ae", T0)
    assert ev.alert_id == hashlib.sha256(f"pump-1|lstm-ae|{T0}".encode()).hexdigest()[:32]
    assert policy.open_alerts() == 1
    assert policy.phase("pump-1") == "open"


def test_anomalous_windows_that_fall_out_of_the_last_n_do_not_count() -> None:
    policy = AlertPolicy(AlertConfig(k=3, n=5, m=10))
    assert run(policy, "AA...A") == []
    assert run(policy, "A", start=6) == []  # windows 2..6 are ...AA: only 2 of 5
    events = run(policy, "A", start=7)  # windows 3..7 are ..AAA
    assert [(i, e.event) for i, e in events] == [(7, "opened")]
    assert events[0][1].started_at == format_ts(T0 + 5_000)


def test_a_weak_crossing_opens_only_when_it_persists_and_a_strong_one_at_once() -> None:
    cfg = AlertConfig(k=3, n=5, m=10, strong_ratio=1.5, weak_k=6, weak_n=10)
    # Scores 1.1x the threshold: three of five is one noisy crossing, not an alert ...
    weak = AlertPolicy(cfg)
    opened = []
    for i in range(8):
        for ev in weak.step(dec(i, i % 2 == 0 or i > 5, score=4.4), now_ms=NOW):
            opened.append((i, ev))
    # windows 0,2,4,6,7: five weak exceedances in the last ten; the sixth (8) opens.
    assert opened == []
    events = list(weak.step(dec(8, True, score=4.4), now_ms=NOW))
    assert [e.event for e in events] == ["opened"]
    assert events[0].started_at == format_ts(T0)
    assert events[0].reason == "6 of the last 9 windows over threshold"
    # ... while one window at 2x its threshold among the three opens on the third.
    strong = AlertPolicy(cfg)
    got = [
        (i, ev.event)
        for i, score in enumerate([4.4, 1.0, 8.0, 1.0, 4.4])
        for ev in strong.step(dec(i, score > 4.0, score=score), now_ms=NOW)
    ]
    assert got == [(4, "opened")]
    # Off (strong_ratio 1): the weak crossing opens on k of n as before.
    plain = AlertPolicy(AlertConfig(k=3, n=5, m=10, strong_ratio=1.0))
    got = [
        (i, ev.event)
        for i in range(5)
        for ev in plain.step(dec(i, i % 2 == 0, score=4.4), now_ms=NOW)
    ]
    assert got == [(4, "opened")]


def test_weak_persistence_is_bounded_in_reading_time() -> None:
    # Ten weak windows in a row: at 1 s they open at the tenth (10 s); 5 minutes apart, ten
    # would be 50 minutes, so the 30 minutes of weak_max_ms ask for six (and of 18, not 30);
    # 10 minutes or an hour apart, 30 minutes would ask for three or one, but never fewer
    # than weak_min_k (six) are asked for.
    cfg = AlertConfig(k=3, n=5, m=10, strong_ratio=1.3, weak_k=10, weak_n=30)
    assert (cfg.weak_max_ms, cfg.weak_min_k) == (1_800_000, 6)
    cases = ((1_000, 9), (60_000, 9), (300_000, 5), (600_000, 5), (3_600_000, 5))
    for step_ms, opens_at in cases:
        policy = AlertPolicy(cfg)
        got = [
            (i, ev.event)
            for i in range(12)
            for ev in policy.step(dec(i, True, score=4.4, step_ms=step_ms), now_ms=NOW)
        ]
        assert got == [(opens_at, "opened")], step_ms
    # The spacing is the windows' median: one long gap does not make every window count more.
    policy = AlertPolicy(cfg)
    times = [T0 + i * 1_000 for i in range(5)] + [T0 + 3_600_000 + i * 1_000 for i in range(7)]
    got = [
        (i, ev.event)
        for i, ts in enumerate(times)
        for ev in policy.step(
            Decision("pump-1", ts, 4.4, 4.0, True, 1, {"x": 1.0}, "lstm-ae", "1"), now_ms=NOW
        )
    ]
    assert got == [(9, "opened")]


def test_open_needs_the_current_window_anomalous() -> None:
    policy = AlertPolicy(AlertConfig(k=2, n=5, m=3, cooldown_ms=0))
    assert run(policy, "A") == []
    assert [e.event for _, e in run(policy, "A", start=1)] == ["opened"]


def test_m_normal_windows_in_a_row_resolve_with_the_episode_peak() -> None:
    policy = AlertPolicy(AlertConfig(k=2, n=3, m=4, cooldown_ms=0))
    peak_contrib = {"temp": 0.9, "pressure": 0.1}
    seq = [
        dec(0, True, score=6.0),
        dec(1, True, score=12.0, threshold=5.0, contributions=peak_contrib),
        dec(2, True, score=7.0),
        *[dec(i, False) for i in range(3, 6)],
        dec(6, True, score=5.0),  # interrupts the normal streak
        *[dec(i, False) for i in range(7, 11)],
    ]
    events = [(d.ts_ms, e) for d in seq for e in policy.step(d, now_ms=NOW)]
    kinds = [(ts, e.event) for ts, e in events]
    assert kinds == [(T0 + 1_000, "opened"), (T0 + 10_000, "resolved")]
    resolved = events[-1][1]
    assert resolved.ended_at == format_ts(T0 + 6_000)  # last anomalous window, not the 4th normal
    assert resolved.started_at == format_ts(T0)
    assert resolved.score == 12.0 and resolved.peak_score == 12.0
    assert resolved.threshold == 5.0
    assert resolved.ratio == pytest.approx(2.4)
    assert [(t.signal, t.contribution) for t in resolved.top_signals] == [
        ("temp", 0.9),
        ("pressure", 0.1),
    ]
    assert resolved.reason == "4 windows in a row under threshold"
    assert resolved.alert_id == events[0][1].alert_id
    assert policy.open_alerts() == 0


def test_cooldown_defers_the_next_open_and_counts_windows_meanwhile() -> None:
    policy = AlertPolicy(AlertConfig(k=3, n=5, m=2, cooldown_ms=5_000))
    events = run(policy, "AAA..")
    assert [(i, e.event) for i, e in events] == [(2, "opened"), (4, "resolved")]
    assert policy.phase("pump-1") == "cooling"
    # Resolved at window 4 (t=4 s): no open before t=9 s, but windows 5.. count toward k-of-n.
    events = run(policy, "AAAA", start=5)
    assert events == []
    events = run(policy, "A", start=9)
    assert [(i, e.event) for i, e in events] == [(9, "opened")]
    # Earliest anomalous window among the last n=5 (windows 5..9).
    assert events[0][1].started_at == format_ts(T0 + 5_000)
    assert events[0][1].reason == "5 of the last 5 windows over threshold"


def test_cooldown_passing_on_a_normal_window_does_not_open() -> None:
    policy = AlertPolicy(AlertConfig(k=2, n=5, m=1, cooldown_ms=3_000))
    assert [e.event for _, e in run(policy, "AA.")] == ["opened", "resolved"]
    assert run(policy, "AA.", start=3) == []  # t=3,4 in cooldown, t=5 normal: no open
    assert policy.phase("pump-1") == "idle"
    events = run(policy, "A", start=6)
    assert [(i, e.event) for i, e in events] == [(6, "opened")]
    assert events[0][1].started_at == format_ts(T0 + 3_000)


def test_zero_cooldown_goes_straight_back_to_idle() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    events = run(policy, "A.A.")
    assert [(i, e.event) for i, e in events] == [
        (0, "opened"),
        (1, "resolved"),
        (2, "opened"),
        (3, "resolved"),
    ]
    assert events[0][1].alert_id != events[2][1].alert_id


def test_escalation_updates_at_once_and_severity_never_drops() -> None:
    cfg = AlertConfig(k=2, n=3, m=2, cooldown_ms=0, update_every_ms=60_000)
    policy = AlertPolicy(cfg)
    seq = [
        dec(0, True, severity=1),
        dec(1, True, severity=1),
        dec(2, True, severity=2, score=8.5),
        dec(3, True, severity=2, score=8.6),
        dec(4, True, severity=1, score=8.0),
        dec(5, False),
        dec(6, False),
    ]
    events = [e for d in seq for e in policy.step(d, now_ms=NOW)]
    assert [(e.event, e.severity) for e in events] == [
        ("opened", "warning"),
        ("updated", "critical"),
        ("resolved", "critical"),
    ]
    assert events[1].reason == "severity rose to critical"
    assert events[1].score == 8.5
    assert events[1].window_at == format_ts(T0 + 2_000)


def test_severity_zero_from_the_threshold_layer_falls_back_to_the_ratio() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, critical_ratio=2.0))
    (ev,) = policy.step(dec(0, True, severity=0, score=9.0, threshold=4.0), now_ms=NOW)
    assert ev.severity == "critical"
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, critical_ratio=2.0))
    (ev,) = policy.step(dec(0, True, severity=0, score=7.0, threshold=4.0), now_ms=NOW)
    assert ev.severity == "warning"


def test_peak_rise_updates_are_rate_limited_on_reading_time() -> None:
    # Scores of 1.25x the threshold: weak crossings, so the strength rule is off here.
    cfg = AlertConfig(k=1, n=1, m=50, update_every_ms=10_000, update_min_rise=0.2, strong_ratio=1.0)
    policy = AlertPolicy(cfg)
    seq = [
        (0, 5.0),  # opened, reported peak 5.0
        (1, 7.0),  # +40 % but only 1 s after the open: held back
        (10, 7.1),  # 10 s after: updated (peak 7.1 vs reported 5.0)
        (11, 8.0),  # +12.7 % over 7.1: too small
        (19, 9.0),  # +26.8 % but 9 s after the update: held back
        (20, 6.0),  # due now, peak 9.0 is +26.8 % over 7.1: updated, with this window's score
        (40, 9.5),  # +5.6 % over 9.0: nothing
    ]
    out = []
    for i, score in seq:
        for ev in policy.step(dec(i, True, score=score), now_ms=NOW):
            out.append((i, ev.event, ev.score, ev.peak_score))
    assert out == [
        (0, "opened", 5.0, 5.0),
        (10, "updated", 7.1, 7.1),
        (20, "updated", 6.0, 9.0),
    ]


def test_event_fields_and_top_signals_order() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, top_signals=2))
    contrib = {"b": 0.3, "a": 0.3, "c": 0.4, "d": float("nan")}
    (ev,) = policy.step(dec(0, True, contributions=contrib, score=6.0), now_ms=NOW)
    assert [(t.signal, t.contribution) for t in ev.top_signals] == [("c", 0.4), ("a", 0.3)]
    assert (ev.model.name, ev.model.version) == ("lstm-ae", "7")
    assert ev.ratio == pytest.approx(1.5)
    assert ev.schema == "plantwatch.alert/v1"
    assert decode_event(encode_event(ev)) == ev


def test_assets_are_independent() -> None:
    policy = AlertPolicy(AlertConfig(k=2, n=2, m=1, cooldown_ms=0))
    out = []
    for i in range(3):
        for asset, anomalous in (("a", True), ("b", i == 2)):
            out += [
                (e.asset, e.event) for e in policy.step(dec(i, anomalous, asset=asset), now_ms=NOW)
            ]
    assert out == [("a", "opened")]
    assert policy.open_alerts() == 1
    assert policy.assets() == ["a", "b"]


def test_a_late_window_does_not_move_the_assets_clock_back() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=1, cooldown_ms=5_000))
    run(policy, "A.")  # resolved at t=1 s: cooldown until t=6 s
    assert run(policy, "A", start=7) != []  # t=7 s: past the cooldown
    run(policy, ".", start=8)  # resolved at t=8 s: cooldown until t=13 s
    # A window stamped t=20 s, then a late one stamped t=9 s: the clock stays at 20 s.
    assert policy.step(dec(20, False), now_ms=NOW) == []
    assert [e.event for e in policy.step(dec(9, True), now_ms=NOW)] == ["opened"]


def test_same_decisions_give_the_same_events() -> None:
    pattern = "AAA.A..........AA.AAA" * 3
    assert run(AlertPolicy(), pattern) == run(AlertPolicy(), pattern)


def test_step_many_matches_step() -> None:
    seq = [dec(i, ch == "A") for i, ch in enumerate("A.AA.........AAAA")]
    one = AlertPolicy(AlertConfig(cooldown_ms=2_000))
    many = AlertPolicy(AlertConfig(cooldown_ms=2_000))
    assert many.step_many(seq, now_ms=NOW) == [e for d in seq for e in one.step(d, now_ms=NOW)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"asset": ""}, "non-empty asset"),
        ({"severity": 3}, "severity must be"),
        ({"score": float("nan"), "anomalous": True}, "finite score"),
        ({"threshold": float("inf"), "anomalous": True}, "finite score"),
        ({"ts_ms": 1.5}, "epoch milliseconds"),
    ],
)
def test_decision_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "asset": "p",
        "ts_ms": T0,
        "score": 1.0,
        "threshold": 2.0,
        "anomalous": False,
        "severity": 0,
        "contributions": {},
        "model_name": "m",
        "model_version": "1",
    }
    with pytest.raises(ValueError, match=message):
        Decision(**{**base, **kwargs})  # type: ignore[arg-type]


def test_a_normal_window_may_carry_an_infinite_threshold() -> None:
    policy = AlertPolicy()
    d = Decision("p", T0, 1.0, float("inf"), False, 0, {}, "m", "1")
    assert policy.step(d, now_ms=NOW) == []
    json.dumps(policy.snapshot(), allow_nan=False)  # nothing non-finite is kept


@pytest.mark.parametrize(
    "kwargs",
    [
        {"k": 0},
        {"k": 6, "n": 5},
        {"m": 0},
        {"cooldown_ms": -1},
        {"update_every_ms": -1},
        {"update_min_rise": -0.1},
        {"critical_ratio": 1.0},
        {"top_signals": 0},
    ],
)
def test_config_refuses_bad_values(kwargs: dict[str, float]) -> None:
    # Ranges are checked where a configuration is loaded, with the path of the key.
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(kwargs, AlertConfig)


# -- snapshot / restore --------------------------------------------------------------------


def test_snapshot_restore_continues_exactly_through_json() -> None:
    cfg = AlertConfig(k=3, n=5, m=4, cooldown_ms=3_000, update_every_ms=2_000)
    scores = [9.0, 1.0, 10.0, 14.0, 1.0, 20.0, 1.0, 1.0, 1.0, 1.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    seq = [dec(i, s > 4.0, score=s, severity=2 if s > 15 else None) for i, s in enumerate(scores)]
    for cut in range(len(seq) + 1):
        whole = AlertPolicy(cfg)
        expected = [e for d in seq for e in whole.step(d, now_ms=NOW)]
        first = AlertPolicy(cfg)
        got = [e for d in seq[:cut] for e in first.step(d, now_ms=NOW)]
        second = AlertPolicy(cfg)
        second.restore(json.loads(json.dumps(first.snapshot())))
        assert second.snapshot() == first.snapshot()
        got += [e for d in seq[cut:] for e in second.step(d, now_ms=NOW)]
        assert got == expected, f"diverged after a restore at window {cut}"


def test_per_asset_snapshot_and_forget() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=3))
    policy.step(dec(0, True, asset="a"), now_ms=NOW)
    policy.step(dec(0, False, asset="b"), now_ms=NOW)
    snap_a = policy.snapshot_asset("a")
    assert snap_a is not None and list(snap_a["assets"]) == ["a"]
    assert policy.snapshot_asset("zzz") is None
    policy.forget(["a", "unknown"])
    assert policy.assets() == ["b"] and policy.open_alerts() == 0
    other = AlertPolicy(AlertConfig(k=1, n=1, m=3))
    other.restore(snap_a)
    assert other.open_alerts() == 1
    # The new owner continues the same alert: resolving it carries the original id.
    events = [e for i in (1, 2, 3) for e in other.step(dec(i, False, asset="a"), now_ms=NOW)]
    assert [e.event for e in events] == ["resolved"]
    assert events[0].alert_id == alert_id_for("a", "lstm-ae", T0)


def test_restore_trims_history_to_a_smaller_n() -> None:
    big = AlertPolicy(AlertConfig(k=5, n=8, m=1, strong_ratio=1.0))
    run(big, "AAAA....")
    small = AlertPolicy(AlertConfig(k=2, n=3, m=1, strong_ratio=1.0))
    small.restore(big.snapshot())
    assert len(small.snapshot()["assets"]["pump-1"]["recent"]) == 3
    assert [e.event for _, e in run(small, "A", start=8)] == []  # last 3: . . A
    assert [e.event for _, e in run(small, "A", start=9)] == ["opened"]


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"version": 2, "assets": {}}, "version 2"),
        ({"assets": {}}, "version None"),
        ({"version": 1, "assets": {"a": {"phase": "open"}}}, "lacks an open episode"),
        ({"version": 1, "assets": {"a": {"phase": "sleeping"}}}, "damaged"),
        ({"version": 1, "assets": {"a": {"recent": [{"ts_ms": "x"}]}}}, "damaged"),
        ({"version": 1, "assets": None}, "damaged"),
    ],
)
def test_restore_refuses_damaged_snapshots(snapshot: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlertPolicy().restore(snapshot)


# -- hypothesis: invariants over arbitrary decision sequences ------------------------------

configs = st.builds(
    lambda k, extra, m, cooldown_s, update_s, rise, strong, weak_k, weak_extra, weak_s, weak_min: (
        AlertConfig(
            k=k,
            n=k + extra,
            m=m,
            cooldown_ms=cooldown_s * 1_000,
            update_every_ms=update_s * 1_000,
            update_min_rise=rise,
            strong_ratio=strong,
            weak_k=weak_k,
            weak_n=weak_k + weak_extra,
            weak_max_ms=weak_s * 1_000,
            weak_min_k=weak_min,
        )
    ),
    k=st.integers(1, 4),
    extra=st.integers(0, 3),
    m=st.integers(1, 5),
    cooldown_s=st.integers(0, 20),
    update_s=st.integers(0, 10),
    rise=st.sampled_from([0.0, 0.1, 0.5]),
    # Scores run 4.1-40 against a threshold of 4: 1.3 and 2 make some crossings weak.
    strong=st.sampled_from([1.0, 1.3, 2.0]),
    weak_k=st.integers(1, 6),
    weak_extra=st.integers(0, 6),
    # Windows come 1-4000 ms apart (median ~0.6 s): 1 s and 3 s bound weak persistence by time.
    weak_s=st.sampled_from([1_800, 1, 3]),
    # The floor under the time bound: under k, between k and weak_k, over weak_k.
    weak_min=st.integers(1, 8),
)

step = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.integers(1, 4_000),  # reading-time step in ms, always forward per asset
    st.booleans(),
    st.integers(0, 2),
    # Half of them just over the threshold of 4, so runs of weak crossings happen.
    st.one_of(st.floats(4.1, 5.1), st.floats(4.5, 40.0)),
)
# Hypothesis keeps most lists short; half of the sequences are long enough for weak
# persistence (up to 12 windows of one asset) and cooldowns to matter.
steps = st.one_of(st.lists(step, max_size=150), st.lists(step, min_size=40, max_size=150))


def decisions_from(raw: Sequence[tuple[str, int, bool, int, float]]) -> list[Decision]:
    clock = dict.fromkeys(("a", "b", "c"), T0)
    out = []
    for asset, dt_ms, anomalous, severity, score in raw:
        clock[asset] += dt_ms
        out.append(
            Decision(
                asset,
                clock[asset],
                score if anomalous else 1.0,
                4.0,
                anomalous,
                severity if anomalous else 0,
                {"x": 0.5, "y": 0.3, "z": 0.2},
                "m",
                "1",
            )
        )
    return out


class Reference:
    """Independent, deliberately plain model of when opens and resolves must happen."""

    def __init__(self, cfg: AlertConfig) -> None:
        self.cfg = cfg
        self.open: dict[str, bool] = defaultdict(bool)
        # (anomalous, strong, ts) per window since the last resolve
        self.history: dict[str, list[tuple[bool, bool, int]]] = defaultdict(list)
        self.normal_streak: dict[str, int] = defaultdict(int)
        self.cooldown_until: dict[str, int] = defaultdict(lambda: -(2**62))

    def expect(self, d: Decision) -> str | None:
        cfg = self.cfg
        if self.open[d.asset]:
            if d.anomalous:
                self.normal_streak[d.asset] = 0
                return None
            self.normal_streak[d.asset] += 1
            if self.normal_streak[d.asset] == cfg.m:
                self.open[d.asset] = False
                self.history[d.asset] = []
                self.cooldown_until[d.asset] = d.ts_ms + cfg.cooldown_ms
                return "resolved"
            return None
        strong = d.anomalous and d.score >= cfg.strong_ratio * d.threshold
        self.history[d.asset].append((d.anomalous, strong, d.ts_ms))
        last_n = self.history[d.asset][-cfg.n :]
        opens = sum(a for a, _, _ in last_n) >= cfg.k
        if opens and cfg.strong_ratio > 1 and not any(s for _, s, _ in last_n):
            # Only weak crossings among the last n: they must persist, weak_k of weak_n,
            # fewer where weak_k windows would outlast weak_max_ms of reading time (never
            # under k nor weak_min_k).
            need, of = cfg.weak_k, cfg.weak_n
            times = [t for _, _, t in self.history[d.asset][-cfg.weak_n :]]
            if len(times) > 1:
                spacing = float(np.median(np.diff(times)))
                floor = max(cfg.k, cfg.weak_min_k)
                while need > floor and (need - 1) * spacing >= cfg.weak_max_ms:
                    need -= 1
                if need < cfg.weak_k:
                    of = min(cfg.weak_n, max(cfg.n, need, -(-cfg.weak_n * need // cfg.weak_k)))
            opens = sum(a for a, _, _ in self.history[d.asset][-of:]) >= need
        if d.anomalous and opens and d.ts_ms >= self.cooldown_until[d.asset]:
            self.open[d.asset] = True
            self.normal_streak[d.asset] = 0
            return "opened"
        return None


def check_invariants(
    cfg: AlertConfig, decisions: Sequence[Decision], events: Sequence[Sequence[AlertEvent]]
) -> None:
    by_asset: dict[str, list[AlertEvent]] = defaultdict(list)
    for evs in events:
        for ev in evs:
            by_asset[ev.asset].append(ev)
    reference = Reference(cfg)
    for d, evs in zip(decisions, events, strict=True):
        expected = reference.expect(d)
        lifecycle = [e.event for e in evs if e.event != "updated"]
        assert lifecycle == ([expected] if expected else []), f"at {d}"
        assert len(evs) <= 1
    seen_ids: set[str] = set()
    for asset, evs in by_asset.items():
        open_id: str | None = None
        last_resolved_ms: int | None = None
        last_report_ms = 0
        severity_rank = 0
        prev_window_ms = 0
        for ev in evs:
            window_ms = parse_ts(ev.window_at)
            assert window_ms >= prev_window_ms, "events of one asset out of order"
            prev_window_ms = window_ms
            rank = {"warning": 1, "critical": 2}[ev.severity]
            if ev.event == "opened":
                assert open_id is None, f"{asset}: two opens without a resolve"
                assert ev.alert_id not in seen_ids, "an alert id was reused across episodes"
                assert ev.alert_id == alert_id_for(asset, "m", parse_ts(ev.started_at))
                assert parse_ts(ev.started_at) <= window_ms
                if last_resolved_ms is not None:
                    assert window_ms - last_resolved_ms >= cfg.cooldown_ms, "cooldown broken"
                    assert parse_ts(ev.started_at) > last_resolved_ms
                open_id = ev.alert_id
                seen_ids.add(open_id)
                last_report_ms = window_ms
                severity_rank = rank
                assert ev.ended_at is None
            elif ev.event == "updated":
                assert open_id == ev.alert_id, f"{asset}: update outside its episode"
                escalated = rank > severity_rank
                assert escalated or window_ms - last_report_ms >= cfg.update_every_ms
                assert escalated == ev.reason.startswith("severity rose")
                assert rank >= severity_rank
                severity_rank, last_report_ms = rank, window_ms
                assert ev.ended_at is None
            else:
                assert open_id == ev.alert_id, f"{asset}: resolved without an open"
                assert rank == severity_rank
                assert ev.ended_at is not None
                assert parse_ts(ev.started_at) <= parse_ts(ev.ended_at) < window_ms
                assert ev.score == ev.peak_score
                open_id, last_resolved_ms = None, window_ms


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, raw=steps)
def test_invariants_hold_for_any_sequence(
    cfg: AlertConfig, raw: list[tuple[str, int, bool, int, float]]
) -> None:
    decisions = decisions_from(raw)
    policy = AlertPolicy(cfg)
    events = [policy.step(d, now_ms=NOW) for d in decisions]
    check_invariants(cfg, decisions, events)
    open_by_log = {e.asset: e.event != "resolved" for evs in events for e in evs}
    assert policy.open_alerts() == sum(open_by_log.values())
    for evs in events:
        for ev in evs:
            assert decode_event(encode_event(ev)) == ev


@settings(max_examples=100, deadline=None)
@given(cfg=configs, raw=steps, cut=st.integers(0, 150))
def test_snapshot_restore_anywhere_continues_exactly(
    cfg: AlertConfig, raw: list[tuple[str, int, bool, int, float]], cut: int
) -> None:
    decisions = decisions_from(raw)
    cut = min(cut, len(decisions))
    whole = AlertPolicy(cfg)
    expected = [e for d in decisions for e in whole.step(d, now_ms=NOW)]
    first = AlertPolicy(cfg)
    got = [e for d in decisions[:cut] for e in first.step(d, now_ms=NOW)]
    second = AlertPolicy(cfg)
    second.restore(json.loads(json.dumps(first.snapshot(), allow_nan=False)))
    got += [e for d in decisions[cut:] for e in second.step(d, now_ms=NOW)]
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 3),
    m=st.integers(1, 3),
    cooldown_s=st.integers(1, 30),
    windows=st.integers(10, 400),
)
def test_flapping_input_opens_at_most_once_per_cooldown(
    k: int, m: int, cooldown_s: int, windows: int
) -> None:
    cfg = AlertConfig(k=k, n=2 * k, m=m, cooldown_ms=cooldown_s * 1_000)
    policy = AlertPolicy(cfg)
    opens = 0
    for i in range(windows):
        for ev in policy.step(dec(i, i % 2 == 0), now_ms=NOW):
            opens += ev.event == "opened"
    span_s = windows - 1
    assert opens <= 1 + span_s // cooldown_s
    if m >= 2:
        # Alternating input never gives two normal windows in a row: one long alert.
        assert opens == 1


# -- hypothesis: the state machine under steps interleaved with restarts -------------------


class PolicyMachine(RuleBasedStateMachine):
    """Random steps on a few assets, with crash-restarts (snapshot -> new policy) in between."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = AlertConfig(k=2, n=3, m=2, cooldown_ms=3_000, update_every_ms=2_000)
        self.policy = AlertPolicy(self.cfg)
        self.clock = dict.fromkeys(("a", "b"), T0)
        self.open_ids: dict[str, str] = {}
        self.last_event_window: dict[str, int] = {}

    @rule(
        asset=st.sampled_from(["a", "b"]),
        dt_ms=st.integers(1, 3_000),
        anomalous=st.booleans(),
        severity=st.integers(1, 2),
        score=st.floats(4.5, 30.0),
    )
    def step(self, asset: str, dt_ms: int, anomalous: bool, severity: int, score: float) -> None:
        self.clock[asset] += dt_ms
        d = Decision(
            asset,
            self.clock[asset],
            score if anomalous else 1.0,
            4.0,
            anomalous,
            severity if anomalous else 0,
            {"x": 1.0},
            "m",
            "1",
        )
        for ev in self.policy.step(d, now_ms=NOW):
            assert ev.asset == asset
            window_ms = parse_ts(ev.window_at)
            assert window_ms >= self.last_event_window.get(asset, 0)
            self.last_event_window[asset] = window_ms
            if ev.event == "opened":
                assert asset not in self.open_ids, "opened twice without a resolve"
                self.open_ids[asset] = ev.alert_id
            else:
                assert self.open_ids.get(asset) == ev.alert_id, "id changed within an episode"
                if ev.event == "resolved":
                    del self.open_ids[asset]

    @rule()
    def restart(self) -> None:
        snapshot = json.loads(json.dumps(self.policy.snapshot()))
        self.policy = AlertPolicy(self.cfg)
        self.policy.restore(snapshot)

    @invariant()
    def open_count_matches_the_event_log(self) -> None:
        assert self.policy.open_alerts() == len(self.open_ids)
        for asset in ("a", "b"):
            assert (self.policy.phase(asset) == "open") == (asset in self.open_ids)


PolicyMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=60, deadline=None)
TestPolicyMachine = PolicyMachine.TestCase


# -- sensor alerts: tracks of their own through the same machine -----------------------------


def sensor(
    i: int,
    flagged: bool,
    *,
    rule: str = "stuck",
    signal: str = "temp",
    asset: str = "pump-1",
    score: float = 40.0,
    limit: float = 30.0,
) -> Decision:
    """Reading ``i`` of one signal as judged by one sensor-health rule."""
    return Decision(
        asset=asset,
        ts_ms=T0 + i * 1_000,
        score=score if flagged else 0.0,
        threshold=limit,
        anomalous=flagged,
        severity=0,
        contributions={},
        model_name="lstm-ae",
        model_version="7",
        kind="sensor",
        rule=rule,
        signal=signal,
    )


def test_a_sensor_decision_opens_and_resolves_its_own_alert() -> None:
    policy = AlertPolicy(sensor=AlertConfig(k=1, n=1, m=3, cooldown_ms=0))
    events = [e for i in range(5) for e in policy.step(sensor(i, i < 2), now_ms=NOW)]
    assert [e.event for e in events] == ["opened", "resolved"]
    opened, resolved = events
    assert opened.kind == resolved.kind == "sensor"
    assert opened.reason == "stuck: temp at 40, over its limit 30"
    assert resolved.reason == "stuck: temp back to normal for 3 readings in a row"
    assert [(t.signal, t.contribution) for t in opened.top_signals] == [("temp", 1.0)]
    assert opened.ratio == pytest.approx(40 / 30) and opened.severity == "warning"
    assert resolved.ended_at == format_ts(T0 + 1_000)
    assert (
        opened.alert_id
        == resolved.alert_id
        == alert_id_for("pump-1", "lstm-ae", T0, kind="sensor", rule="stuck", signal="temp")
    )
    assert decode_event(encode_event(opened)) == opened
    assert json.loads(encode_event(opened))["kind"] == "sensor"


@pytest.mark.parametrize("rule", ["stuck", "spike", "out_of_range"])
def test_a_sensor_events_reason_names_its_rule(rule: str) -> None:
    policy = AlertPolicy(sensor=AlertConfig(k=1, n=1, m=1, cooldown_ms=0))
    events = [e for i in range(2) for e in policy.step(sensor(i, i == 0, rule=rule), now_ms=NOW)]
    assert [e.event for e in events] == ["opened", "resolved"]
    assert all(e.reason.startswith(f"{rule}: temp") for e in events)


def test_a_sensor_alert_and_the_anomaly_alert_are_independent() -> None:
    policy = AlertPolicy(
        AlertConfig(k=2, n=3, m=2, cooldown_ms=0), sensor=AlertConfig(k=1, n=1, m=4)
    )
    log: list[tuple[int, str, str]] = []
    for i, (anomalous, stuck) in enumerate(
        [(True, True), (True, True), (False, True), (False, True), (False, False)]
        + [(False, False)] * 4
    ):
        for d in (dec(i, anomalous), sensor(i, stuck), sensor(i, False, signal="flow")):
            log += [(i, e.kind, e.event) for e in policy.step(d, now_ms=NOW)]
    assert log == [
        (0, "sensor", "opened"),  # the sensor rule debounced already: k = n = 1
        (1, "anomaly", "opened"),
        (3, "anomaly", "resolved"),
        (7, "sensor", "resolved"),  # m = 4 readings back to normal
    ]
    assert policy.phase("pump-1") == "idle"
    assert policy.phase("pump-1", "sensor", "stuck", "temp") == "cooling"
    assert policy.phase("pump-1", "sensor", "stuck", "flow") == "idle"


def test_open_alerts_count_every_kind() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=5))
    policy.step(dec(0, True), now_ms=NOW)
    policy.step(sensor(0, True), now_ms=NOW)
    policy.step(sensor(0, True, rule="spike"), now_ms=NOW)
    policy.step(sensor(0, True, asset="fan-2", signal="rpm"), now_ms=NOW)
    assert policy.open_alerts() == 4
    assert policy.has_open("pump-1") and policy.has_open("fan-2") and not policy.has_open("x")
    assert policy.open_tracks("pump-1") == [
        ("anomaly", None, None),
        ("sensor", "stuck", "temp"),
        ("sensor", "spike", "temp"),
    ]
    assert policy.phase("fan-2") == "idle"  # its anomaly alert: never stepped
    assert policy.phase("fan-2", "sensor", "stuck", "rpm") == "open"


def test_sensor_alert_ids_differ_from_anomaly_ids_and_from_each_other() -> None:
    ids = {
        alert_id_for("pump-1", "lstm-ae", T0),
        alert_id_for("pump-1", "lstm-ae", T0, kind="sensor", rule="stuck", signal="temp"),
        alert_id_for("pump-1", "lstm-ae", T0, kind="sensor", rule="spike", signal="temp"),
        alert_id_for("pump-1", "lstm-ae", T0, kind="sensor", rule="stuck", signal="flow"),
        alert_id_for("pump-2", "lstm-ae", T0, kind="sensor", rule="stuck", signal="temp"),
        alert_id_for("pump-1", "lstm-ae", T0 + 1, kind="sensor", rule="stuck", signal="temp"),
        alert_id_for("pump-1", "lstm-ae", T0, kind="quality", rule="viscosity"),
    }
    assert len(ids) == 7
    # The anomaly id is exactly the one that was always derived.
    assert (
        alert_id_for("pump-1", "lstm-ae", T0)
        == (hashlib.sha256(f"pump-1|lstm-ae|{T0}".encode()).hexdigest()[:32])
    )
    # Names with the old separator in them cannot collide.
    assert alert_id_for("a|b", "m", T0, kind="sensor", rule="stuck", signal="c") != (
        alert_id_for("a", "m", T0, kind="sensor", rule="stuck", signal="b|c")
    )


def test_sensor_alerts_escalate_and_update_with_the_rules_prefix() -> None:
    policy = AlertPolicy(sensor=AlertConfig(k=1, n=1, m=5, update_every_ms=0, update_min_rise=0.5))
    scores = [31.0, 45.0, 61.0, 100.0, 130.0]
    events = [
        e for i, s in enumerate(scores) for e in policy.step(sensor(i, True, score=s), now_ms=NOW)
    ]
    assert [(e.event, e.severity) for e in events] == [
        ("opened", "warning"),
        ("updated", "critical"),
        ("updated", "critical"),
    ]
    assert events[1].reason == "stuck: temp severity rose to critical"
    assert events[2].reason == "stuck: temp peak score rose 64% to 100"


def test_sensor_alerts_use_their_own_config() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1), sensor=AlertConfig(k=2, n=3, m=1, cooldown_ms=0))
    assert policy.config_for("sensor").k == 2 and policy.config_for("anomaly").k == 1
    assert policy.step(sensor(0, True), now_ms=NOW) == []
    (ev,) = policy.step(sensor(1, True), now_ms=NOW)
    assert ev.reason == "stuck: temp at 40, over its limit 30 (2 flagged readings)"
    assert ev.started_at == format_ts(T0)
    default = AlertPolicy()
    assert default.sensor_config == SENSOR_ALERT_DEFAULTS
    assert (SENSOR_ALERT_DEFAULTS.k, SENSOR_ALERT_DEFAULTS.n) == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "weather"}, "kind must be one of"),
        ({"kind": "sensor"}, "needs a rule"),
        ({"kind": "sensor", "rule": "wobbly", "signal": "t"}, "rule is one of"),
        ({"kind": "sensor", "rule": "stuck"}, "needs the signal"),
        ({"kind": "anomaly", "rule": "stuck"}, "names no rule"),
        ({"signal": "temp"}, "names no rule"),
        ({"kind": "quality"}, "needs a rule"),
    ],
)
def test_decision_refuses_bad_tracks(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "asset": "p",
        "ts_ms": T0,
        "score": 1.0,
        "threshold": 2.0,
        "anomalous": False,
        "severity": 0,
        "contributions": {},
        "model_name": "m",
        "model_version": "1",
    }
    with pytest.raises(ValueError, match=message):
        Decision(**{**base, **kwargs})  # type: ignore[arg-type]


# -- columns: step_track and step_sensor are step, in bulk ---------------------------------------

sensor_configs = st.builds(
    lambda k, extra, m, cooldown_s, update_s, rise: AlertConfig(
        k=k,
        n=k + extra,
        m=m,
        cooldown_ms=cooldown_s * 1_000,
        update_every_ms=update_s * 1_000,
        update_min_rise=rise,
    ),
    k=st.integers(1, 3),
    extra=st.integers(0, 3),
    m=st.integers(1, 6),
    cooldown_s=st.integers(0, 10),
    update_s=st.integers(0, 5),
    rise=st.sampled_from([0.0, 0.2, 1.0]),
)


def cut_points(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = [0, *sorted({c for c in cuts if 0 < c < n}), n]
    return list(itertools.pairwise(bounds))


@settings(max_examples=120, deadline=None)
@given(
    cfg=sensor_configs,
    flags=st.lists(st.booleans(), max_size=120),
    scores=st.lists(st.floats(31.0, 200.0), min_size=120, max_size=120),
    cuts=st.lists(st.integers(0, 120), max_size=6),
    restart=st.integers(0, 120),
)
def test_step_track_is_step_per_reading(
    cfg: AlertConfig, flags: list[bool], scores: list[float], cuts: list[int], restart: int
) -> None:
    n = len(flags)
    ts = np.array([T0 + i * 700 for i in range(n)], np.int64)
    one = AlertPolicy(sensor=cfg)
    expected = []
    for i in range(n):
        d = sensor(i, flags[i], score=scores[i])
        d = Decision(**{**d.__dict__, "ts_ms": int(ts[i])})
        expected += one.step(d, now_ms=NOW)
    bulk = AlertPolicy(sensor=cfg)
    got = []
    for a, b in cut_points(n, cuts):
        if a <= restart < b:  # a crash-restart somewhere in the stream
            snap = json.loads(json.dumps(bulk.snapshot(), allow_nan=False))
            bulk = AlertPolicy(sensor=cfg)
            bulk.restore(snap)
        got += bulk.step_track(
            "pump-1",
            ts[a:b],
            np.array(flags[a:b], np.bool_),
            np.where(flags[a:b], scores[a:b], 0.0),
            30.0,
            kind="sensor",
            rule="stuck",
            signal="temp",
            model_name="lstm-ae",
            model_version="7",
            now_ms=NOW,
        )
    assert got == expected
    assert bulk.snapshot() == one.snapshot()


def per_reading(
    policy: AlertPolicy,
    ts: np.ndarray,
    signals: tuple[str, ...],
    fired: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    limits: dict[str, np.ndarray],
    present: np.ndarray,
) -> list[AlertEvent]:
    """The reference: one sensor Decision per reading, rule and signal with a value."""
    events = []
    for i in range(len(ts)):
        for name in fired:
            for j, signal in enumerate(signals):
                if not present[i, j]:
                    continue
                d = Decision(
                    "pump-1",
                    int(ts[i]),
                    float(scores[name][i, j]),
                    float(limits[name][j]),
                    bool(fired[name][i, j]),
                    0,
                    {},
                    "lstm-ae",
                    "7",
                    kind="sensor",
                    rule=name,
                    signal=signal,
                )
                events += policy.step(d, now_ms=NOW)
    return events


@settings(max_examples=80, deadline=None)
@given(
    cfg=sensor_configs,
    n=st.integers(0, 150),
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from([0.01, 0.1, 0.5]),
    cuts=st.lists(st.integers(0, 150), max_size=6),
)
def test_step_sensor_is_step_per_reading_rule_and_signal(
    cfg: AlertConfig, n: int, seed: int, rate: float, cuts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    signals = ("temp", "flow", "rpm")
    ts = T0 + np.cumsum(rng.integers(1, 3_000, n))
    fired = {r: rng.random((n, 3)) < rate for r in ("stuck", "spike", "out_of_range")}
    # Faults come in runs: stretch each flag over a few readings.
    fired = {r: f | np.roll(f, 1, axis=0) & (rng.random((n, 3)) < 0.7) for r, f in fired.items()}
    scores = {r: np.where(f, rng.uniform(1.0, 100.0, (n, 3)), 0.0) for r, f in fired.items()}
    limits = {r: rng.uniform(0.5, 50.0, 3) for r in fired}
    present = rng.random((n, 3)) > 0.1
    for r in fired:
        fired[r] &= present
    expected = per_reading(AlertPolicy(sensor=cfg), ts, signals, fired, scores, limits, present)
    bulk = AlertPolicy(sensor=cfg)
    got = []
    for a, b in cut_points(n, cuts):
        got += bulk.step_sensor(
            "pump-1",
            ts[a:b],
            signals,
            {r: f[a:b] for r, f in fired.items()},
            {r: s[a:b] for r, s in scores.items()},
            limits,
            present=present[a:b],
            model_name="lstm-ae",
            model_version="7",
            now_ms=NOW,
        )
    assert got == expected
    open_by_log = {e.alert_id: e.event != "resolved" for e in got}
    assert bulk.open_alerts() == sum(open_by_log.values())
    # Only tracks in progress are kept: none is idle with nothing pending.
    for track in bulk.snapshot()["assets"].get("pump-1", {}).get("tracks", []):
        assert track["phase"] != "idle" or any(w.get("severity") for w in track["recent"])


def test_step_sensor_drops_tracks_once_quiet_and_the_asset_with_them() -> None:
    policy = AlertPolicy(sensor=AlertConfig(k=1, n=1, m=2, cooldown_ms=2_000))
    ts = T0 + np.arange(8) * 1_000
    flags = np.zeros((8, 2), np.bool_)
    flags[0, 1] = True
    kwargs = {"model_name": "m", "model_version": "1", "now_ms": NOW}
    zeros = np.zeros((8, 2))
    limits = np.array([1.0, 1.0])
    scores = np.where(flags, 5.0, 0.0)

    def step(a: int, b: int) -> list[AlertEvent]:
        return policy.step_sensor(
            "p",
            ts[a:b],
            ("a", "b"),
            {"spike": flags[a:b]},
            {"spike": scores[a:b]},
            {"spike": limits},
            **kwargs,  # type: ignore[arg-type]
        )

    assert [e.event for e in step(0, 3)] == ["opened", "resolved"]
    assert policy.phase("p", "sensor", "spike", "b") == "cooling"
    assert [t["signal"] for t in policy.snapshot()["assets"]["p"]["tracks"]] == ["b"]
    assert step(3, 8) == []  # the cooldown ends: nothing is left to remember
    assert policy.assets() == [] and policy.snapshot_asset("p") is None
    assert (
        policy.step_sensor(
            "q",
            ts,
            ("a", "b"),
            {"stuck": flags & False},
            {"stuck": zeros},
            {"stuck": limits},
            **kwargs,  # type: ignore[arg-type]
        )
        == []
    )
    assert policy.assets() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fired": {"wobbly": np.zeros((3, 2), np.bool_)}}, "wobbly"),
        ({"fired": {"stuck": np.zeros((3, 1), np.bool_)}}, "fired"),
        ({"limits": {"stuck": np.ones(3)}}, "limits"),
        ({"present": np.ones((2, 2), np.bool_)}, "present"),
    ],
)
def test_step_sensor_refuses_columns_of_the_wrong_shape(
    change: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "fired": {"stuck": np.zeros((3, 2), np.bool_)},
        "scores": {"stuck": np.zeros((3, 2)), "wobbly": np.zeros((3, 2))},
        "limits": {"stuck": np.ones(2), "wobbly": np.ones(2)},
        "present": None,
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        AlertPolicy().step_sensor(
            "p",
            T0 + np.arange(3),
            ("a", "b"),
            model_name="m",
            model_version="1",
            now_ms=NOW,
            **args,  # type: ignore[arg-type]
        )


# -- snapshots with tracks -------------------------------------------------------------------


def mixed(i: int, ch: str) -> list[Decision]:
    """Window/reading ``i``: 'A' anomalous, 'S' stuck, 'B' both, '.' neither."""
    return [
        dec(i, ch in "AB", severity=2 if i % 7 == 0 and ch in "AB" else None),
        sensor(i, ch in "SB", score=30.0 + 3 * i),
        sensor(i, ch == "B", rule="spike", signal="flow"),
    ]


def test_snapshot_with_sensor_tracks_continues_exactly_through_json() -> None:
    cfg = AlertConfig(k=2, n=3, m=2, cooldown_ms=2_000, update_every_ms=1_000)
    scfg = AlertConfig(k=1, n=2, m=3, cooldown_ms=3_000, update_every_ms=0)
    seq = [d for i, ch in enumerate("SBBA..SSS.A.B...SSSS....BB..") for d in mixed(i, ch)]
    whole = AlertPolicy(cfg, sensor=scfg)
    expected = [e for d in seq for e in whole.step(d, now_ms=NOW)]
    assert {e.kind for e in expected} == {"anomaly", "sensor"}
    for cut in range(0, len(seq) + 1, 2):
        first = AlertPolicy(cfg, sensor=scfg)
        got = [e for d in seq[:cut] for e in first.step(d, now_ms=NOW)]
        second = AlertPolicy(cfg, sensor=scfg)
        second.restore(json.loads(json.dumps(first.snapshot(), allow_nan=False)))
        assert second.snapshot() == first.snapshot()
        got += [e for d in seq[cut:] for e in second.step(d, now_ms=NOW)]
        assert got == expected, f"diverged after a restore at decision {cut}"


# A snapshot exactly as the policy wrote it before sensor alerts existed.
OLD_SNAPSHOT = {
    "version": 1,
    "assets": {
        "pump-1": {
            "phase": "open",
            "clock_ms": T0 + 2_000,
            "cooldown_until_ms": 0,
            "recent": [],
            "episode": {
                "alert_id": alert_id_for("pump-1", "lstm-ae", T0),
                "started_at_ms": T0,
                "severity": 1,
                "peak_score": 8.0,
                "peak_threshold": 4.0,
                "peak_top": [["vibration_rms", 0.6]],
                "last_anomalous_ms": T0 + 2_000,
                "normal_streak": 0,
                "reported_peak": 8.0,
                "last_update_ms": T0 + 2_000,
            },
        },
        "pump-2": {
            "phase": "idle",
            "clock_ms": T0,
            "cooldown_until_ms": 0,
            "recent": [{"ts_ms": T0}],
        },
    },
}


def test_a_snapshot_from_before_sensor_alerts_restores_and_continues() -> None:
    policy = AlertPolicy(AlertConfig(k=3, n=5, m=2))
    policy.restore(json.loads(json.dumps(OLD_SNAPSHOT)))
    assert policy.open_alerts() == 1 and policy.open_tracks("pump-1") == [("anomaly", None, None)]
    policy.step(sensor(3, True), now_ms=NOW)  # a sensor alert beside the restored one
    events = [e for i in (4, 5) for e in policy.step(dec(i, False), now_ms=NOW)]
    assert [(e.kind, e.event, e.alert_id) for e in events] == [
        ("anomaly", "resolved", alert_id_for("pump-1", "lstm-ae", T0))
    ]
    assert policy.open_tracks("pump-1") == [("sensor", "stuck", "temp")]
    # The anomaly fields of the snapshot keep their old shape; tracks are beside them.
    snap = policy.snapshot()["assets"]["pump-1"]
    assert set(OLD_SNAPSHOT["assets"]["pump-1"]) | {"tracks"} == set(snap)  # type: ignore[index]


@pytest.mark.parametrize(
    ("track", "message"),
    [
        ({"kind": "anomaly", "rule": "x"}, "not a track"),
        ({"kind": "sensor", "rule": "wobbly", "signal": "t"}, "rule is one of"),
        ({"kind": "sensor", "rule": "stuck"}, "needs the signal"),
        ({"kind": "sensor", "rule": "stuck", "signal": "t", "phase": "open"}, "lacks an open"),
        ({"kind": "sensor", "signal": "t"}, "damaged"),
    ],
)
def test_restore_refuses_damaged_tracks(track: dict[str, object], message: str) -> None:
    snapshot = {"version": 1, "assets": {"a": {"tracks": [track]}}}
    with pytest.raises(ValueError, match=message):
        AlertPolicy().restore(snapshot)


def test_restore_refuses_a_track_twice() -> None:
    track = {"kind": "sensor", "rule": "stuck", "signal": "t"}
    with pytest.raises(ValueError, match="twice"):
        AlertPolicy().restore({"version": 1, "assets": {"a": {"tracks": [track, track]}}})


# -- resolve: an anomaly alert ended from outside the scores ----------------------------------


def test_resolve_ends_the_open_anomaly_alert_as_its_normal_windows_would() -> None:
    cfg = AlertConfig(k=2, n=3, m=3, cooldown_ms=5_000)
    policy, twin = AlertPolicy(cfg), AlertPolicy(cfg)
    seq = [dec(0, True, score=6.0), dec(1, True, score=12.0, severity=2), dec(2, True)]
    for d in seq:
        policy.step(d, now_ms=NOW)
        twin.step(d, now_ms=NOW)
    normal = run(twin, "...", start=3)  # the twin resolves the usual way, at window 5
    assert [e.event for _, e in normal] == ["resolved"]
    usual = normal[0][1]

    events = policy.resolve("pump-1", ts_ms=T0 + 5_000, now_ms=NOW + 1, reason="rebaselined")
    assert [e.event for e in events] == ["resolved"]
    ev = events[0]
    assert ev.reason == "rebaselined"
    assert ev.window_at == format_ts(T0 + 5_000)
    assert ev.detected_at == format_ts(NOW + 1)
    assert ev.ended_at == format_ts(T0 + 2_000)  # the episode's last anomalous window
    assert ev.alert_id == alert_id_for("pump-1", "lstm-ae", T0)
    assert (ev.model.name, ev.model.version) == ("lstm-ae", "7")
    assert ev.kind == "anomaly" and ev.severity == "critical"
    # Everything else is what the m normal windows would have said, and so is the state.
    assert msgspec.structs.replace(ev, reason=usual.reason, detected_at=format_ts(NOW)) == usual
    assert policy.snapshot() == twin.snapshot()
    assert policy.phase("pump-1") == "cooling" and policy.open_alerts() == 0
    assert policy.resolve("pump-1", ts_ms=T0 + 6_000, now_ms=NOW, reason="again") == []


def test_resolve_without_an_open_anomaly_alert_does_nothing() -> None:
    policy = AlertPolicy(AlertConfig(k=3, n=5, m=2), sensor=AlertConfig(k=1, n=1, m=5))
    assert policy.resolve("nobody", ts_ms=T0, now_ms=NOW, reason="rebaselined") == []
    assert policy.assets() == []
    run(policy, "AA")  # pending: 2 of the 3 windows that would open
    policy.step(sensor(2, True), now_ms=NOW)  # a sensor alert is open, the anomaly one is not
    before = policy.snapshot()
    assert policy.resolve("pump-1", ts_ms=T0 + 9_000, now_ms=NOW, reason="rebaselined") == []
    assert policy.snapshot() == before  # not even the clock moved
    assert policy.open_tracks("pump-1") == [("sensor", "stuck", "temp")]


def test_resolve_leaves_sensor_alerts_open() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=5), sensor=AlertConfig(k=1, n=1, m=5))
    for d in mixed(0, "B"):
        policy.step(d, now_ms=NOW)
    sensor_before = policy.snapshot()["assets"]["pump-1"]["tracks"]
    events = policy.resolve("pump-1", ts_ms=T0 + 1_000, now_ms=NOW, reason="rebaselined")
    assert [(e.kind, e.event) for e in events] == [("anomaly", "resolved")]
    assert policy.open_tracks("pump-1") == [
        ("sensor", "stuck", "temp"),
        ("sensor", "spike", "flow"),
    ]
    assert policy.snapshot()["assets"]["pump-1"]["tracks"] == sensor_before


def test_resolve_cools_down_from_the_assets_clock_which_never_goes_back() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=5, cooldown_ms=4_000))
    run(policy, "AAAA")  # the asset's clock is at window 3
    events = policy.resolve("pump-1", ts_ms=T0 + 1_000, now_ms=NOW, reason="rebaselined")
    assert events[0].window_at == format_ts(T0 + 1_000)  # as given
    assert policy.snapshot()["assets"]["pump-1"]["cooldown_until_ms"] == T0 + 3_000 + 4_000


def test_snapshot_after_resolve_restores_and_continues_exactly() -> None:
    cfg = AlertConfig(k=2, n=3, m=4, cooldown_ms=3_000)
    policy = AlertPolicy(cfg)
    run(policy, "AAA")
    policy.resolve("pump-1", ts_ms=T0 + 3_000, now_ms=NOW, reason="rebaselined")
    snap = json.loads(json.dumps(policy.snapshot(), allow_nan=False))
    assert snap["assets"]["pump-1"]["phase"] == "cooling"
    assert snap["assets"]["pump-1"]["episode"] is None
    assert snap["assets"]["pump-1"]["recent"] == []
    restored = AlertPolicy(cfg)
    restored.restore(snap)
    assert restored.snapshot() == policy.snapshot()
    pattern = "AAAAA.....AA"
    assert run(restored, pattern, start=4) == run(policy, pattern, start=4)
    assert restored.snapshot() == policy.snapshot()


def test_a_new_alert_opens_after_the_cooldown_that_resolve_started() -> None:
    policy = AlertPolicy(AlertConfig(k=3, n=5, m=10, cooldown_ms=5_000))
    first = run(policy, "AAA")
    assert [(i, e.event) for i, e in first] == [(2, "opened")]
    policy.resolve("pump-1", ts_ms=T0 + 4_000, now_ms=NOW, reason="rebaselined")
    # The old episode's windows are gone: k fresh ones are needed, and none opens before
    # the cooldown ends at t=9 s, though the windows meanwhile count.
    assert run(policy, "AAAA", start=5) == []
    events = run(policy, "A", start=9)
    assert [(i, e.event) for i, e in events] == [(9, "opened")]
    assert events[0][1].alert_id == alert_id_for("pump-1", "lstm-ae", T0 + 5_000)
    assert events[0][1].alert_id != first[0][1].alert_id


def test_resolve_after_a_restore_needs_the_model_until_a_decision_names_it() -> None:
    policy = AlertPolicy(AlertConfig(k=1, n=1, m=5))
    run(policy, "A")
    restored = AlertPolicy(AlertConfig(k=1, n=1, m=5))
    restored.restore(policy.snapshot())
    with pytest.raises(ValueError, match="pass model_name= and model_version="):
        restored.resolve("pump-1", ts_ms=T0 + 1_000, now_ms=NOW, reason="rebaselined")
    with pytest.raises(ValueError, match="together"):
        restored.resolve("pump-1", ts_ms=T0, now_ms=NOW, reason="r", model_name="lstm-ae")
    events = restored.resolve(
        "pump-1",
        ts_ms=T0 + 1_000,
        now_ms=NOW,
        reason="rebaselined",
        model_name="lstm-ae",
        model_version="8",
    )
    assert [(e.event, e.model.version) for e in events] == [("resolved", "8")]
    # A decision names the model again (step_track too), so no argument is needed.
    again = AlertPolicy(AlertConfig(k=1, n=1, m=5))
    again.restore(policy.snapshot())
    again.step_track(
        "pump-1",
        [T0 + 1_000],
        [True],
        [9.0],
        4.0,
        kind="anomaly",
        rule=None,
        signal=None,
        model_name="pca",
        model_version="2",
        now_ms=NOW,
    )
    events = again.resolve("pump-1", ts_ms=T0 + 2_000, now_ms=NOW, reason="rebaselined")
    assert [(e.model.name, e.model.version) for e in events] == [("pca", "2")]

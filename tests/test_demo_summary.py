"""The demo's summary: alerts read back from Kafka matched to the injected faults."""

from __future__ import annotations

from pathlib import Path

from alerts.events import AlertEvent, ModelRef
from common.timestamps import format_ts
from plantwatch.demo import Fault, LiveView, summarise, write_pages

T0 = 1_795_899_600_000


def event(asset: str, at_ms: int, alert_id: str, kind: str = "opened") -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id, event=kind, asset=asset, severity="warning",
        started_at=format_ts(at_ms), ended_at=None, detected_at=format_ts(at_ms),
        score=5.0, threshold=4.0, top_signals=[], model=ModelRef("pca", "v"),
        peak_score=5.0, ratio=1.25, reason="3 of the last 5 windows over threshold",
        window_at=format_ts(at_ms),
    )  # fmt: skip


def test_detected_missed_false_and_duplicates() -> None:
    faults = [
        Fault("p1", "level_shift", T0, T0 + 60_000),
        Fault("p2", "stuck_sensor", T0, T0 + 60_000),
    ]
    events = [
        event("p1", T0 + 2_000, "a"),
        event("p1", T0 + 2_000, "a"),  # a replayed duplicate: same id, one alert
        event("p1", T0 + 40_000, "b"),  # re-opened inside the same fault: not false
        event("p3", T0 + 10_000, "c"),  # the control asset: false
        event("p2", T0 + 200_000, "d"),  # long after its fault ended: false
    ]
    report = summarise(faults, events)
    assert (report.faults, report.detected, report.false_alerts) == (2, 1, 2)
    assert report.median_delay_s == 2.0
    assert any("missed" in line for line in report.lines)


def test_the_demo_writes_its_run_as_a_page_and_a_picture(tmp_path: Path) -> None:
    view = LiveView(("temp",), live=False)
    for i in range(600):
        score = 9.0 if 200 <= i < 260 else 1.0
        view.history.setdefault("p1", []).append((T0 + i * 250, score, 4.0, 205 <= i < 270))
        view.history.setdefault("p2", []).append((T0 + i * 250, 1.0, 4.0, False))
    faults = [Fault("p1", "level_shift", T0 + 50_000, T0 + 65_000)]
    events = [event("p1", T0 + 51_250, "a"), event("p1", T0 + 67_500, "a", kind="resolved")]
    page, png = write_pages(view, faults, events, summarise(faults, events), tmp_path)
    assert page is not None and png is not None
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = page.read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == 2  # one figure per asset
    assert "<h2>Alerts (1)</h2>" in text and "p1: level_shift" in text
    assert "p2: no fault injected" in text and "detected 1" in text

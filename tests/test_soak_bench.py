"""The soak benchmark (``bench/soak.py``): what it computes, and a short run through a broker.

The hour-long run itself is a benchmark (``docs/RELIABILITY.md`` has its figures); here the
growth and drift arithmetic is checked on samples with a known leak and a known slowdown,
and a half-minute run checks the script goes through against the real broker. No timing
is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench_scripts import load_bench


def _samples(leak_mb_per_h: float, p99_late_s: float) -> list[object]:
    """An hour sampled each minute: RSS grows linearly, latency moves to a slower bucket
    in the last third."""
    soak = load_bench("soak")
    out = []
    fast = slow = 0.0
    for minute in range(61):
        if minute > 40:
            slow += 100
        elif minute:
            fast += 100
        buckets = {0.1: fast, p99_late_s: fast + slow, float("inf"): fast + slow}
        out.append(
            soak.Sample(
                at_s=60.0 * minute,
                rss_mb=500.0 + leak_mb_per_h * minute / 60,
                sent=1000 * minute,
                counted=1000.0 * minute - (50 if minute == 30 else 0),
                buckets=buckets,
            )
        )
    return out


def test_a_leak_and_a_slowdown_are_measured_as_such() -> None:
    soak = load_bench("soak")
    summary = soak.summarise(_samples(leak_mb_per_h=30.0, p99_late_s=1.0), warmup_s=300.0)
    assert summary.growth_mb_per_h == pytest.approx(30.0)
    assert summary.p99_first_third_ms <= 100.0
    assert summary.p99_last_third_ms > 500.0
    assert summary.p99_drift > 5
    assert (summary.max_behind, summary.behind_at_end) == (50, 0)
    flat = soak.summarise(_samples(leak_mb_per_h=0.0, p99_late_s=0.1), warmup_s=300.0)
    assert flat.growth_mb_per_h == pytest.approx(0.0)
    rows = soak.intervals(_samples(0.0, 1.0), 600.0)
    assert [r.end_min for r in rows] == [10, 20, 30, 40, 50, 60]
    assert all(r.windows == 1000 for r in rows)


@pytest.mark.integration
def test_a_short_soak_runs_through_the_broker(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    out = tmp_path / "soak.json"
    code = load_bench("soak").main(
        [
            "--minutes", "0.6", "--assets", "10", "--history-s", "600",
            "--sample-s", "5", "--interval-min", "0.2", "--warmup-min", "0.1",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["summary"]["readings_sent"] >= 300
    assert result["summary"]["readings_counted"] > 0
    # Windows were scored (the first interval may be warm-up, the last a few seconds).
    assert sum(i["windows"] for i in result["intervals"]) > 0
    assert result["summary"]["rss_end_mb"] > 0

"""Stage costs of a profiled ``plantwatch run`` (``python -m cProfile -o FILE``), by stage.

Used by ``e2e_broker.py --profile SCORER``; also runs alone on a kept profile:

    .venv/bin/python bench/e2e_profile.py run.prof 120000

Each stage is the cumulative time of the functions that do it, on the run loop's thread
(cProfile sees only that one: librdkafka's own threads and torch's intra-op threads are
not in it). cProfile's per-call overhead inflates Python-heavy stages more than the numpy
and torch ones, so the shares are what to read, not the absolute seconds.
"""

from __future__ import annotations

import pstats
import sys
from typing import Any

Func = tuple[str, int, str]

#: (stage, what it covers), in the order of the data flow.
STAGES = (
    ("consume", "librdkafka consume() in poll_batch, waits for data included"),
    ("decode", "decode_messages: msgspec decode, key and future-time checks"),
    ("windows", "Monitor.process less the parts below: columns, time order, windows, copies"),
    ("  of which push_runs", "cleaning and the ring buffers (push_runs, push_many, push)"),
    ("model", "score_batch, or the stream's score_windows (one call per batch)"),
    ("thresholds", "Threshold.update per asset run, and the copies taken for batch cuts"),
    ("alerts", "_judge less thresholds: a Decision per window, AlertPolicy.step"),
    ("sensor health", "SensorWatch.check(_columns) on every accepted reading"),
    ("baselines, drift", "DriftFollower follow/apply, the baseline watch, Page-Hinkley"),
    ("metrics", "RunLoop._observe (counters, the latency histogram per window, gauges)"),
    ("produce", "DLQ, alert events, notices, and the flush that checks every delivery"),
    ("checkpoint", "state snapshots to the state topic, flush, offset commit"),
    ("other", "the rest of RunLoop._step"),
)


def _cum(
    stats: dict[Func, Any],
    where: str,
    name: str,
    caller: tuple[str, str] | None = None,
) -> float:
    """Cumulative seconds of functions ``name`` in files containing ``where``; with
    ``caller``, only the time of calls made from that (file part, function)."""
    total = 0.0
    for (filename, _line, func), (_cc, _nc, _tt, ct, callers) in stats.items():
        if func != name or where not in filename.replace("\\", "/"):
            continue
        if caller is None:
            total += ct
            continue
        for (c_file, _c_line, c_func), value in callers.items():
            if c_func == caller[1] and caller[0] in c_file.replace("\\", "/"):
                total += value[3]
    return total


def stage_seconds(path: str) -> dict[str, float]:
    stats: dict[Func, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    runloop, monitor = "plantwatch/runloop.py", "plantwatch/monitor.py"
    process_from = (monitor, "_process_part")
    judge_from = (monitor, "_judge")
    step = _cum(stats, runloop, "_step")
    poll = _cum(stats, "stream/source.py", "poll_batch")
    decode = _cum(stats, "stream/source.py", "decode_messages")
    process = _cum(stats, monitor, "process")
    model = _cum(stats, "models/", "score_batch", process_from) + _cum(
        stats, "models/", "score_windows", process_from
    )
    judge = _cum(stats, monitor, "_judge")
    thresholds = _cum(stats, "models/thresholds/", "update", judge_from) + _cum(
        stats, "copy.py", "deepcopy", judge_from
    )
    sensors = sum(
        _cum(stats, "plantwatch/sensors.py", f, process_from) for f in ("check", "check_columns")
    )
    baselines = sum(
        _cum(stats, "plantwatch/baselines.py", f, process_from)
        for f in ("follow", "apply", "watch")
    ) + _cum(stats, monitor, "_watch_drift")
    windows = process - model - judge - sensors - baselines
    produce = sum(
        _cum(stats, where, f, (runloop, "_step"))
        for where, f in (
            ("stream/source.py", "route_rejected"),
            ("alerts/publisher.py", "publish"),
            (runloop, "_publish_notices"),
            (runloop, "_flush"),
        )
    )
    metrics = _cum(stats, runloop, "_observe")
    checkpoint = _cum(stats, runloop, "checkpoint", (runloop, "_step"))
    out = {
        "consume": poll - decode,
        "decode": decode,
        "windows": windows,
        "  of which push_runs": sum(
            _cum(stats, "stream/window.py", f, ("plantwatch/batches.py", c))
            for f, c in (
                ("push_runs", "_window_runs"),
                ("push_many", "window_columns"),
                ("push", "window_each"),
                ("push", "_push_one"),
            )
        ),
        "model": model,
        "thresholds": thresholds,
        "alerts": judge - thresholds,
        "sensor health": sensors,
        "baselines, drift": baselines,
        "metrics": metrics,
        "produce": produce,
        "checkpoint": checkpoint,
    }
    out["other"] = step - sum(v for k, v in out.items() if not k.startswith(" "))
    out["total"] = step
    return out


def summarise_profile(path: str | Any, readings: int) -> tuple[str, dict[str, float]]:
    """A markdown table of the stages (seconds, share of the loop, µs per reading)."""
    seconds = stage_seconds(str(path))
    total = seconds["total"] or float("nan")
    busy = total - seconds["consume"]
    lines = [
        "| stage | covers | s | share of loop | share without consume | µs/reading |",
        "|---|---|---|---|---|---|",
    ]
    for stage, covers in STAGES:
        s = seconds[stage]
        without = "" if stage == "consume" else f"{100 * s / busy:.1f} %"
        lines.append(
            f"| {stage} | {covers} | {s:.2f} | {100 * s / total:.1f} % | {without} "
            f"| {1e6 * s / readings:.1f} |"
        )
    lines.append(
        f"| **loop** | RunLoop._step | {total:.2f} | 100 % | | {1e6 * total / readings:.1f} |"
    )
    return "\n".join(lines), seconds


if __name__ == "__main__":
    print(summarise_profile(sys.argv[1], int(sys.argv[2]))[0])

"""Several ``plantwatch run`` processes in one group on a real broker: one SIGKILLed, one
SIGSTOPped past ``max.poll.interval.ms`` (``bench/group_chaos.py``'s scenarios, shortened).

Each runs the simulator's plant through real subprocesses at a steady rate and compares
the alert topic, read ``read_committed``, with the same readings through the same
``Monitor`` in-process: nothing lost, no alert id the undisturbed run did not raise, no
second ``opened`` for one id (a re-alert from lost state), exactly-once: no event twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bench_scripts import load_bench

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model on an hour of the plant's history, and 10 minutes of it with faults."""
    chaos, gc = load_bench("chaos"), load_bench("group_chaos")
    args = gc.parse_args(
        ["--assets", "6", "--faults", "4", "--duration-s", "600", "--history-h", "1"]
    )
    model = chaos.train(args.assets, args.history_h)
    model_dir = model.save(tmp_path_factory.mktemp("model") / "model")
    return {"model": model, "model_dir": model_dir, "msgs": chaos.messages(chaos.simulator(args))}


def _args(*extra: str) -> Any:
    return load_bench("group_chaos").parse_args(
        [
            *("--assets", "6", "--faults", "4", "--duration-s", "600"),
            *("--checkpoint-interval-s", "2", "--start-s", "240", "--settle-s", "180"),
            *extra,
        ]
    )


def test_three_processes_one_killed_its_partitions_move_and_no_alert_is_lost_or_repeated(
    kafka_bootstrap: str, plant: dict[str, Any], tmp_path: Path
) -> None:
    gc = load_bench("group_chaos")
    # The killed member's open transaction is aborted by the broker after
    # transaction.timeout.ms; 10 s instead of 60 s keeps the test short.
    args = _args(
        *("--processes", "3", "--partitions", "6", "--produce-s", "45", "--kill-at-s", "12"),
        *("--transaction-timeout-ms", "10000"),
    )
    r = gc.run_group(
        args,
        kafka_bootstrap,
        "exactly_once",
        plant["model"],
        plant["model_dir"],
        plant["msgs"],
        tmp_path,
    )
    c = r.check
    assert r.victim_partitions, r  # the killed member held partitions
    assert c.expected_alerts > 0 and c.alerts_found == c.expected_alerts, c
    assert not c.missing_ids and not c.extra_ids and not c.reopened_ids, c
    assert c.duplicate_events == 0 and c.other_events == 0 and c.missing_events == 0, c
    assert r.reassigned_s == r.reassigned_s and r.resumed_s == r.resumed_s, r  # not NaN
    assert r.lag_left == 0 and r.unexpected_exits == 0 and r.stop_rcs == [0, 0], r
    assert r.ok


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_a_process_stopped_past_max_poll_interval_is_fenced_and_rejoins_cleanly(
    kafka_bootstrap: str, plant: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    gc = load_bench("group_chaos")
    args = _args(
        *("--partitions", "4", "--produce-s", "55", "--stop-at-s", "10", "--stop-s", "16"),
        *("--max-poll-interval-ms", "10000", "--session-timeout-ms", "6000"),
    )
    r = gc.run_sigstop(
        args, kafka_bootstrap, mode, plant["model"], plant["model_dir"], plant["msgs"], tmp_path
    )
    c = r.check
    assert r.victim_partitions and r.stopped_s > 10.0, r
    # The other member took every partition while it was stopped, and it said so when
    # it woke: its partitions were lost (dropped, not checkpointed), not revoked.
    assert r.taken_over_s < r.stopped_s and r.lost_logged_s == r.lost_logged_s, r
    # It rejoined, got partitions again and kept processing; nobody exited.
    assert r.processed_after_rejoin > 0 and r.unexpected_exits == 0, r
    assert r.lag_left == 0 and r.stop_rcs == [0, 0], r
    assert c.expected_alerts > 0 and not c.missing_ids and not c.extra_ids, c
    assert not c.reopened_ids and c.other_events == 0 and c.missing_events == 0, c
    if mode == "exactly_once":
        # Whatever the stale instance still sent was in a transaction the group fenced.
        assert c.duplicate_events == 0, c
    assert r.ok

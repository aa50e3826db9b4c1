"""A three-node KRaft cluster: the files a node starts with, then a hard bounce under load.

The integration test starts its own cluster (``stream.broker.LocalCluster``, the cached jars;
replication factor 3, ``min.insync.replicas`` 2) rather than the session broker: it SIGKILLs
the node leading a sensors partition while an exactly-once monitor consumes, restarts it,
and checks that no alert is lost, none reaches a ``read_committed`` reader twice, and every
reading is consumed. ``bench/cluster_chaos.py`` bounces every node, cleanly and hard, in
both modes.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream.broker import BrokerError, render_server_properties
from stream.broker.cluster import LocalCluster
from stream.broker.java import find_java
from stream.broker.probe import admin_client
from stream.state import STATE_TOPIC_CONFIG, ensure_topics
from tests.bench_scripts import load_bench
from tests.kafka_helpers import (
    alert_events,
    faulty_plant,
    running_monitor,
    settings_for,
    trained_model,
    unalerted_faults,
    wait_for,
)

N_ASSETS = 4
DURATION_S = 1200
MAX_DELAY_MS = 120_000


def _properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_a_cluster_nodes_properties_name_every_voter_and_replicate_three_times() -> None:
    voters = "1@127.0.0.1:9193,2@127.0.0.1:9194,3@127.0.0.1:9195"
    props = _properties(
        render_server_properties(
            port=9093,
            controller_port=9194,
            log_dir=Path("/data/node-2"),
            node_id=2,
            quorum_voters=voters,
            replication_factor=3,
            min_insync_replicas=2,
        )
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == voters
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9194"
    assert props["log.dirs"] == "/data/node-2"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "2", key
    # A single broker keeps today's values.
    single = _properties(
        render_server_properties(port=9092, controller_port=9093, log_dir=Path("/d"))
    )
    assert single["node.id"] == "1"
    assert single["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert single["default.replication.factor"] == single["min.insync.replicas"] == "1"


def test_a_node_outside_the_voters_or_an_isr_above_the_replication_is_refused() -> None:
    with pytest.raises(BrokerError, match="not among the quorum voters"):
        render_server_properties(
            port=9093,
            controller_port=9999,
            log_dir=Path("/d"),
            node_id=2,
            quorum_voters="1@127.0.0.1:9193,2@127.0.0.1:9194",
        )
    with pytest.raises(BrokerError, match="min_insync_replicas"):
        render_server_properties(
            port=9093,
            controller_port=9094,
            log_dir=Path("/d"),
            replication_factor=1,
            min_insync_replicas=2,
        )


def test_a_cluster_gives_each_node_its_ports_its_directory_and_one_cluster_id(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(nodes=3, data_dir=tmp_path)
    assert len(set(cluster.ports + cluster.controller_ports)) == 6
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]
    assert [n.data_dir for n in cluster.nodes] == [tmp_path / f"node-{i}" for i in (1, 2, 3)]
    assert {n.cluster_id for n in cluster.nodes} == {cluster.cluster_id}
    assert {n.quorum_voters for n in cluster.nodes} == {cluster.quorum_voters}
    assert [(n.replication_factor, n.min_insync_replicas) for n in cluster.nodes] == [(3, 2)] * 3
    assert cluster.bootstrap.count(",") == 2
    with pytest.raises(BrokerError, match="no node 4"):
        cluster.node(4)
    with pytest.raises(BrokerError, match="distinct ports"):
        LocalCluster(nodes=3, data_dir=tmp_path, ports=[1, 2, 3, 4, 5, 5])


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cluster-test-offsets"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if os.environ.get("PLANTWATCH_SKIP_KAFKA", "").strip().lower() in {"1", "true", "yes", "on"}:
        pytest.skip("PLANTWATCH_SKIP_KAFKA is set: the cluster test needs Kafka")
    try:
        find_java()
    except BrokerError as exc:
        pytest.skip(f"the local cluster needs Java: {exc}")
    c = LocalCluster(nodes=3, data_dir=tmp_path_factory.mktemp("cluster"))
    c.start(wait_s=240)
    yield c
    c.stop()


@pytest.mark.integration
def test_a_hard_bounce_of_a_partition_leader_loses_no_alert_and_doubles_none(
    cluster: LocalCluster,
) -> None:
    chaos = load_bench("chaos")
    bootstrap = cluster.bootstrap
    sim = faulty_plant(N_ASSETS, DURATION_S)
    msgs = chaos.messages(sim)
    model = trained_model(N_ASSETS, hours=4.0)
    tag = f"cluster-{time.monotonic_ns()}"
    topics = {p: f"{tag}.{p}" for p in ("sensors", "alerts", "dlq", "notices", "state")}
    ensure_topics(
        {"bootstrap.servers": bootstrap},
        {**{t: {} for p, t in topics.items() if p != "state"}, topics["state"]: STATE_TOPIC_CONFIG},
        partitions=3,
        partitioned_like={topics["state"]: topics["sensors"]},
    )
    admin = admin_client(bootstrap)
    meta = admin.list_topics(topic=topics["sensors"], timeout=10).topics[topics["sensors"]]
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    settings = settings_for(
        bootstrap,
        topics,
        consumer={"batch_size": 200, "batch_wait_ms": 100},
        delivery={"mode": "exactly_once", "checkpoint_interval_s": 1.0},
    )
    expected = chaos.reference_events(model, settings, msgs)
    assert expected, "the plant raised no alert to lose"

    with running_monitor(settings, model) as loop:
        producer = chaos.produce_steadily(bootstrap, topics["sensors"], msgs, 40.0)
        wait_for(lambda: loop.stats.readings > len(msgs) // 4, 90, "a quarter consumed")
        victim = cluster.leader_of(topics["sensors"], 0, admin)
        assert victim > 0
        cluster.stop_node(victim, hard=True)
        # The controller fences a killed node after its session (9 s); meanwhile its
        # partitions have no leader, and the monitor and the producer wait for them.
        wait_for(
            lambda: cluster.leader_of(topics["sensors"], 0, admin) not in (victim, -1),
            60,
            "a new leader for the killed node's partition",
        )
        cluster.start_node(victim, wait_s=180)
        cluster.wait_fully_replicated(timeout_s=180, admin=admin)
        producer.join(timeout=180)
        assert not producer.is_alive()
        # Input: every reading reached the topic. Not necessarily once: librdkafka's
        # idempotent producer may write a batch twice across a leader change (its issue
        # 4953); the monitor consumes whatever is there.
        on_topic = load_bench("cluster_chaos").read_values(bootstrap, topics["sensors"])
        assert set(on_topic) == {value for _, value in msgs}
        assert _end_offsets(bootstrap, topics["sensors"], 3) >= len(msgs)
        wait_for(
            lambda: chaos.lag(bootstrap, settings.kafka.group_id, topics["sensors"], 3) == 0,
            180,
            "every reading committed by the monitor",
        )
    assert chaos.lag(bootstrap, settings.kafka.group_id, topics["sensors"], 3) == 0

    found = chaos.read_events(bootstrap, topics["alerts"], "read_committed")
    duplicates = {k: n for k, n in Counter(found).items() if n > 1}
    assert duplicates == {}
    assert set(found) == set(expected), (
        f"missing {sorted(set(expected) - set(found))}, other {sorted(set(found) - set(expected))}"
    )
    assert unalerted_faults(sim, alert_events(bootstrap, topics["alerts"]), MAX_DELAY_MS) == []


def test_the_bench_measures_a_stall_as_the_longest_time_progress_did_not_move() -> None:
    progress = load_bench("cluster_chaos").Progress(port=1)
    # Moves every 0.5 s, stands still from t=2.0 until it moves again at t=7.5.
    counts = [0, 10, 20, 30, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 50, 60]
    progress.samples = [(i * 0.5, float(c)) for i, c in enumerate(counts)]
    assert progress.longest_stall(0.0, 8.0) == pytest.approx(5.5)
    # A window ending while it stands still counts up to its end.
    assert progress.longest_stall(0.0, 4.0) == pytest.approx(2.0)
    assert progress.longest_stall(7.5, 8.0) == pytest.approx(0.5)

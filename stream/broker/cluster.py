"""A local Kafka cluster: three (or more) combined broker+controller KRaft nodes on loopback.

Each node is a :class:`~stream.broker.local.LocalBroker` with a port, a controller port and
a data directory of its own (``node-1``, ``node-2``, ... under ``data_dir``), all formatted
with one cluster id and one static quorum (``controller.quorum.voters`` naming every node).
New topics, the consumer offsets and the transaction state are replicated to every node
(``replication_factor`` 3 by default) with ``min.insync.replicas`` 2, so one node may be
down, bounced cleanly (SIGTERM) or killed (SIGKILL), and acks=all writes and transactions
go on.

>>> c = LocalCluster(nodes=3, data_dir="/tmp/plantwatch-doc-cluster", ports=[1, 2, 3, 4, 5, 6])
>>> c.bootstrap
'127.0.0.1:1,127.0.0.1:2,127.0.0.1:3'
>>> c.quorum_voters
'1@127.0.0.1:4,2@127.0.0.1:5,3@127.0.0.1:6'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stream.broker.artifacts import ProgressFn
from stream.broker.defaults import DEFAULT_WAIT_S, LOOPBACK, STOP_TIMEOUT_S
from stream.broker.errors import BrokerError
from stream.broker.local import LocalBroker
from stream.broker.ports import free_port
from stream.broker.probe import admin_client
from stream.broker.server_config import new_cluster_id

log = logging.getLogger("plantwatch.broker")

#: Small heaps: three JVMs share a laptop (or a 2-core CI machine) with the monitor.
CLUSTER_HEAP = "384m"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (each free when chosen)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class LocalCluster:
    """``nodes`` combined broker+controller nodes, one static KRaft quorum, on loopback.

    ``ports`` gives the client ports of the nodes, then their controller ports (``2 *
    nodes`` in all); free ones are chosen otherwise. Nodes are numbered from 1, as their
    ``node.id``; :meth:`node` and the bounce methods take that number.
    """

    def __init__(
        self,
        *,
        nodes: int = 3,
        data_dir: Path | str,
        ports: Sequence[int] | None = None,
        replication_factor: int | None = None,
        min_insync_replicas: int = 2,
        heap: str = CLUSTER_HEAP,
        cluster_id: str | None = None,
    ) -> None:
        if nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, got {nodes}")
        chosen = list(ports) if ports is not None else free_ports(2 * nodes)
        if len(chosen) != 2 * nodes or len(set(chosen)) != 2 * nodes:
            raise BrokerError(f"{nodes} nodes need {2 * nodes} distinct ports, got {chosen}")
        rf = nodes if replication_factor is None else replication_factor
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.cluster_id = cluster_id or new_cluster_id()
        self.ports = chosen[:nodes]
        self.controller_ports = chosen[nodes:]
        self.quorum_voters = ",".join(
            f"{i}@{LOOPBACK}:{port}" for i, port in enumerate(self.controller_ports, start=1)
        )
        self.nodes = [
            LocalBroker(
                port=port,
                controller_port=controller_port,
                data_dir=self.data_dir / f"node-{i}",
                heap=heap,
                node_id=i,
                quorum_voters=self.quorum_voters,
                replication_factor=rf,
                min_insync_replicas=min_insync_replicas,
                cluster_id=self.cluster_id,
            )
            for i, (port, controller_port) in enumerate(
                zip(self.ports, self.controller_ports, strict=True), start=1
            )
        ]

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated: what clients are given."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.ports)

    def node(self, node_id: int) -> LocalBroker:
        if not 1 <= node_id <= len(self.nodes):
            raise BrokerError(f"no node {node_id}; the nodes are 1 to {len(self.nodes)}")
        return self.nodes[node_id - 1]

    def running(self) -> list[int]:
        """The ids of the nodes whose broker process runs now."""
        return [i for i, n in enumerate(self.nodes, start=1) if n.status().running]

    # lifecycle
    def start(self, *, wait_s: float = DEFAULT_WAIT_S, progress: ProgressFn | None = None) -> str:
        """Launch every node, then wait until each answers; the bootstrap of all of them.

        The nodes are launched before any is waited for: none answers before a majority of
        the controllers runs and has elected a leader.
        """
        try:
            for n in self.nodes:
                n.launch(progress=progress)
            deadline = time.monotonic() + wait_s
            for n in self.nodes:
                n.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop_node(self, node_id: int, *, hard: bool, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """Stop one node: SIGTERM and a controlled shutdown, or (``hard``) SIGKILL.

        Returns the seconds it took until the process was gone.
        """
        started = time.monotonic()
        node = self.node(node_id)
        stopped = node.kill() if hard else node.stop(timeout_s)
        if not stopped:
            raise BrokerError(f"node {node_id} was not running")
        return time.monotonic() - started

    def start_node(self, node_id: int, *, wait_s: float = DEFAULT_WAIT_S) -> float:
        """Start one node again (same ports, same data); seconds until it answers."""
        started = time.monotonic()
        self.node(node_id).start(wait_s=wait_s)
        return time.monotonic() - started

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every node that runs (a clean shutdown each, SIGKILL after ``timeout_s``)."""
        # One at a time, in reverse order: each clean shutdown needs a controller quorum.
        # Once fewer than a majority would be left, none can shut down cleanly (it waits
        # for a quorum that is gone), so those get a few seconds, then SIGKILL.
        majority = len(self.nodes) // 2 + 1
        for k, n in enumerate(reversed(self.nodes)):
            left_after = len(self.nodes) - k - 1
            n.stop(timeout_s if left_after >= majority - 1 else min(timeout_s, 5.0))

    # replication
    def under_replicated(self, admin: Any = None, topics: Iterable[str] | None = None) -> list[str]:
        """``topic/partition`` of each partition without a leader or a full ISR now.

        Every topic, the internal ones included (``__consumer_offsets``,
        ``__transaction_state``), unless ``topics`` names some.
        """
        admin = admin or admin_client(self.bootstrap)
        meta = admin.list_topics(timeout=10)
        wanted = set(topics) if topics is not None else None
        short: list[str] = []
        for name, topic in meta.topics.items():
            if wanted is not None and name not in wanted:
                continue
            if topic.error is not None:
                short.append(f"{name} ({topic.error})")
                continue
            for p in topic.partitions.values():
                if p.leader < 0 or len(p.isrs) < len(p.replicas):
                    short.append(f"{name}/{p.id}")
        return short

    def wait_fully_replicated(self, timeout_s: float = 120.0, admin: Any = None) -> float:
        """Wait until every partition has a leader and all its replicas in sync; seconds taken.

        What Kafka's own system tests wait for between two bounces: the next bounce then
        never takes down the only in-sync copy.
        """
        started = time.monotonic()
        admin = admin or admin_client(self.bootstrap)
        short: list[str] = []
        while time.monotonic() - started < timeout_s:
            try:
                short = self.under_replicated(admin)
            except Exception as exc:  # a metadata request to a node that just went away
                short = [f"metadata: {exc}"]
            if not short:
                return time.monotonic() - started
            time.sleep(0.5)
        raise BrokerError(
            f"{len(short)} partitions still lack a leader or a full ISR after {timeout_s:.0f} s: "
            + ", ".join(short[:10])
        )

    def elect_preferred_leaders(self, admin: Any = None, timeout_s: float = 30.0) -> int:
        """Give every partition back to its preferred (first) replica; how many moved.

        A node restarted after a bounce leads nothing until then (Kafka's own rebalance
        runs every ``leader.imbalance.check.interval.seconds``, 5 minutes), so the next
        bounce of it would hit nothing.
        """
        from confluent_kafka import ElectionType

        admin = admin or admin_client(self.bootstrap)
        result = admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=timeout_s)
        # Partitions already led by their preferred replica answer ELECTION_NOT_NEEDED.
        return sum(1 for error in (result or {}).values() if error is None)

    def leader_of(self, topic: str, partition: int = 0, admin: Any = None) -> int:
        """The node id leading ``topic``'s ``partition`` now (-1: none)."""
        admin = admin or admin_client(self.bootstrap)
        meta = admin.list_topics(topic=topic, timeout=10).topics[topic]
        return int(meta.partitions[partition].leader)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Whether a Kafka answers: a metadata round trip through confluent-kafka's admin client.

confluent-kafka is imported inside the functions, so importing the broker package (as the
CLI does to build its parser) stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any


def admin_client(bootstrap: str) -> Any:
    """An admin client whose own log lines (refused connections while starting) go nowhere."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("plantwatch.broker.librdkafka")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    return AdminClient(conf)


def metadata_round_trip(bootstrap: str, timeout_s: float, admin: Any = None) -> bool:
    """True when a Kafka at ``bootstrap`` answers a metadata request naming a broker."""
    from confluent_kafka import KafkaException

    try:
        meta = (admin or admin_client(bootstrap)).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(meta.brokers)

"""Start, stop and inspect a real single-node Apache Kafka (KRaft) on loopback, without Docker.

The broker is the official Apache Kafka 4.4.0 from Maven Central (``kafka_2.13`` and its
runtime dependencies, plus the log4j2 binding the distribution ships), fetched once with the
machine's Maven into the user's cache folder and run with the machine's Java (17 or newer).
A second start needs no network and no Maven.

Each broker lives in a data directory: ``server.properties``, the KRaft log directory, the
broker's own log (``logs/server.log``), a PID file and a small state file, so ``stop``,
``status`` and ``address`` work from another process than the one that started it.

One concern per module: :mod:`~stream.broker.defaults` (version pins and defaults),
:mod:`~stream.broker.cache` (where files live), :mod:`~stream.broker.java`,
:mod:`~stream.broker.artifacts` (the Maven download), :mod:`~stream.broker.server_config`
(the files a broker starts with), :mod:`~stream.broker.ports`, :mod:`~stream.broker.probe`
(does a Kafka answer), :mod:`~stream.broker.process`, :mod:`~stream.broker.logs`,
:mod:`~stream.broker.local` (:class:`LocalBroker`) and :mod:`~stream.broker.cli`
(``plantwatch broker``). A test that monkeypatches a function patches it in the module
that calls it (``stream.broker.local.find_java``), not here.

>>> broker = LocalBroker(port=19092, data_dir="/tmp/plantwatch-doc-broker")
>>> broker.bootstrap
'127.0.0.1:19092'
>>> broker.status().running
False
"""

from __future__ import annotations

from stream.broker.artifacts import (
    CONSOLE_CONSUMER,
    CONSOLE_PRODUCER,
    ProgressFn,
    artifacts_complete,
    ensure_artifacts,
    ensure_console_tools,
    find_maven,
    render_pom,
)
from stream.broker.cache import cache_dir, default_data_dir, libs_dir, tools_dir
from stream.broker.cli import EPILOG, add_arguments, run
from stream.broker.defaults import (
    COMPOSE_BOOTSTRAP,
    DEFAULT_HEAP,
    DEFAULT_MIN_HEAP,
    DEFAULT_PORT,
    DEFAULT_WAIT_S,
    DEPENDENCY_PLUGIN,
    FORMAT_TIMEOUT_S,
    KAFKA_VERSION,
    LOG4J_VERSION,
    LOOPBACK,
    MAVEN_TIMEOUT_S,
    MIN_JAVA,
    SCALA_VERSION,
    SLF4J_VERSION,
    STOP_TIMEOUT_S,
)
from stream.broker.errors import BrokerError
from stream.broker.java import (
    JavaInfo,
    check_java,
    find_java,
    java_too_old_message,
    parse_java_version,
)
from stream.broker.local import BrokerStatus, LocalBroker
from stream.broker.ports import free_port, port_free
from stream.broker.server_config import (
    jvm_heap_options,
    new_cluster_id,
    render_log4j2,
    render_server_properties,
)

__all__ = [
    "COMPOSE_BOOTSTRAP",
    "CONSOLE_CONSUMER",
    "CONSOLE_PRODUCER",
    "DEFAULT_HEAP",
    "DEFAULT_MIN_HEAP",
    "DEFAULT_PORT",
    "DEFAULT_WAIT_S",
    "DEPENDENCY_PLUGIN",
    "EPILOG",
    "FORMAT_TIMEOUT_S",
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "LOOPBACK",
    "MAVEN_TIMEOUT_S",
    "MIN_JAVA",
    "SCALA_VERSION",
    "SLF4J_VERSION",
    "STOP_TIMEOUT_S",
    "BrokerError",
    "BrokerStatus",
    "JavaInfo",
    "LocalBroker",
    "ProgressFn",
    "add_arguments",
    "artifacts_complete",
    "cache_dir",
    "check_java",
    "default_data_dir",
    "ensure_artifacts",
    "ensure_console_tools",
    "find_java",
    "find_maven",
    "free_port",
    "java_too_old_message",
    "jvm_heap_options",
    "libs_dir",
    "new_cluster_id",
    "parse_java_version",
    "port_free",
    "render_log4j2",
    "render_pom",
    "render_server_properties",
    "run",
    "tools_dir",
]

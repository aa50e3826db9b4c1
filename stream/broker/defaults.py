"""What the local broker runs and how: version pins, default ports, heap and time limits."""

from __future__ import annotations

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
#: Kafka's own POM pulls slf4j-api 1.7 and no binding; the Kafka 4 distribution runs on
#: slf4j 2 with log4j2 behind it, so we ask for the same (log4j matches kafka-server's).
SLF4J_VERSION = "2.0.17"
LOG4J_VERSION = "2.25.5"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
DEFAULT_MIN_HEAP = "256m"
DEFAULT_WAIT_S = 90.0
MAVEN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
#: Where `docker compose up kafka` publishes the broker for the host (see docker-compose.yml).
COMPOSE_BOOTSTRAP = "localhost:9094"
#: How every "Java or Maven is missing" message ends: the way round both.
DOCKER_INSTEAD = (
    "run Kafka in Docker: `docker compose up kafka` "
    f"(then use --bootstrap-servers {COMPOSE_BOOTSTRAP})"
)

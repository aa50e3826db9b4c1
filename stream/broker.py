"""Start, stop and inspect a real single-node Apache Kafka (KRaft) on loopback, without Docker.

The broker is the official Apache Kafka 4.4.0 from Maven Central (``kafka_2.13`` and its
runtime dependencies, plus the log4j2 binding the distribution ships), fetched once with the
machine's Maven into the user's cache folder and run with the machine's Java (17 or newer).
A second start needs no network and no Maven.

Each broker lives in a data directory: ``server.properties``, the KRaft log directory, the
broker's own log (``logs/server.log``), a PID file and a small state file, so ``stop``,
``status`` and ``address`` work from another process than the one that started it.

>>> broker = LocalBroker(port=19092, data_dir="/tmp/plantwatch-doc-broker")
>>> broker.bootstrap
'127.0.0.1:19092'
>>> broker.status().running
False
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("plantwatch.broker")

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

_MANIFEST = "manifest.json"
_STATE = "broker.json"
_PID = "broker.pid"
_HEAP = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DOWNLOADED = re.compile(r"Downloaded from \S+: \S+ \((\d+(?:\.\d+)?) (B|kB|KB|MB|GB)")

ProgressFn = Callable[[str], None]


class BrokerError(RuntimeError):
    """Something a person must fix to run the local broker; the message says what and how."""


# -- where things live -------------------------------------------------------------------


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$PLANTWATCH_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/plantwatch``."""
    env = os.environ if env is None else env
    if env.get("PLANTWATCH_CACHE_DIR"):
        return Path(env["PLANTWATCH_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base).expanduser() / "plantwatch"


def libs_dir(cache: Path | None = None) -> Path:
    """The folder holding Kafka's jars once downloaded (one per Kafka version)."""
    return (cache or cache_dir()) / "kafka" / KAFKA_VERSION / "libs"


def default_data_dir(cache: Path | None = None) -> Path:
    """The data directory of ``plantwatch broker`` when ``--data-dir`` is not given."""
    return (cache or cache_dir()) / "kafka" / "broker"


# -- Java --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JavaInfo:
    """A Java runtime found on this machine: its executable and major version."""

    path: str
    major: int
    version_text: str


def parse_java_version(text: str) -> int:
    """The major version in the output of ``java -version`` (``1.8.0_412`` counts as 8).

    >>> parse_java_version('openjdk version "17.0.15" 2025-04-15')
    17
    >>> parse_java_version('java version "1.8.0_412"')
    8
    """
    match = _JAVA_VERSION.search(text)
    if match is None:
        raise BrokerError(f"cannot read a Java version from `java -version`: {text.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        major = int(match.group(2))
    return major


def java_too_old_message(info: JavaInfo) -> str:
    return (
        f"Java {MIN_JAVA} or newer is needed for the local Kafka broker; found Java "
        f"{info.major} at {info.path}. Install openjdk-17-jre-headless "
        "(`apt-get install openjdk-17-jre-headless`) and point JAVA_HOME at it if several "
        "are installed, or run Kafka in Docker: `docker compose up kafka` "
        f"(then use --bootstrap-servers {COMPOSE_BOOTSTRAP})."
    )


def check_java(info: JavaInfo) -> JavaInfo:
    """``info`` if it is new enough for Kafka 4, else a :class:`BrokerError` saying what to do."""
    if info.major < MIN_JAVA:
        raise BrokerError(java_too_old_message(info))
    return info


def find_java(env: Mapping[str, str] | None = None) -> JavaInfo:
    """The Java that will run the broker: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    env = os.environ if env is None else env
    java: str | None = None
    if env.get("JAVA_HOME"):
        candidate = Path(env["JAVA_HOME"]) / "bin" / "java"
        if not os.access(candidate, os.X_OK):
            raise BrokerError(
                f"JAVA_HOME is {env['JAVA_HOME']} but {candidate} is not an executable; "
                "fix JAVA_HOME or unset it to use `java` from PATH"
            )
        java = str(candidate)
    else:
        java = shutil.which("java", path=env.get("PATH", os.defpath))
    if java is None:
        raise BrokerError(
            f"Java {MIN_JAVA} or newer is needed for the local Kafka broker, and no `java` "
            "was found (JAVA_HOME unset, none on PATH). Install it with "
            "`apt-get install openjdk-17-jre-headless`, or run Kafka in Docker: "
            f"`docker compose up kafka` (then use --bootstrap-servers {COMPOSE_BOOTSTRAP})."
        )
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run `{java} -version`: {exc}") from exc
    text = (done.stderr or "") + (done.stdout or "")
    return check_java(JavaInfo(path=java, major=parse_java_version(text), version_text=text))


# -- artifacts ---------------------------------------------------------------------------


def render_pom() -> str:
    """The throwaway POM whose runtime dependencies are exactly Kafka's ``libs/``."""
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
        ("org.slf4j", "slf4j-api", SLF4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-api", LOG4J_VERSION),
    ]
    rows = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by plantwatch to fetch Apache Kafka {KAFKA_VERSION}; safe to delete. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.plantwatch</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{rows}
  </dependencies>
</project>
"""


def find_maven(env: Mapping[str, str] | None = None) -> str:
    """The ``mvn`` executable, or a :class:`BrokerError` saying how to get one."""
    env = os.environ if env is None else env
    mvn = shutil.which("mvn", path=env.get("PATH", os.defpath))
    if mvn is None:
        raise BrokerError(
            f"Maven (`mvn`) is needed once, to download Apache Kafka {KAFKA_VERSION} from "
            f"Maven Central into {libs_dir(cache_dir(env))}, and none is on PATH. Install it "
            "with `apt-get install maven`, or run Kafka in Docker: `docker compose up kafka` "
            f"(then use --bootstrap-servers {COMPOSE_BOOTSTRAP})."
        )
    return mvn


def _read_manifest(libs: Path) -> list[str] | None:
    try:
        data = json.loads((libs / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    jars = data.get("jars") if isinstance(data, dict) else None
    if data.get("kafka_version") != KAFKA_VERSION or not isinstance(jars, list) or not jars:
        return None
    names = [str(j) for j in jars]
    return names if all((libs / name).is_file() for name in names) else None


def artifacts_complete(cache: Path | None = None) -> bool:
    """True when every jar the manifest lists is in the cache (no download needed)."""
    return _read_manifest(libs_dir(cache)) is not None


def _size_bytes(amount: str, unit: str) -> float:
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    return float(amount) * scale


def _run_maven(mvn: str, build: Path, out: Path, progress: ProgressFn | None) -> None:
    cmd = [
        mvn,
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(build / "pom.xml"),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={out}",
        "-DincludeScope=runtime",
    ]
    tail: collections.deque[str] = collections.deque(maxlen=40)
    files = 0
    total_bytes = 0.0
    last_report = 0.0
    proc = subprocess.Popen(
        cmd,
        cwd=build,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
    )
    watchdog = threading.Timer(MAVEN_TIMEOUT_S, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives a stream
            raise BrokerError("could not read Maven's output")
        for raw in proc.stdout:
            line = _ANSI.sub("", raw).rstrip()
            if not line:
                continue
            tail.append(line)
            match = _DOWNLOADED.search(line)
            if match:
                files += 1
                total_bytes += _size_bytes(match.group(1), match.group(2))
                now = time.monotonic()
                if progress is not None and now - last_report >= 2.0:
                    last_report = now
                    progress(f"downloaded {files} files, {total_bytes / 1e6:.1f} MB")
        code = proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        shown = "\n".join(f"    {t}" for t in tail)
        raise BrokerError(
            f"Maven could not fetch Apache Kafka {KAFKA_VERSION} (exit code {code}). Check "
            "network access to Maven Central (or the mirror in ~/.m2/settings.xml) and "
            f"rerun; the end of Maven's output:\n{shown}"
        )
    if progress is not None and files:
        progress(f"downloaded {files} files, {total_bytes / 1e6:.1f} MB")


def ensure_artifacts(
    progress: ProgressFn | None = None,
    *,
    cache: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The folder of Kafka's jars, downloading them with Maven on first use.

    The jars are resolved into a temporary folder beside the cache and renamed into place
    only when complete, so an interrupted download never leaves a half cache; a complete
    cache means no Maven call at all.
    """
    libs = libs_dir(cache or cache_dir(env))
    if _read_manifest(libs) is not None:
        return libs
    mvn = find_maven(env)
    libs.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=libs.parent))
    try:
        if progress is not None:
            progress(
                f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs} "
                "(first run only, about 45 MB; a minute or two)"
            )
        build = work / "build"
        build.mkdir()
        (build / "pom.xml").write_text(render_pom(), encoding="utf-8")
        staged = work / "libs"
        _run_maven(mvn, build, staged, progress)
        jars = sorted(p.name for p in staged.glob("*.jar"))
        main_jar = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
        if main_jar not in jars:
            raise BrokerError(
                f"Maven finished but {main_jar} is not among the {len(jars)} jars it copied "
                f"to {staged}; delete {libs.parent} and retry"
            )
        manifest = {"kafka_version": KAFKA_VERSION, "jars": jars}
        (staged / _MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if libs.exists():
            if _read_manifest(libs) is not None:  # another process finished first
                return libs
            # An incomplete folder from an older layout or a crash: move it out of the way.
            libs.rename(work / "stale-libs")
        try:
            staged.rename(libs)
        except OSError:
            if _read_manifest(libs) is None:
                raise
        if progress is not None:
            progress(f"Apache Kafka {KAFKA_VERSION} cached in {libs}")
        return libs
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- configuration files -----------------------------------------------------------------


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    host: str = LOOPBACK,
    num_partitions: int = 3,
    retention_hours: int = 24,
    retention_bytes: int = 1 << 30,
) -> str:
    """``server.properties`` of a combined broker+controller node for local development.

    Replication factor 1 everywhere (one node), three partitions per auto-created topic,
    no initial rebalance delay (consumer groups form at once), a day of retention.

    >>> text = render_server_properties(port=9092, controller_port=9093, log_dir=Path("/d"))
    >>> "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in text
    True
    """
    for name, value in (("port", port), ("controller_port", controller_port)):
        if not 0 < value < 65536:
            raise BrokerError(f"{name} must be between 1 and 65535, got {value}")
    if port == controller_port:
        raise BrokerError(f"the controller needs a port of its own; both are {port}")
    lines = [
        "# Generated by plantwatch (stream/broker.py) at every start; edits are overwritten.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{controller_port}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={log_dir}",
        f"num.partitions={num_partitions}",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=10",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "auto.create.topics.enable=true",
        "delete.topic.enable=true",
        "group.initial.rebalance.delay.ms=0",
        f"log.retention.hours={retention_hours}",
        f"log.retention.bytes={retention_bytes}",
        "log.segment.bytes=67108864",
        "log.retention.check.interval.ms=60000",
        "num.network.threads=2",
        "num.io.threads=4",
        "num.recovery.threads.per.data.dir=1",
    ]
    return "\n".join(lines) + "\n"


def render_log4j2(log_file: Path) -> str:
    """A log4j2 configuration that writes the broker's log to a size-capped rolling file."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by plantwatch; the broker logs here, never to the terminal. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="file" fileName="{log_file}" filePattern="{log_file}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="10 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Logger name="org.apache.kafka.clients.NetworkClient" level="warn"/>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


def _heap_bytes(heap: str) -> int:
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = heap[-1].lower()
    return int(heap[:-1]) * scale[unit] if unit in scale else int(heap)


def jvm_heap_options(heap: str) -> list[str]:
    """``-Xms``/``-Xmx`` for a heap cap such as ``512m`` (the floor is 256m or the cap)."""
    if not _HEAP.match(heap):
        raise BrokerError(f"heap must look like 512m, 1g or 786432k; got {heap!r}")
    floor = DEFAULT_MIN_HEAP if _heap_bytes(DEFAULT_MIN_HEAP) <= _heap_bytes(heap) else heap
    return [f"-Xms{floor}", f"-Xmx{heap}"]


# -- processes ---------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64.

    Like Kafka's ``Uuid.randomUuid()`` it never starts with ``-``, which the storage tool's
    argument parser would take for an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def _port_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Kafka binds with SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (for tests and the controller listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _admin(bootstrap: str) -> Any:
    """An admin client whose own log lines (refused connections while starting) go nowhere."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("plantwatch.broker.librdkafka")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
    return AdminClient(conf)


def _metadata_round_trip(bootstrap: str, timeout_s: float, admin: Any = None) -> bool:
    """True when a Kafka at ``bootstrap`` answers a metadata request naming a broker."""
    from confluent_kafka import KafkaException

    try:
        meta = (admin or _admin(bootstrap)).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(meta.brokers)


def _die_with_parent() -> None:
    """Runs in the child before exec: the broker gets SIGTERM if its starter dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _read_end(path: Path, max_bytes: int = 256 * 1024) -> list[str] | None:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, indented for an error message."""
    text = _read_end(path)
    if text is None:
        return f"    ({path} is missing)"
    kept = text[-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else f"    ({path} is empty)"


def _log_excerpt(path: Path, lines: int = 25) -> str:
    """A heading and the broker log's ERROR/FATAL lines with their stack traces, else its tail.

    Kafka dumps hundreds of lines of configuration at start; a plain tail of a broker that
    died early would show that dump instead of the reason, so the tail skips it.
    """
    text = _read_end(path)
    if not text:
        return f"Its log {path}:\n{_tail(path, lines)}"
    picked: list[str] = []
    in_error = False
    for line in text:
        if line.startswith("["):
            in_error = "] ERROR " in line or "] FATAL " in line
        if in_error:
            picked.append(line)
    if picked:
        shown = "\n".join(f"    {line}" for line in picked[-lines:])
        return f"Errors in its log {path}:\n{shown}"
    entries = [line for line in text if not line[:1].isspace()][-lines:]
    shown = "\n".join(f"    {line}" for line in entries)
    return f"The end of its log {path} (no errors logged):\n{shown}"


@dataclass(frozen=True)
class BrokerStatus:
    """What ``plantwatch broker status`` reports about one data directory."""

    running: bool
    data_dir: Path
    log_file: Path
    pid: int | None = None
    bootstrap: str | None = None
    started_at: float | None = None
    #: A PID file was left behind by a broker that is gone (crash, reboot, kill -9).
    stale: bool = False


class LocalBroker:
    """One local Kafka broker+controller, on loopback, with its data in ``data_dir``.

    >>> b = LocalBroker(port=29092, data_dir="/tmp/plantwatch-doc-broker")
    >>> b.bootstrap, b.data_dir.name
    ('127.0.0.1:29092', 'plantwatch-doc-broker')

    ``start()`` downloads Kafka on first use, formats the storage once, launches the JVM and
    returns the bootstrap address once a metadata request succeeds; ``stop()`` ends it.
    """

    def __init__(
        self,
        *,
        port: int = DEFAULT_PORT,
        controller_port: int | None = None,
        data_dir: Path | str | None = None,
        heap: str = DEFAULT_HEAP,
        cache: Path | None = None,
        jvm_options: Sequence[str] = ("-XX:+UseSerialGC",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise BrokerError(f"port must be between 1 and 65535, got {port}")
        jvm_heap_options(heap)  # validate early, before any download
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.jvm_options = tuple(jvm_options)
        self._env = dict(os.environ if env is None else env)
        self.cache = cache or cache_dir(self._env)
        # Absolute, so the PID check below matches the broker's command line from any cwd.
        self.data_dir = (
            Path(data_dir).expanduser() if data_dir else default_data_dir(self.cache)
        ).absolute()
        self._proc: subprocess.Popen[bytes] | None = None

    # paths
    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    @property
    def _jvm_out(self) -> Path:
        return self.data_dir / "logs" / "jvm.out"

    @property
    def _kraft_dir(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def _properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        """The address clients use: the running broker's, else the configured one."""
        state = self._read_state()
        if state and isinstance(state.get("bootstrap"), str) and self._owned_pid() is not None:
            return str(state["bootstrap"])
        return f"{LOOPBACK}:{self.port}"

    # state files
    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.data_dir / _STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_state(self, state: Mapping[str, Any]) -> None:
        tmp = self.data_dir / f".{_STATE}.tmp"
        tmp.write_text(json.dumps(dict(state), indent=1), encoding="utf-8")
        os.replace(tmp, self.data_dir / _STATE)
        pid_tmp = self.data_dir / f".{_PID}.tmp"
        pid_tmp.write_text(f"{state['pid']}\n", encoding="ascii")
        os.replace(pid_tmp, self.data_dir / _PID)

    def _clear_state(self) -> None:
        for name in (_PID, _STATE):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    def _recorded_pid(self) -> int | None:
        try:
            return int((self.data_dir / _PID).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _owned_pid(self) -> int | None:
        """The PID of the broker this data directory started, if it still runs."""
        pid = self._recorded_pid()
        if pid is None:
            return None
        if self._proc is not None and self._proc.pid == pid:
            return pid if self._proc.poll() is None else None
        if not _pid_alive(pid):
            return None
        cmdline = _cmdline(pid)
        # A recycled PID belongs to someone else: only a kafka.Kafka on our properties counts.
        if cmdline is not None and (
            "kafka.Kafka" not in cmdline or str(self._properties) not in cmdline
        ):
            return None
        return pid

    def status(self) -> BrokerStatus:
        """Whether this data directory's broker runs, and where (no network involved)."""
        pid = self._owned_pid()
        state = self._read_state() or {}
        started = state.get("started_at")
        return BrokerStatus(
            running=pid is not None,
            data_dir=self.data_dir,
            log_file=self.log_file,
            pid=pid,
            bootstrap=str(state["bootstrap"]) if pid is not None and "bootstrap" in state else None,
            started_at=float(started) if pid is not None and started is not None else None,
            stale=pid is None and self._recorded_pid() is not None,
        )

    # lifecycle
    def _check_port(self, port: int, what: str) -> None:
        if _port_free(port):
            return
        bootstrap = f"{LOOPBACK}:{port}"
        if what == "broker" and _metadata_round_trip(bootstrap, 3.0):
            raise BrokerError(
                f"port {port} on {LOOPBACK} is already served by another Kafka broker that "
                f"was not started from {self.data_dir}. Use it as it is "
                f"(--bootstrap-servers {bootstrap}), stop it, or pick another port with --port."
            )
        raise BrokerError(
            f"the {what} port {port} on {LOOPBACK} is taken by another program, not a Kafka "
            f"broker started from {self.data_dir}. Free it (`ss -ltnp 'sport = :{port}'` "
            "shows who holds it) or choose other ports with --port / controller_port."
        )

    def ensure_artifacts(self, progress: ProgressFn | None = None) -> Path:
        """Kafka's jars in the shared cache (downloaded once); see :func:`ensure_artifacts`."""
        return ensure_artifacts(progress, cache=self.cache, env=self._env)

    def _format_storage(self, java: JavaInfo, classpath: str) -> None:
        if (self._kraft_dir / "meta.properties").is_file():
            return
        self._kraft_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java.path,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self._properties),
            "--ignore-formatted",
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"formatting the Kafka storage in {self._kraft_dir} took over "
                f"{FORMAT_TIMEOUT_S:.0f} s; is the machine overloaded?"
            ) from exc
        if done.returncode != 0:
            out = "\n".join(
                f"    {line}" for line in (done.stdout + done.stderr).splitlines()[-20:]
            )
            raise BrokerError(
                f"formatting the Kafka storage in {self._kraft_dir} failed (exit code "
                f"{done.returncode}); delete {self._kraft_dir} to start afresh. Its output:\n{out}"
            )

    def start(self, *, wait_s: float = DEFAULT_WAIT_S, progress: ProgressFn | None = None) -> str:
        """Start the broker (if this data directory's broker is not already running).

        Returns the bootstrap address once a real metadata round trip succeeds. A broker
        started here is stopped when this process exits, even by a signal (on Linux), if
        :meth:`stop` is not called first; ``plantwatch broker start --background`` uses
        :meth:`start_detached` instead.
        """
        return self._start(wait_s=wait_s, progress=progress, detach=False)

    def start_detached(
        self, *, wait_s: float = DEFAULT_WAIT_S, progress: ProgressFn | None = None
    ) -> str:
        """Like :meth:`start`, but the broker outlives this process (stop it with :meth:`stop`)."""
        return self._start(wait_s=wait_s, progress=progress, detach=True)

    def _start(self, *, wait_s: float, progress: ProgressFn | None, detach: bool) -> str:
        running = self._owned_pid()
        if running is not None:
            bootstrap = self.bootstrap
            log.info("broker of %s already runs (pid %d) at %s", self.data_dir, running, bootstrap)
            return bootstrap
        self._clear_state()
        # Cheap checks first, so a taken port is reported before a long first download.
        controller_port = self.controller_port or free_port()
        self._check_port(self.port, "broker")
        self._check_port(controller_port, "controller")
        java = find_java(self._env)
        libs = self.ensure_artifacts(progress)

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._properties.write_text(
            render_server_properties(
                port=self.port, controller_port=controller_port, log_dir=self._kraft_dir
            ),
            encoding="utf-8",
        )
        (self.data_dir / "log4j2.xml").write_text(render_log4j2(self.log_file), encoding="utf-8")
        classpath = str(libs / "*")
        self._format_storage(java, classpath)

        cmd = [
            java.path,
            *jvm_heap_options(self.heap),
            *self.jvm_options,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.log_file.parent}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self._properties),
        ]
        bootstrap = f"{LOOPBACK}:{self.port}"
        with self._jvm_out.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in the terminal reaches us, and we stop the broker
                # cleanly, instead of the JVM dying half-way through its shutdown.
                start_new_session=True,
                preexec_fn=None if detach else _die_with_parent,
            )
        self._write_state(
            {
                "pid": self._proc.pid,
                "bootstrap": bootstrap,
                "port": self.port,
                "controller_port": controller_port,
                "kafka_version": KAFKA_VERSION,
                "java": java.path,
                "heap": self.heap,
                "started_at": time.time(),
            }
        )
        try:
            self._wait_ready(bootstrap, wait_s)
        except BaseException:
            self.stop()
            raise
        log.debug("Kafka %s ready at %s (pid %d)", KAFKA_VERSION, bootstrap, self._proc.pid)
        return bootstrap

    def _died_message(self, code: int) -> str:
        return (
            f"the Kafka broker exited during start (exit code {code}). The end of the JVM's "
            f"output {self._jvm_out}:\n{_tail(self._jvm_out, 10)}\n"
            f"{_log_excerpt(self.log_file)}"
        )

    def _wait_ready(self, bootstrap: str, wait_s: float) -> None:
        if self._proc is None:
            raise BrokerError("the broker process was not started")
        deadline = time.monotonic() + wait_s
        admin: Any = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(self._died_message(code))
            # Probe the port first: librdkafka would retry refused connections for nothing.
            if admin is None and _tcp_open(LOOPBACK, self.port):
                admin = _admin(bootstrap)
            if admin is not None and _metadata_round_trip(bootstrap, 1.0, admin):
                return
            time.sleep(0.1)
        code = self._proc.poll()
        if code is not None:
            raise BrokerError(self._died_message(code))
        raise BrokerError(
            f"the Kafka broker did not answer a metadata request at {bootstrap} within "
            f"{wait_s:.0f} s (a loaded machine may need a longer --wait-s). "
            f"{_log_excerpt(self.log_file)}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop this data directory's broker (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns whether a running broker was stopped. Works from any process: the PID comes
        from the data directory's PID file.
        """
        pid = self._owned_pid()
        if pid is None:
            self._reap()
            self._clear_state()
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout_s):
            log.warning("broker pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10.0)
        self._reap()
        self._clear_state()
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10.0)
            self._proc = None

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                if self._proc.poll() is not None:
                    return True
            elif not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def wait(self) -> int:
        """Block until the broker started here exits; its exit code."""
        if self._proc is None:
            raise BrokerError("wait() needs a broker started by this object")
        return self._proc.wait()

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- command line ------------------------------------------------------------------------

EPILOG = f"""\
actions:
  start    (the default) run a broker; in the foreground until Ctrl-C or SIGTERM
  stop     stop the broker of --data-dir (started in the background or elsewhere)
  status   say whether it runs, where, and where its log is (exit code 3 if stopped)
  address  print the bootstrap address only, for $(...) (exit code 3 if stopped)

examples:
  plantwatch broker                                  # foreground on 127.0.0.1:9092
  plantwatch broker start --background               # returns once ready
  plantwatch simulate --bootstrap-servers "$(plantwatch broker address)" ...
  plantwatch broker start --port 19092 --data-dir /tmp/kafka-b --heap 1g --verbose
  plantwatch broker stop

The first start downloads Apache Kafka {KAFKA_VERSION} from Maven Central with `mvn`
(about 45 MB, into ${{PLANTWATCH_CACHE_DIR:-${{XDG_CACHE_HOME:-~/.cache}}/plantwatch}});
later starts are offline. Needs Java {MIN_JAVA}+ (JAVA_HOME or `java` on PATH).
The broker listens on loopback only, without authentication: a development broker.
Without Java or Maven: `docker compose up kafka` serves {COMPOSE_BOOTSTRAP}.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``plantwatch broker``."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "action",
        nargs="?",
        default="start",
        choices=["start", "stop", "status", "address"],
        help="what to do (default: start)",
    )
    parser.add_argument(
        "--background",
        action="store_true",
        help="start: return once the broker is ready, printing its address",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"start: client port on {LOOPBACK} (default {DEFAULT_PORT}); "
        "the controller takes a free port of its own",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the broker's data, log, PID and state files (default "
        "<cache>/kafka/broker); stop/status/address look here too",
    )
    parser.add_argument(
        "--heap",
        default=DEFAULT_HEAP,
        metavar="SIZE",
        help=f"start: JVM heap cap, e.g. 512m or 1g (default {DEFAULT_HEAP})",
    )
    parser.add_argument(
        "--wait-s",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="S",
        help=f"start: seconds to wait for the broker to answer (default {DEFAULT_WAIT_S:.0f})",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="start in the foreground: stream the broker's log to the terminal",
    )


def _progress_printer(stream: IO[str]) -> ProgressFn:
    def show(message: str) -> None:
        print(f"plantwatch broker: {message}", file=stream, flush=True)

    return show


def _follow(path: Path, stop: threading.Event, stream: IO[str]) -> None:
    """Copy lines appended to ``path`` to ``stream`` until ``stop`` is set (like tail -F)."""
    try:
        position = path.stat().st_size  # only what this run logs, not earlier runs
    except OSError:
        position = 0
    while not stop.is_set():
        try:
            size = path.stat().st_size
            if size < position:  # rolled over
                position = 0
            if size > position:
                with path.open("r", encoding="utf-8", errors="replace") as fh:
                    fh.seek(position)
                    chunk = fh.read()
                    position = fh.tell()
                stream.write(chunk)
                stream.flush()
        except OSError:
            pass
        stop.wait(0.3)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_status(st: BrokerStatus) -> None:
    if st.running:
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.started_at))
            if st.started_at
            else "?"
        )
        print(f"running at {st.bootstrap} (pid {st.pid}, since {since})")
    elif st.stale:
        print("stopped (a PID file was left behind by a broker that is gone)")
    else:
        print("stopped")
    print(f"data dir: {st.data_dir}")
    print(f"log:      {st.log_file}")


def _run_foreground(broker: LocalBroker, args: argparse.Namespace) -> int:
    progress = _progress_printer(sys.stderr)
    stop_follow = threading.Event()
    follower: threading.Thread | None = None
    with _sigterm_as_interrupt():
        try:
            if args.verbose:
                follower = threading.Thread(
                    target=_follow, args=(broker.log_file, stop_follow, sys.stderr), daemon=True
                )
                follower.start()
            bootstrap = broker.start(wait_s=args.wait_s, progress=progress)
            print(
                f"plantwatch broker: Kafka {KAFKA_VERSION} ready at {bootstrap} "
                f"(log: {broker.log_file}); Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            code = broker.wait()
            print(
                f"plantwatch broker: the broker exited by itself (exit code {code}); "
                f"{_log_excerpt(broker.log_file)}",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print("plantwatch broker: stopping the broker...", file=sys.stderr, flush=True)
            broker.stop()
            print("plantwatch broker: stopped", file=sys.stderr)
            return 0
        finally:
            stop_follow.set()
            if follower is not None:
                follower.join(timeout=2.0)


def run(args: argparse.Namespace) -> int:
    """``plantwatch broker [start|stop|status|address]``; returns the exit code."""
    try:
        broker = LocalBroker(port=args.port, data_dir=args.data_dir, heap=args.heap, env=os.environ)
        if args.action == "stop":
            st = broker.status()
            if broker.stop():
                print(f"stopped the broker at {st.bootstrap} (pid {st.pid})")
            else:
                print(f"no broker was running from {broker.data_dir}")
            return 0
        if args.action == "status":
            st = broker.status()
            _print_status(st)
            return 0 if st.running else 3
        if args.action == "address":
            st = broker.status()
            if not st.running or st.bootstrap is None:
                print(
                    f"plantwatch broker: no broker runs from {broker.data_dir}; "
                    "start one with `plantwatch broker start --background`",
                    file=sys.stderr,
                )
                return 3
            print(st.bootstrap)
            return 0
        st = broker.status()
        if st.running and not args.background:
            print(
                f"plantwatch broker: a broker from {broker.data_dir} already runs at "
                f"{st.bootstrap} (pid {st.pid}); stop it with `plantwatch broker stop`",
                file=sys.stderr,
            )
            return 1
        if args.background:
            bootstrap = broker.start_detached(
                wait_s=args.wait_s, progress=_progress_printer(sys.stderr)
            )
            print(bootstrap)
            return 0
        return _run_foreground(broker, args)
    except BrokerError as exc:
        print(f"plantwatch broker: {exc}", file=sys.stderr)
        return 1

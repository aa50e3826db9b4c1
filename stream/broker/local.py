"""One local Kafka broker+controller on loopback: start, wait until ready, status, stop.

The broker's data directory holds everything another process needs to find it: the PID
file and a small state file (bootstrap address, ports, start time), beside
``server.properties``, the KRaft log directory and the broker's own log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.broker.artifacts import ProgressFn, ensure_artifacts
from stream.broker.cache import cache_dir, default_data_dir
from stream.broker.defaults import (
    DEFAULT_HEAP,
    DEFAULT_PORT,
    DEFAULT_WAIT_S,
    FORMAT_TIMEOUT_S,
    KAFKA_VERSION,
    LOOPBACK,
    STOP_TIMEOUT_S,
)
from stream.broker.errors import BrokerError
from stream.broker.java import JavaInfo, find_java
from stream.broker.listeners import SecureListeners
from stream.broker.logs import log_excerpt, log_tail
from stream.broker.ports import free_port, port_free, tcp_open
from stream.broker.probe import admin_client, metadata_round_trip
from stream.broker.process import cmdline, die_with_parent, pid_alive
from stream.broker.server_config import (
    jvm_heap_options,
    new_cluster_id,
    render_log4j2,
    render_server_properties,
)
from stream.broker.tls import BrokerKeystore, ensure_keystore, write_private

log = logging.getLogger("plantwatch.broker")

_STATE = "broker.json"
_PID = "broker.pid"


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

    ``security`` opens secured client listeners beside PLAINTEXT (SASL/PLAIN, TLS): their
    addresses are :meth:`secure_bootstrap`'s, the CA that signed the broker's certificate is
    :attr:`ca_file` (made on first start, in ``data_dir/tls``), and :meth:`client_config`
    gives librdkafka settings for each.
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
        security: SecureListeners | None = None,
        node_id: int = 1,
        quorum_voters: str | None = None,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
        cluster_id: str | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise BrokerError(f"port must be between 1 and 65535, got {port}")
        jvm_heap_options(heap)  # validate early, before any download
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.jvm_options = tuple(jvm_options)
        self.security = security
        self._env = dict(os.environ if env is None else env)
        self.cache = cache or cache_dir(self._env)
        # Absolute, so the PID check below matches the broker's command line from any cwd.
        self.data_dir = (
            Path(data_dir).expanduser() if data_dir else default_data_dir(self.cache)
        ).absolute()
        # One node of a cluster (stream/broker/cluster.py): its id, every voter, the
        # replication of new topics, and the cluster id every node's storage is formatted with.
        self.node_id = node_id
        self.quorum_voters = quorum_voters
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.cluster_id = cluster_id
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
    def ca_file(self) -> Path:
        """PEM of the CA that signed the TLS listener's certificate (``ssl.ca.location``)."""
        return self.data_dir / "tls" / "ca.pem"

    def secure_bootstrap(self, protocol: str) -> str:
        """The address of the secured listener ``SASL_PLAINTEXT``, ``SSL`` or ``SASL_SSL``."""
        ports = {
            "SASL_PLAINTEXT": self.security.sasl_plain_port if self.security else None,
            "SSL": self.security.ssl_port if self.security else None,
            "SASL_SSL": self.security.sasl_ssl_port if self.security else None,
        }
        if protocol not in ports:
            raise BrokerError(f"no such secured listener {protocol!r}; one of {sorted(ports)}")
        port = ports[protocol]
        if port is None:
            raise BrokerError(f"this broker was not started with a {protocol} listener")
        return f"{LOOPBACK}:{port}"

    def client_config(
        self, protocol: str, user: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        """librdkafka settings for the secured listener ``protocol`` (as ``user`` for SASL).

        TLS clients check the broker's certificate against :attr:`ca_file`, host name too.
        """
        conf = {"bootstrap.servers": self.secure_bootstrap(protocol), "security.protocol": protocol}
        if protocol.startswith("SASL"):
            if user is None or password is None:
                raise BrokerError(f"a {protocol} client needs a user and a password")
            conf.update(
                {"sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": password}
            )
        if protocol.endswith("SSL"):
            conf["ssl.ca.location"] = str(self.ca_file)
        return conf

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
        if not pid_alive(pid):
            return None
        command = cmdline(pid)
        # A recycled PID belongs to someone else: only a kafka.Kafka on our properties counts.
        if command is not None and (
            "kafka.Kafka" not in command or str(self._properties) not in command
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
        if port_free(port):
            return
        bootstrap = f"{LOOPBACK}:{port}"
        if what == "broker" and metadata_round_trip(bootstrap, 3.0):
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
            self.cluster_id or new_cluster_id(),
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
        bootstrap = self.launch(progress=progress, detach=detach)
        self.wait_ready(wait_s)
        return bootstrap

    def launch(self, *, progress: ProgressFn | None = None, detach: bool = False) -> str:
        """Format the storage once and start the JVM, without waiting for it to answer.

        A node of a multi-voter cluster cannot answer before a majority of the controllers
        runs, so :class:`~stream.broker.cluster.LocalCluster` launches every node first and
        then calls :meth:`wait_ready` on each. Returns the bootstrap address.
        """
        if self._owned_pid() is not None:
            raise BrokerError(f"the broker of {self.data_dir} runs already")
        self._clear_state()
        # Cheap checks first, so a taken port is reported before a long first download.
        controller_port = self.controller_port or free_port()
        self._check_port(self.port, "broker")
        self._check_port(controller_port, "controller")
        for secure_port in self.security.ports() if self.security else []:
            self._check_port(secure_port, "secured listener")
        java = find_java(self._env)
        libs = self.ensure_artifacts(progress)

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        keystore: BrokerKeystore | None = None
        if self.security is not None and self.security.needs_keystore:
            keystore = ensure_keystore(self.ca_file.parent, java)
        # Owner-only: with secured listeners it holds the SASL users' passwords.
        write_private(
            self._properties,
            render_server_properties(
                port=self.port,
                controller_port=controller_port,
                log_dir=self._kraft_dir,
                security=self.security,
                keystore=keystore,
                node_id=self.node_id,
                quorum_voters=self.quorum_voters,
                replication_factor=self.replication_factor,
                min_insync_replicas=self.min_insync_replicas,
            ),
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
                preexec_fn=None if detach else die_with_parent,
            )
        self._write_state(
            {
                "pid": self._proc.pid,
                "bootstrap": bootstrap,
                "port": self.port,
                "controller_port": controller_port,
                # Ports only: the users' passwords stay in server.properties (mode 0600).
                "sasl_plain_port": self.security.sasl_plain_port if self.security else None,
                "ssl_port": self.security.ssl_port if self.security else None,
                "sasl_ssl_port": self.security.sasl_ssl_port if self.security else None,
                "kafka_version": KAFKA_VERSION,
                "java": java.path,
                "heap": self.heap,
                "started_at": time.time(),
            }
        )
        return bootstrap

    def wait_ready(self, wait_s: float = DEFAULT_WAIT_S) -> None:
        """Wait until the launched broker answers a metadata request; stop it if it does not."""
        bootstrap = f"{LOOPBACK}:{self.port}"
        try:
            self._wait_ready(bootstrap, wait_s)
        except BaseException:
            self.stop()
            raise
        pid = self._proc.pid if self._proc is not None else -1
        log.debug("Kafka %s ready at %s (pid %d)", KAFKA_VERSION, bootstrap, pid)

    def _died_message(self, code: int) -> str:
        return (
            f"the Kafka broker exited during start (exit code {code}). The end of the JVM's "
            f"output {self._jvm_out}:\n{log_tail(self._jvm_out, 10)}\n"
            f"{log_excerpt(self.log_file)}"
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
            if admin is None and tcp_open(LOOPBACK, self.port):
                admin = admin_client(bootstrap)
            if admin is not None and metadata_round_trip(bootstrap, 1.0, admin):
                return
            time.sleep(0.1)
        code = self._proc.poll()
        if code is not None:
            raise BrokerError(self._died_message(code))
        raise BrokerError(
            f"the Kafka broker did not answer a metadata request at {bootstrap} within "
            f"{wait_s:.0f} s (a loaded machine may need a longer --wait-s). "
            f"{log_excerpt(self.log_file)}"
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

    def kill(self) -> bool:
        """SIGKILL this data directory's broker: no shutdown, as a crash or power loss.

        Returns whether a running broker was killed. The data directory is left as the
        kill left it (a later :meth:`start` recovers its logs).
        """
        pid = self._owned_pid()
        if pid is None:
            self._reap()
            self._clear_state()
            return False
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
            elif not pid_alive(pid):
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

"""``plantwatch broker start|stop|status|address``: flags, the foreground run, exit codes.

``plantwatch.cli`` builds the sub-command from :func:`add_arguments` and calls :func:`run`
(both re-exported by ``stream.broker``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from common.progress import Progress
from stream.broker.defaults import (
    COMPOSE_BOOTSTRAP,
    DEFAULT_HEAP,
    DEFAULT_PORT,
    DEFAULT_WAIT_S,
    KAFKA_VERSION,
    LOOPBACK,
    MIN_JAVA,
)
from stream.broker.errors import BrokerError
from stream.broker.local import BrokerStatus, LocalBroker
from stream.broker.logs import follow, log_excerpt

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
    progress = Progress("plantwatch broker")
    stop_follow = threading.Event()
    follower: threading.Thread | None = None
    with _sigterm_as_interrupt():
        try:
            if args.verbose:
                follower = threading.Thread(
                    target=follow, args=(broker.log_file, stop_follow, sys.stderr), daemon=True
                )
                follower.start()
            bootstrap = broker.start(wait_s=args.wait_s, progress=progress.note)
            progress.note(
                f"Kafka {KAFKA_VERSION} ready at {bootstrap} "
                f"(log: {broker.log_file}); Ctrl-C stops it"
            )
            code = broker.wait()
            progress.note(
                f"the broker exited by itself (exit code {code}); {log_excerpt(broker.log_file)}"
            )
            return 1
        except KeyboardInterrupt:
            progress.note("stopping the broker...")
            broker.stop()
            progress.note("stopped")
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
                wait_s=args.wait_s, progress=Progress("plantwatch broker").note
            )
            print(bootstrap)
            return 0
        return _run_foreground(broker, args)
    except BrokerError as exc:
        print(f"plantwatch broker: {exc}", file=sys.stderr)
        return 1

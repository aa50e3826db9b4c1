"""The Java that runs the broker: found through JAVA_HOME or PATH, and new enough (17+)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stream.broker.defaults import DOCKER_INSTEAD, MIN_JAVA
from stream.broker.errors import BrokerError

_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')


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
        f"are installed, or {DOCKER_INSTEAD}."
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
            f"`apt-get install openjdk-17-jre-headless`, or {DOCKER_INSTEAD}."
        )
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"could not run `{java} -version`: {exc}") from exc
    text = (done.stderr or "") + (done.stdout or "")
    return check_java(JavaInfo(path=java, major=parse_java_version(text), version_text=text))

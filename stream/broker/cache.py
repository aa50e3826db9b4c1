"""Where the broker's files live: the user's cache, Kafka's jars, the default data directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from stream.broker.defaults import KAFKA_VERSION


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


def tools_dir(cache: Path | None = None) -> Path:
    """The folder holding ``kafka-tools`` (the console clients), beside :func:`libs_dir`."""
    return (cache or cache_dir()) / "kafka" / KAFKA_VERSION / "tools"


def default_data_dir(cache: Path | None = None) -> Path:
    """The data directory of ``plantwatch broker`` when ``--data-dir`` is not given."""
    return (cache or cache_dir()) / "kafka" / "broker"

"""Reading the broker's own log: its end for an error message, or following it live."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO


def _read_end(path: Path, max_bytes: int = 256 * 1024) -> list[str] | None:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, indented for an error message."""
    text = _read_end(path)
    if text is None:
        return f"    ({path} is missing)"
    kept = text[-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else f"    ({path} is empty)"


def log_excerpt(path: Path, lines: int = 25) -> str:
    """A heading and the broker log's ERROR/FATAL lines with their stack traces, else its tail.

    Kafka dumps hundreds of lines of configuration at start; a plain tail of a broker that
    died early would show that dump instead of the reason, so the tail skips it.
    """
    text = _read_end(path)
    if not text:
        return f"Its log {path}:\n{log_tail(path, lines)}"
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


def follow(path: Path, stop: threading.Event, stream: IO[str]) -> None:
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

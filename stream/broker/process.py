"""Operating-system processes: is a PID alive, what it runs, and dying with the parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie does not count; another user's process does)."""
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


def cmdline(pid: int) -> str | None:
    """The command line of ``pid``, space-separated; None where /proc does not tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def die_with_parent() -> None:
    """Runs in the child before exec: the broker gets SIGTERM if its starter dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

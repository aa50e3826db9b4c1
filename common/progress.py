"""Progress of long work on stderr, the one way every command shows it.

On a terminal one line updates in place; otherwise (CI, a pipe, a log file) a plain line
is written every ``interval_s``, so logs stay readable. ``note`` prints a message that is
not a count (a step, an epoch, a download).

>>> import io
>>> out = io.StringIO()
>>> p = Progress("backtest", total=200, unit="rows", stream=out, interval_s=0.0)
>>> p.update(50)
>>> out.getvalue().split("  ")[0]
'backtest: 50/200 rows'
>>> p.note("epoch 1 loss 0.5")
>>> out.getvalue().splitlines()[-1]
'backtest: epoch 1 loss 0.5'
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One updating stderr line on a terminal, a plain line every ``interval_s`` otherwise."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "readings",
        stream: TextIO | None = None,
        interval_s: float | None = None,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.25 if self.tty else 5.0)
        self.started = time.monotonic()
        self._last = self.started
        self._shown = False

    def text(self, done: int) -> str:
        """The progress line for ``done`` units: count, rate, elapsed, and ETA when known."""
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{done:,}/{self.total:,}" if self.total else f"{done:,}"
        line = f"{self.label}: {count} {self.unit}  {rate:,.0f}/s  {elapsed:,.1f} s elapsed"
        if self.total:
            left = max(self.total - done, 0)
            eta = f"{left / rate:,.1f} s" if rate > 0 else "?"
            line += f"  {100.0 * done / self.total:.0f}%  ETA {eta}"
        return line

    def update(self, done: int) -> None:
        """Show ``done`` units, at most once per ``interval_s`` (always at the total)."""
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if now - self._last < self.interval_s and not finished:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.text(done))
            self._shown = True
        else:
            self.stream.write(self.text(done) + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line of its own (a step, an epoch), above the updating line on a terminal."""
        if not self.enabled:
            return
        if self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = False
        self.stream.write(f"{self.label}: {message}\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear the updating line, so the next output starts on a clean line."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

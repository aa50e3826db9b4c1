"""Timestamps on the wire: RFC 3339 text or epoch milliseconds, always UTC inside.

>>> parse_ts("2026-11-28T21:00:00.123Z")
1795899600123
>>> format_ts(parse_ts(1795899600123))
'2026-11-28T21:00:00.123Z'
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

#: Readings before this instant are refused: an epoch in seconds sent where
#: milliseconds are expected lands in January 1970 and would poison every window.
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 32_503_680_000_000  # 3000-01-01T00:00:00Z


def format_ts(ts_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, as the DESIGN's examples write it.

    >>> format_ts(1795899600123)
    '2026-11-28T21:00:00.123Z'
    """
    dt = datetime.fromtimestamp(ts_ms / 1000.0, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def parse_ts(value: object) -> int:
    """RFC 3339 text or epoch milliseconds to epoch milliseconds; ``ValueError`` if neither.

    A time without an offset is taken as UTC.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
        return _datetime_ms(dt)
    if isinstance(value, datetime):
        return _datetime_ms(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("timestamp is not finite")
        ms = round(value)
        if not MIN_TS_MS <= ms < MAX_TS_MS:
            raise ValueError(
                f"epoch {value} is outside 2000..3000 in milliseconds (was it sent in seconds?)"
            )
        return ms
    raise ValueError(
        f"timestamp must be RFC 3339 text or epoch milliseconds, got {type(value).__name__}"
    )


def format_ts_ms(text: str) -> int:
    """The inverse of :func:`format_ts`, for times this program wrote itself: no range check,
    so a replayed file from 1995 (or one timed in seconds from 0) reads back as it was written.

    >>> format_ts_ms(format_ts(1_000))
    1000
    """
    return _unchecked_ms(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def _unchecked_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _datetime_ms(dt: datetime) -> int:
    ms = _unchecked_ms(dt)
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise ValueError(f"timestamp {dt.isoformat()} is outside 2000..3000")
    return ms

"""What the monitor says about itself, on its own topic (``plantwatch.notices``).

The alert topic carries alert events only. Drift detected, an asset re-baselined after a
sustained benign change, a model swapped or rolled back, a maintenance window opened or
closed, an asset's operating mode changed (stopped, starting up, running): each is a
``plantwatch.notice/v1`` record keyed by asset, with ``notice`` naming what happened, ``at``
the reading time it refers to (RFC 3339) and ``detail`` a small JSON object whose fields
depend on ``notice``.

>>> n = Notice(notice="rebaselined", asset="pump-1", at="2026-11-28T21:00:00.000Z",
...            detail={"alert_id": "8473ed89648083735d8da7c5c20c7e6e"})
>>> decode_notice(encode_notice(n)) == n
True
>>> encode_notice(n).startswith(b'{"schema":"plantwatch.notice/v1","notice":"rebaselined"')
True
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

NOTICE_SCHEMA: Final = "plantwatch.notice/v1"

NoticeKind = Literal[
    "drift",
    "rebaselined",
    "model_swap",
    "model_rollback",
    # An asset taken out of service for maintenance, and returned to it.
    "maintenance_started",
    "maintenance_ended",
    # An asset's operating mode changed: stopped, startup (its grace) or running.
    "operating_mode",
]


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One thing the monitor noticed about an asset (or about itself: ``asset`` empty)."""

    schema: Literal["plantwatch.notice/v1"] = NOTICE_SCHEMA
    notice: NoticeKind
    asset: str
    at: str
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Notice)


def encode_notice(notice: Notice) -> bytes:
    return _ENCODER.encode(notice)


def decode_notice(data: bytes) -> Notice:
    """Parse and validate one notice; ``ValueError`` naming the field if it is not one."""
    return _DECODER.decode(data)

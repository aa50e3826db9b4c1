"""Operator commands on ``plantwatch.commands``: acknowledge, shelve, maintenance.

An operator (or the plant's alarm console) tells the monitor about an alert or an asset
with a ``plantwatch.command/v1`` record keyed by asset, like every other topic, so the
command reaches the one process that holds the asset's alerts::

    {"schema": "plantwatch.command/v1", "command": "ack", "asset": "pump-17",
     "alert_id": "8473ed89648083735d8da7c5c20c7e6e", "by": "j.smith", "note": "on it"}

=====================  ===========================================================
``command``            does (ISA-18.2 words)
=====================  ===========================================================
``ack``                acknowledges the open alert ``alert_id``
``shelve``             shelves the open alert ``alert_id`` until ``until`` (at most
                       ``alert.max_shelve_ms`` after ``at``; that long when omitted)
``unshelve``           returns the shelved alert ``alert_id`` to service now
``maintenance_start``  takes the asset out of service from ``at`` (until ``until``,
                       or until a ``maintenance_end``)
``maintenance_end``    returns the asset to service at ``at``
=====================  ===========================================================

``at`` is when the command takes effect (RFC 3339 or epoch ms); without it, the record's
timestamp (when the operator sent it). ``by`` and ``note`` are carried into the events and
notices. A message that is not such a command becomes a :class:`~stream.schema.Rejection`
bound for the dead-letter topic: nothing raises out of :meth:`CommandDecoder.decode`.

>>> dec = CommandDecoder()
>>> c = dec.decode(encode_command("ack", "pump-17", alert_id="ab12", by="j.smith"), 1795899600000)
>>> (c.command, c.asset, c.alert_id, c.at_ms, c.by)
('ack', 'pump-17', 'ab12', 1795899600000, 'j.smith')
>>> dec.decode(b'{"schema": "plantwatch.command/v1", "command": "ack", "asset": "p"}', None)
Rejection(reason=<Reason.MISSING_FIELD: 'missing_field'>, detail='ack needs an alert_id')
>>> dec.decode(b'{"schema": "plantwatch.command/v1", "command": "reboot", "asset": "p"}',
...            None).reason.value
'unknown_command'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, get_args

import msgspec

from common.reasons import Reason
from common.timestamps import format_ts, parse_ts
from stream.schema import DEFAULT_MAX_MESSAGE_BYTES, Rejection, refuse_size, untyped_object

COMMAND_SCHEMA: Final = "plantwatch.command/v1"

CommandKind = Literal["ack", "shelve", "unshelve", "maintenance_start", "maintenance_end"]
COMMANDS: Final[tuple[str, ...]] = get_args(CommandKind)
#: The commands about one alert (they name it by ``alert_id``).
ALERT_COMMANDS: Final = frozenset({"ack", "shelve", "unshelve"})
#: Longest ``by`` and ``note`` carried into events (an operator's words, not a document).
MAX_TEXT = 500


class OperatorCommand(msgspec.Struct, frozen=True):
    """One decoded command; times in epoch milliseconds."""

    command: CommandKind
    asset: str
    at_ms: int
    alert_id: str | None = None
    until_ms: int | None = None
    by: str = ""
    note: str = ""


class _Wire(msgspec.Struct):
    schema: str
    command: str
    asset: str
    alert_id: str | None = None
    at: datetime | int | float | None = None
    until: datetime | int | float | None = None
    by: str | None = None
    note: str | None = None


_ENCODER = msgspec.json.Encoder()


def encode_command(
    command: str,
    asset: str,
    *,
    alert_id: str | None = None,
    at_ms: int | None = None,
    until_ms: int | None = None,
    by: str | None = None,
    note: str | None = None,
) -> bytes:
    """The documented JSON of a command (for consoles, scripts and tests)."""
    body: dict[str, Any] = {"schema": COMMAND_SCHEMA, "command": command, "asset": asset}
    if alert_id is not None:
        body["alert_id"] = alert_id
    if at_ms is not None:
        body["at"] = format_ts(at_ms)
    if until_ms is not None:
        body["until"] = format_ts(until_ms)
    if by is not None:
        body["by"] = by
    if note is not None:
        body["note"] = note
    return _ENCODER.encode(body)


class CommandDecoder:
    """Decodes and validates command messages; never raises (bad ones are rejections)."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._decoder = msgspec.json.Decoder(_Wire)
        self.max_message_bytes = max_message_bytes

    def decode(self, raw: bytes | None, record_ts_ms: int | None) -> OperatorCommand | Rejection:
        """``record_ts_ms``: the Kafka record's timestamp, the default of ``at``."""
        refused = refuse_size(raw, self.max_message_bytes)
        if refused is not None:
            return refused
        assert raw is not None
        try:
            wire = self._decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            return _classify(raw, exc)
        if wire.schema != COMMAND_SCHEMA:
            return Rejection(
                Reason.UNKNOWN_COMMAND, f"schema {wire.schema[:80]!r} is not {COMMAND_SCHEMA}"
            )
        if wire.command not in COMMANDS:
            return Rejection(
                Reason.UNKNOWN_COMMAND,
                f"command {wire.command[:80]!r} is none of {', '.join(COMMANDS)}",
            )
        if not wire.asset.strip():
            return Rejection(Reason.EMPTY_ASSET, "asset is empty")
        if wire.command in ALERT_COMMANDS and not (wire.alert_id or "").strip():
            return Rejection(Reason.MISSING_FIELD, f"{wire.command} needs an alert_id")
        try:
            at_ms = parse_ts(wire.at) if wire.at is not None else record_ts_ms
            until_ms = parse_ts(wire.until) if wire.until is not None else None
        except (ValueError, OverflowError, OSError) as exc:
            return Rejection(Reason.BAD_TIMESTAMP, str(exc)[:200])
        if at_ms is None:
            return Rejection(Reason.MISSING_FIELD, "no at, and the record has no timestamp")
        if until_ms is not None and until_ms <= at_ms:
            return Rejection(
                Reason.BAD_TIMESTAMP,
                f"until {format_ts(until_ms)} is not after at {format_ts(at_ms)}",
            )
        return OperatorCommand(
            command=wire.command,  # type: ignore[arg-type]  # checked against COMMANDS
            asset=wire.asset,
            at_ms=at_ms,
            alert_id=wire.alert_id.strip() if wire.alert_id else None,
            until_ms=until_ms,
            by=(wire.by or "")[:MAX_TEXT],
            note=(wire.note or "")[:MAX_TEXT],
        )


def _classify(raw: bytes, exc: Exception) -> Rejection:
    """Slow path, only for messages the typed decoder refused: say why."""
    obj = untyped_object(raw)
    if isinstance(obj, Rejection):
        return obj
    missing = [k for k in ("schema", "command", "asset") if k not in obj]
    if missing:
        return Rejection(Reason.MISSING_FIELD, f"missing {', '.join(missing)}")
    if obj.get("asset") is None:
        return Rejection(Reason.EMPTY_ASSET, "asset is null")
    for name in ("at", "until"):
        if obj.get(name) is not None and not isinstance(obj[name], str | int | float):
            return Rejection(Reason.BAD_TIMESTAMP, f"{name} must be RFC 3339 text or epoch ms")
        if isinstance(obj.get(name), str):
            try:
                parse_ts(obj[name])
            except (ValueError, OverflowError, OSError) as err:
                return Rejection(Reason.BAD_TIMESTAMP, f"{name}: {err}"[:200])
    return Rejection(Reason.MISSING_FIELD, f"not a {COMMAND_SCHEMA} record: {exc}"[:200])

"""The operator command decoder (``plantwatch.command/v1``): every message is a command or
a rejection with a reason, never an exception; commands are consumed beside the readings."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.reasons import Reason
from stream.operator import (
    COMMAND_SCHEMA,
    COMMANDS,
    CommandDecoder,
    OperatorCommand,
    encode_command,
)
from stream.schema import ReadingDecoder, Rejection, encode_reading
from stream.source import decode_messages
from tests.test_quality_service import _Msg

T0 = 1_795_899_600_000
DEC = CommandDecoder()


def body(**over: Any) -> bytes:
    base: dict[str, Any] = {"schema": COMMAND_SCHEMA, "command": "ack", "asset": "pump-1",
                            "alert_id": "ab12"}  # fmt: skip
    base.update(over)
    return msgspec.json.encode({k: v for k, v in base.items() if v is not None})


def test_each_command_round_trips_through_its_documented_json() -> None:
    for command in COMMANDS:
        raw = encode_command(
            command, "pump-1", alert_id="ab12", at_ms=T0, until_ms=T0 + 60_000, by="j", note="n"
        )
        assert DEC.decode(raw, None) == OperatorCommand(
            command=command,  # type: ignore[arg-type]
            asset="pump-1",
            at_ms=T0,
            alert_id="ab12",
            until_ms=T0 + 60_000,
            by="j",
            note="n",
        )
    # ``at`` defaults to the record's timestamp; epoch milliseconds are accepted too.
    assert DEC.decode(body(), T0).at_ms == T0  # type: ignore[union-attr]
    assert DEC.decode(body(at=T0 + 5, until=T0 + 10), None).until_ms == T0 + 10  # type: ignore[union-attr]
    maintenance = DEC.decode(body(command="maintenance_start", alert_id=None), T0)
    assert isinstance(maintenance, OperatorCommand) and maintenance.alert_id is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, Reason.NOT_JSON),
        (b"not json", Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b"x" * 70_000, Reason.OVERSIZE),
        (body(schema="plantwatch.command/v9"), Reason.UNKNOWN_COMMAND),
        (body(command="reboot"), Reason.UNKNOWN_COMMAND),
        (body(asset=" "), Reason.EMPTY_ASSET),
        (body(asset=None), Reason.MISSING_FIELD),
        (body(alert_id=None), Reason.MISSING_FIELD),
        (body(command="shelve", alert_id=""), Reason.MISSING_FIELD),
        (body(until="next tuesday"), Reason.BAD_TIMESTAMP),
        (body(at=T0, until=T0 - 1), Reason.BAD_TIMESTAMP),
        (body(at=12), Reason.BAD_TIMESTAMP),
        (body(by=3), Reason.MISSING_FIELD),
    ],
)
def test_bad_commands_are_rejected_with_a_reason(raw: bytes | None, reason: Reason) -> None:
    out = DEC.decode(raw, T0)
    assert isinstance(out, Rejection) and out.reason is reason, out
    assert out.detail


def test_a_command_without_at_nor_a_record_timestamp_is_rejected() -> None:
    out = DEC.decode(body(), None)
    assert isinstance(out, Rejection) and out.reason is Reason.MISSING_FIELD


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_to_a_command_or_a_rejection(raw: bytes) -> None:
    assert isinstance(DEC.decode(raw, T0), OperatorCommand | Rejection)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.sampled_from([COMMAND_SCHEMA, "x"]) | _json,
        "command": st.sampled_from(COMMANDS) | _json,
        "asset": st.sampled_from(["pump-1", "", " "]) | _json,
        "alert_id": st.text(max_size=10) | _json,
        "at": st.integers() | st.sampled_from(["2026-11-28T21:00:00Z", "2026-13-01"]) | _json,
        "until": st.integers() | st.sampled_from(["2026-11-28T22:00:00Z", "soon"]) | _json,
        "by": st.text(max_size=10) | _json,
        "note": st.text(max_size=10) | _json,
    },
)


@settings(max_examples=500, deadline=None)
@given(_fields)
def test_any_json_object_decodes_to_a_command_or_a_rejection(fields: dict[str, Any]) -> None:
    try:
        raw = msgspec.json.encode(fields)
    except (OverflowError, TypeError, ValueError):
        return  # not expressible as JSON (nan is sent as NaN by no producer)
    out = DEC.decode(raw, T0)
    assert isinstance(out, OperatorCommand | Rejection)
    if isinstance(out, OperatorCommand):
        assert out.command in COMMANDS and out.asset.strip()
        assert out.until_ms is None or out.until_ms > out.at_ms


def test_commands_are_consumed_beside_readings_keyed_by_asset() -> None:
    ack = encode_command("ack", "pump-1", alert_id="ab12", at_ms=T0, by="j")
    messages = [
        _Msg("sensors", 0, b"pump-1", encode_reading("pump-1", T0, {"a": 1.0})),
        _Msg("commands", 0, b"pump-1", ack),
        _Msg("commands", 1, b"pump-2", ack),  # keyed by another asset
        _Msg("commands", 2, b"pump-1", b'{"schema": "plantwatch.command/v1"}'),
    ]
    batch = decode_messages(
        messages,  # type: ignore[arg-type]
        ReadingDecoder(),
        commands_topic="commands",
        command_decoder=CommandDecoder(),
    )
    assert [r.asset for r in batch.readings] == ["pump-1"]
    [record] = batch.commands
    assert (record.command.command, record.offset, record.value) == ("ack", 0, ack)
    assert [r.rejection.reason.value for r in batch.rejected] == ["key_mismatch", "missing_field"]
    # A command the monitor cannot apply goes to the dead-letter topic as it came.
    refused = record.reject(Rejection(Reason.UNKNOWN_ALERT, "no such alert"))
    headers = dict(refused.dlq_headers())
    assert headers["plantwatch.reason"] == b"unknown_alert"
    assert headers["plantwatch.source.topic"] == b"commands"
    assert refused.value == ack

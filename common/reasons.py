"""Reason codes for messages that cannot be used.

Each names why a message went to the dead-letter topic (the ``plantwatch.reason`` header)
and is a value of the ``result`` label of ``plantwatch_messages_total``.

>>> Reason("not_json") is Reason.NOT_JSON
True
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why a message went to the dead-letter topic (also the ``result`` metric label)."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    EMPTY_ASSET = "empty_asset"
    BAD_TIMESTAMP = "bad_timestamp"
    NON_NUMERIC_VALUE = "non_numeric_value"
    NON_FINITE_VALUE = "non_finite_value"
    #: Finite, but beyond what a float32 window holds (|value| > 3.4e38): it would turn
    #: into infinity on the way to the model.
    OUT_OF_RANGE = "out_of_range"
    OVERSIZE = "oversize"
    UNKNOWN_SIGNAL = "unknown_signal"
    #: Stamped further ahead of the broker's (or the consumer's) clock than
    #: ``consumer.max_future_ms``: kept, it would make every later reading of its asset late.
    FUTURE_TIMESTAMP = "future_timestamp"
    #: The record key is not the reading's ``asset`` (or there is no key): the partition,
    #: hence the process that owns the asset's state, is chosen by the key.
    KEY_MISMATCH = "key_mismatch"
    #: An operator command (``plantwatch.commands``) whose schema or ``command`` is not one
    #: this plantwatch knows.
    UNKNOWN_COMMAND = "unknown_command"
    #: An operator command naming an alert that is not open for its asset in the process
    #: that owns the asset (never opened, already resolved, or another asset's).
    UNKNOWN_ALERT = "unknown_alert"

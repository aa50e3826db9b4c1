"""The one error of the local broker: something a person must fix, said so they can."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """Something a person must fix to run the local broker; the message says what and how."""

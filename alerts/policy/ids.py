"""Alert ids: derived from what raised the alert and when, so a replay names it the same."""

from __future__ import annotations

import hashlib

import msgspec

from alerts.events import AlertKind


def alert_id_for(
    asset: str,
    model_name: str,
    started_at_ms: int,
    *,
    kind: AlertKind = "anomaly",
    rule: str | None = None,
    signal: str | None = None,
) -> str:
    """Deterministic alert id: a replay after a crash names the same episode the same way.

    An anomaly alert's id comes from asset, model and start time (as it always has). Any
    other kind's comes from asset, kind, rule, signal and start time instead (the rule and
    signal play the model's part), so a stuck-sensor alert never shares an id with the
    anomaly alert, or another rule's alert, that started at the same reading.

    >>> alert_id_for("pump-17", "lstm-ae", 1795899600123)
    '8473ed89648083735d8da7c5c20c7e6e'
    >>> alert_id_for("pump-17", "lstm-ae", 1795899600123, kind="sensor", rule="stuck",
    ...              signal="temp")
    '46a4d20b7e8ab9f5ba83f6bb3f05ced3'
    """
    if kind == "anomaly":
        text = f"{asset}|{model_name}|{started_at_ms}".encode()
    else:
        # JSON, so that no separator inside a name can make two tracks collide.
        text = msgspec.json.encode([asset, kind, rule, signal, started_at_ms])
    return hashlib.sha256(text).hexdigest()[:32]

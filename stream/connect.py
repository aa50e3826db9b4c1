"""Can this configuration reach the brokers? Asked once before the run loop starts.

A wrong password or an untrusted broker certificate never heals by waiting: librdkafka
would retry it every few hundred milliseconds until a metadata timeout turned it into
``Broker transport failure``, which names neither cause. :func:`check_connection` asks for
metadata and listens to the client's errors meanwhile: a refused authentication or a
failed TLS handshake ends the wait at once with an error that says so and which settings
to check; a broker that does not answer is waited for up to ``timeout_s``.

Errors name the bootstrap servers, the security protocol, the SASL mechanism and user,
and librdkafka's own reason (which never carries a credential); never a password, never
the client configuration.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

#: Settings whose value may be shown in an error: none of them is a secret.
_SHOWN = ("security.protocol", "sasl.mechanism", "sasl.username")


class KafkaConnectError(RuntimeError):
    """The brokers could not be reached, or they refused these credentials or this TLS."""


def _advice(code: str) -> str:
    if code == "_AUTHENTICATION":
        return (
            "the broker refused the credentials: check kafka.properties sasl.mechanism, "
            "sasl.username and sasl.password"
        )
    if code == "_SSL":
        return (
            "the TLS handshake failed: check kafka.properties ssl.ca.location (the CA "
            "that signed the broker's certificate) and that the broker's certificate "
            "names the host in bootstrap_servers"
        )
    return (
        "no broker answered: check bootstrap_servers, that the broker is up, and that "
        "kafka.properties security.protocol matches the listener"
    )


def _describe(conf: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{k}={conf[k]}" for k in _SHOWN if conf.get(k))
    where = f"Kafka at {conf.get('bootstrap.servers', '?')}"
    return f"{where} ({shown})" if shown else where


def check_connection(client_config: Mapping[str, Any], timeout_s: float = 30.0) -> None:
    """Return once a metadata request succeeds; :class:`KafkaConnectError` saying why not.

    Authentication and TLS failures raise at once; otherwise the brokers get ``timeout_s``.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    fatal = {KafkaError._AUTHENTICATION, KafkaError._SSL}
    errors: list[KafkaError] = []
    conf = dict(client_config)
    conf["error_cb"] = errors.append
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last: Any = exc.args[0] if exc.args else exc
        admin.poll(0)  # serves error_cb
        refused = [e for e in errors if e.code() in fatal]
        if refused or time.monotonic() >= deadline:
            # The most telling reason: a refusal, else the last broker-level error.
            reasons = refused or [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
            reason = reasons[-1] if reasons else last
            name = reason.name() if isinstance(reason, KafkaError) else "_TRANSPORT"
            text = reason.str() if isinstance(reason, KafkaError) else str(reason)
            waited = "" if refused else f" within {timeout_s:g} s"
            raise KafkaConnectError(
                f"cannot connect to {_describe(client_config)}{waited}: {text} ({name}); "
                f"{_advice(name)}"
            )

"""Secured client listeners a local broker may offer beside its PLAINTEXT one.

``SASL_PLAINTEXT`` with the ``PLAIN`` mechanism (users and passwords in the listener's JAAS
configuration), ``SSL`` (server certificate only, from :mod:`stream.broker.tls`) and
``SASL_SSL`` (both: what managed clusters use).
PLAINTEXT stays the inter-broker listener and the controller's, so readiness probes and
the broker's own traffic need no credentials. The passwords are in ``server.properties``
only, which the broker is started with and which is written readable by its owner only.

>>> s = SecureListeners(sasl_plain_port=9094, sasl_users={"alice": "pw-1"})
>>> "pw-1" in repr(s), secure_listener_parts(s, host="127.0.0.1").listeners
(False, ',SASL_PLAINTEXT://127.0.0.1:9094')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from stream.broker.errors import BrokerError
from stream.broker.tls import BrokerKeystore

#: A user name as the JAAS option ``user_NAME`` needs it.
_USER = re.compile(r"^[A-Za-z0-9._-]+$")
#: Printable ASCII without ``"`` and ``\``: what a quoted JAAS value in a properties file
#: (read as ISO-8859-1, ``\`` an escape) holds unchanged.
_PASSWORD = re.compile(r"^[\x20-\x7e]+$")
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


@dataclass(frozen=True)
class SecureListeners:
    """Which secured listeners to open: SASL/PLAIN, TLS, SASL/PLAIN over TLS (each a port)."""

    sasl_plain_port: int | None = None
    #: user name -> password, accepted on the SASL listeners (hidden from ``repr``).
    sasl_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    ssl_port: int | None = None
    sasl_ssl_port: int | None = None

    def __post_init__(self) -> None:
        ports = (
            ("sasl_plain_port", self.sasl_plain_port),
            ("ssl_port", self.ssl_port),
            ("sasl_ssl_port", self.sasl_ssl_port),
        )
        for name, port in ports:
            if port is not None and not 0 < port < 65536:
                raise BrokerError(f"{name} must be between 1 and 65535, got {port}")
        sasl = self.sasl_plain_port is not None or self.sasl_ssl_port is not None
        if sasl != bool(self.sasl_users):
            raise BrokerError("a SASL/PLAIN listener needs a port and at least one user")
        for user, password in self.sasl_users.items():
            if not _USER.match(user):
                raise BrokerError(
                    f"SASL user name {user!r} may hold only letters, digits, '.', '_' and '-'"
                )
            # The password itself is never named, only what is wrong with it.
            if not _PASSWORD.match(password) or '"' in password or "\\" in password:
                raise BrokerError(
                    f"the password of SASL user {user!r} must be printable ASCII without "
                    "\" or \\ (it is written quoted into the broker's JAAS configuration)"
                )

    def ports(self) -> list[int]:
        return [
            p for p in (self.sasl_plain_port, self.ssl_port, self.sasl_ssl_port) if p is not None
        ]

    @property
    def needs_keystore(self) -> bool:
        return self.ssl_port is not None or self.sasl_ssl_port is not None


@dataclass(frozen=True)
class ListenerParts:
    """What secured listeners add to ``server.properties``: the tails of the
    ``listeners``/``advertised.listeners`` and ``listener.security.protocol.map`` lines,
    and lines of their own."""

    listeners: str = ""
    protocols: str = ""
    lines: tuple[str, ...] = ()


def _sasl_lines(name: str, users: Mapping[str, str]) -> list[str]:
    accepted = " ".join(f'user_{u}="{p}"' for u, p in sorted(users.items()))
    return [
        f"listener.name.{name}.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.{name}.plain.sasl.jaas.config={_PLAIN_LOGIN} required {accepted};",
    ]


def _tls_lines(name: str, keystore: BrokerKeystore | None) -> list[str]:
    if keystore is None:
        raise BrokerError("a TLS listener needs the broker's keystore (stream.broker.tls)")
    return [
        f"listener.name.{name}.ssl.keystore.location={keystore.keystore}",
        f"listener.name.{name}.ssl.keystore.type=PKCS12",
        f"listener.name.{name}.ssl.keystore.password={keystore.password}",
        f"listener.name.{name}.ssl.key.password={keystore.password}",
        f"listener.name.{name}.ssl.client.auth=none",
    ]


def secure_listener_parts(
    security: SecureListeners | None, *, host: str, keystore: BrokerKeystore | None = None
) -> ListenerParts:
    """The ``server.properties`` pieces of ``security`` (nothing for ``None``)."""
    if security is None:
        return ListenerParts()
    protocols: list[tuple[str, int]] = []
    lines: list[str] = []
    if security.sasl_plain_port is not None:
        protocols.append(("SASL_PLAINTEXT", security.sasl_plain_port))
        lines += _sasl_lines("sasl_plaintext", security.sasl_users)
    if security.ssl_port is not None:
        protocols.append(("SSL", security.ssl_port))
        lines += _tls_lines("ssl", keystore)
    if security.sasl_ssl_port is not None:
        protocols.append(("SASL_SSL", security.sasl_ssl_port))
        lines += _sasl_lines("sasl_ssl", security.sasl_users)
        lines += _tls_lines("sasl_ssl", keystore)
    if security.sasl_users:
        lines.insert(0, "sasl.enabled.mechanisms=PLAIN")
    return ListenerParts(
        listeners="".join(f",{name}://{host}:{port}" for name, port in protocols),
        protocols="".join(f",{name}:{name}" for name, _ in protocols),
        lines=tuple(lines),
    )

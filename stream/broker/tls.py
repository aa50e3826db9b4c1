"""A throwaway certificate authority and broker keystore for the local broker's TLS listener.

Made with the JDK's ``keytool`` (the one beside the ``java`` that runs the broker), so TLS
needs nothing the broker does not: a CA, a PKCS#12 keystore holding the broker's key and
its certificate signed by that CA, with ``IP:127.0.0.1`` as subject alternative name
(librdkafka checks the host name by default), and the CA's certificate as PEM for the
clients' ``ssl.ca.location``. Keystore passwords travel to keytool in its environment, never
on a command line another user's ``ps`` would show, and are kept in a ``0600`` file so a
restart of the same data directory reuses the same CA (clients keep their ``ca.pem``).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from stream.broker.defaults import LOOPBACK
from stream.broker.errors import BrokerError
from stream.broker.java import JavaInfo

#: Days the certificates are valid: they are made again only when the folder is emptied.
VALID_DAYS = 3650
KEYTOOL_TIMEOUT_S = 120.0
_CA_ALIAS = "plantwatch-ca"
_BROKER_ALIAS = "broker"
_KEYTOOL_ENV = "PLANTWATCH_KEYSTORE_PASS"


@dataclass(frozen=True)
class BrokerKeystore:
    """The broker's keystore, its password (hidden from ``repr``) and the CA for clients."""

    keystore: Path
    ca_file: Path
    password: str = field(repr=False)


def _san(host: str) -> str:
    """``IP:127.0.0.1`` for an address, ``DNS:broker.local`` for a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def find_keytool(java: JavaInfo) -> str:
    """``keytool`` of the same JDK as ``java`` (``/usr/bin/java`` is resolved first)."""
    beside = Path(os.path.realpath(java.path)).with_name("keytool")
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("keytool")
    if found is None:
        raise BrokerError(
            f"the TLS listener needs the JDK's keytool, found neither beside {java.path} "
            "nor on PATH; install a full JDK (`apt-get install openjdk-17-jdk-headless`)"
        )
    return found


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600, also if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def ensure_keystore(directory: Path, java: JavaInfo, host: str = LOOPBACK) -> BrokerKeystore:
    """The keystore in ``directory``, made (CA, broker key, signed certificate) if missing."""
    keystore = directory / "broker.p12"
    ca_file = directory / "ca.pem"
    pass_file = directory / "keystore.pass"
    if keystore.is_file() and ca_file.is_file() and pass_file.is_file():
        return BrokerKeystore(keystore, ca_file, pass_file.read_text(encoding="utf-8").strip())
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for stale in directory.iterdir():
        stale.unlink()
    password = secrets.token_urlsafe(24)
    keytool = find_keytool(java)
    ca_store = directory / "ca.p12"
    csr = directory / "broker.csr"
    signed = directory / "broker.crt"

    def run(*args: str) -> None:
        cmd = [keytool, *args]
        env = {**os.environ, _KEYTOOL_ENV: password}
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=env,
                timeout=KEYTOOL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"keytool {args[0]} took over {KEYTOOL_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            raise BrokerError(
                f"keytool {args[0]} failed (exit code {done.returncode}) making the broker's "
                f"TLS keystore in {directory}: {(done.stdout + done.stderr).strip()[-800:]}"
            )

    secret = ("-storepass:env", _KEYTOOL_ENV, "-keypass:env", _KEYTOOL_ENV)
    store = ("-storetype", "PKCS12", *secret)
    key = ("-keyalg", "EC", "-groupname", "secp256r1", "-validity", str(VALID_DAYS))
    ca = ("-alias", _CA_ALIAS, "-keystore", str(ca_store))
    broker = ("-alias", _BROKER_ALIAS, "-keystore", str(keystore))
    run("-genkeypair", *ca, "-dname", "CN=plantwatch local CA", "-ext", "bc:c", *store, *key)
    run("-genkeypair", *broker, "-dname", f"CN={host}", *store, *key)
    run("-certreq", *broker, "-file", str(csr), *store)
    run(
        "-gencert",
        *ca,
        "-infile",
        str(csr),
        "-outfile",
        str(signed),
        "-rfc",
        "-validity",
        str(VALID_DAYS),
        "-ext",
        f"SAN={_san(host)}",
        "-ext",
        "KU=digitalSignature,keyEncipherment",
        "-ext",
        "EKU=serverAuth",
        *store,
    )
    run("-exportcert", *ca, "-rfc", "-file", str(ca_file), *store)
    # The chain: the CA first (trusted), then the signed certificate replaces the broker's
    # self-signed one under its alias.
    ca_in_broker = ("-alias", _CA_ALIAS, "-keystore", str(keystore))
    run("-importcert", *ca_in_broker, "-file", str(ca_file), "-noprompt", *store)
    run("-importcert", *broker, "-file", str(signed), "-noprompt", *store)
    csr.unlink()
    # The CA's key is of no further use: without it nobody can sign another certificate.
    ca_store.unlink()
    write_private(pass_file, password + "\n")
    return BrokerKeystore(keystore, ca_file, password)

"""Test-made TLS material and SCRAM password for the `secure_broker` fixture (tests/kafka/conftest.py).

`make_material(dir)` runs `openssl` to make, in `dir`:

    ca.pem, ca.key              a throw-away CA (2 days): the broker's truststore for client certificates
    broker.pem                  the broker's unencrypted PKCS#8 key (as Kafka's PEM keystore wants it), its
                                certificate (CN localhost, SAN DNS:localhost + IP:127.0.0.1) and ca.pem
    client.pem, client.key      a client certificate (CN egress-client) for mutual TLS
    other-ca.pem                a second CA that signed nothing the broker uses

and a random SCRAM-SHA-512 password for the user "egress" (only in the returned Material).
Everything is mode 0600; the CA key is kept only to sign the two certificates.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Material", "make_material", "openssl_missing"]

_DAYS = "2"


@dataclass(frozen=True)
class Material:
    dir: Path
    ca: Path
    other_ca: Path
    broker: Path
    client_cert: Path
    client_key: Path
    username: str
    password: str


def openssl_missing() -> bool:
    return shutil.which("openssl") is None


def _openssl(*args: str | Path, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args[:2]))} exited {proc.returncode}: {proc.stderr.strip()}")


def _ca(d: Path, name: str, cn: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", _DAYS,
        "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash", cwd=d,
    )  # fmt: skip


def _leaf(d: Path, name: str, cn: str, extensions: str) -> None:
    (d / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        f"subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n{extensions}\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", str(secrets.randbits(63)),
        "-days", _DAYS, "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d,
    )  # fmt: skip
    (d / f"{name}.csr").unlink()
    (d / f"{name}.ext").unlink()


def make_material(d: Path, username: str = "egress") -> Material:
    d.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        _ca(d, "ca", "egress test CA")
        _ca(d, "other-ca", "egress untrusted test CA")
        _leaf(d, "broker", "localhost", "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1")
        _leaf(d, "client", "egress-client", "extendedKeyUsage=clientAuth")
        key = (d / "broker.key").read_text()
        if "-----BEGIN PRIVATE KEY-----" not in key:
            raise RuntimeError("openssl did not write a PKCS#8 key (BEGIN PRIVATE KEY)")
        (d / "broker.pem").write_text(key + (d / "broker.crt").read_text() + (d / "ca.pem").read_text())
        (d / "client.pem").write_text((d / "client.crt").read_text())
    finally:
        os.umask(old)
    password = secrets.token_urlsafe(24)
    return Material(d, d / "ca.pem", d / "other-ca.pem", d / "broker.pem", d / "client.pem", d / "client.key", username, password)

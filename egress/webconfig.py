"""`metrics.web_config`: TLS and basic auth for the metrics listener, in the file format of
the Prometheus exporter toolkit (`--web.config.file` of node_exporter and friends), so one
file serves egress and the exporters beside it.

The subset egress reads (README: Metrics over TLS): `tls_server_config` with `cert_file`,
`key_file`, `client_auth_type` (`NoClientCert`, `VerifyClientCertIfGiven`,
`RequireAndVerifyClientCert`), `client_ca_file`, `min_version` and `max_version` (`TLS12`,
`TLS13`); `basic_auth_users` (user: bcrypt hash). The toolkit's other keys are refused by
name, as unknown keys are, so a file never means more than egress does. As in the
toolkit, relative paths are relative to the web config file's directory.

The file is read, and its certificate and key loaded, when the config is: at every start
and by `egress check`; a problem is one `file:line: key: message` line and exit 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bcrypt
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from egress.errors import UsageError
from egress.yamlfile import ItemError, LocatedYaml, format_errors, load_located

__all__ = ["WebConfig", "Users", "load_web_config"]

#: the toolkit's keys egress does not act on: refused by name rather than ignored
_UNSUPPORTED = {
    "cert": "inline PEM is not supported: name the file in cert_file",
    "key": "inline PEM is not supported: name the file in key_file",
    "client_ca": "inline PEM is not supported: name the file in client_ca_file",
    "client_allowed_sans": "not supported by egress: issue client certificates from a CA of their own",
    "cipher_suites": "not supported by egress: OpenSSL's defaults apply (TLS 1.3 suites are fixed anyway)",
    "prefer_server_cipher_suites": "not supported by egress",
    "curve_preferences": "not supported by egress",
    "http_server_config": "not supported by egress (no HTTP/2, no extra headers)",
    "rate_limit": "not supported by egress",
}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
HASH_HELP = "make one with: htpasswd -nBC 10 '' | tr -d ':\\n' (see deploy/README.md)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS12", "TLS13"] = "TLS13"

    @field_validator("client_auth_type")
    @classmethod
    def _client_auth(cls, value: str) -> str:
        if value in ("RequestClientCert", "RequireAnyClientCert"):
            raise ValueError(f"{value} is not supported: egress verifies every client certificate it asks for (VerifyClientCertIfGiven, RequireAndVerifyClientCert)")
        if value not in _CLIENT_AUTH:
            raise ValueError(f"{value!r} is not one of {', '.join(_CLIENT_AUTH)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        if self.client_auth_type == "NoClientCert" and self.client_ca_file is not None:
            raise ItemError(("client_ca_file",), "a client CA without client_auth_type: set client_auth_type: RequireAndVerifyClientCert")
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            raise ItemError(("client_auth_type",), f"{self.client_auth_type} needs client_ca_file: the CA that issues the client certificates")
        if _VERSIONS[self.min_version] > _VERSIONS[self.max_version]:
            raise ItemError(("min_version",), f"{self.min_version} is above max_version {self.max_version}")
        return self


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if ":" in user or not user:
                raise ItemError((user,), "a user name is not empty and holds no ':'")
            if not _BCRYPT.fullmatch(hashed):
                raise ItemError((user,), f"not a bcrypt hash ($2y$10$ and 53 characters); {HASH_HELP}")
        return value

    @model_validator(mode="after")
    def _not_in_the_clear(self) -> WebConfigFile:
        if self.basic_auth_users and self.tls_server_config is None:
            raise ItemError(("basic_auth_users",), "users without tls_server_config: their passwords would cross the network in the clear")
        return self


class Users:
    """HTTP basic auth against bcrypt hashes. A bcrypt check costs ~70 ms at cost 10 and
    Prometheus asks every scrape, so a verified (user, password) is remembered, as a keyed
    digest, never the password; checks run one at a time, so wrong passwords take one core
    at most. An unknown user costs a check too (no telling users apart by time)."""

    def __init__(self, hashes: dict[str, str]) -> None:
        self._hashes = {user: hashed.encode() for user, hashed in hashes.items()}
        self._decoy = next(iter(self._hashes.values()))
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}  # user → digest of the password that passed
        self._lock = threading.Lock()

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header's Basic credentials name a user with that password."""
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, sep, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if hmac.compare_digest(self._verified.get(user, b""), digest):
            return True
        with self._lock:
            try:
                ok = bcrypt.checkpw(password.encode(), self._hashes.get(user, self._decoy)) and user in self._hashes
            except ValueError:  # longer than bcrypt's 72 bytes: no hash can match it
                ok = False
        if ok:
            self._verified[user] = digest
        return ok


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the listener needs: a TLS context (None: plain HTTP) and the users (None: no auth)."""

    doc: LocatedYaml  # the file, for located lines about it (`egress check`)
    tls: ssl.SSLContext | None
    users: Users | None
    settings: WebConfigFile  # its paths made absolute


def load_web_config(path: Path) -> WebConfig:
    """Read, validate and load the certificate, key and client CA; every problem as a
    located line in one UsageError."""
    doc = load_located(path, "web config")
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise UsageError(f"{path}:1: expected a mapping of keys at the top level")
    try:
        settings = WebConfigFile.model_validate(doc.data)
    except ValidationError as exc:
        raise UsageError("\n".join(_lines(doc, exc))) from None
    tls = settings.tls_server_config
    if tls is not None:
        tls = tls.model_copy(update={key: path.parent / value for key in ("cert_file", "key_file", "client_ca_file")
                                     if (value := getattr(tls, key)) is not None})  # fmt: skip
        settings = settings.model_copy(update={"tls_server_config": tls})
    context = _context(doc, tls) if tls is not None else None
    return WebConfig(doc, context, Users(settings.basic_auth_users) if settings.basic_auth_users else None, settings)


def _lines(doc: LocatedYaml, exc: ValidationError) -> list[str]:
    """format_errors' lines, with the toolkit's keys that egress lacks named as such."""
    out = []
    for line, err in zip(format_errors(doc, exc), exc.errors(), strict=True):
        key = str(err["loc"][-1]) if err["loc"] else ""
        if err["type"] == "extra_forbidden" and key in _UNSUPPORTED:
            line = f"{line.removesuffix('unknown key')}{_UNSUPPORTED[key]}"
        out.append(line)
    return out


def _context(doc: LocatedYaml, tls: TlsServerConfig) -> ssl.SSLContext:
    """The server's TLS context, each file's problem at its key's line."""

    def refuse(key: str, file: Path, message: str) -> UsageError:
        return UsageError(f"{doc.where(('tls_server_config', key))}: tls_server_config.{key}: {file}: {message}")

    for key in ("cert_file", "key_file", "client_ca_file"):
        file = getattr(tls, key)
        if file is not None and not os.access(file, os.R_OK):
            raise refuse(key, file, "not found" if not file.exists() else "not readable")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = _VERSIONS[tls.min_version], _VERSIONS[tls.max_version]
    try:
        ssl.create_default_context(cafile=tls.cert_file)  # the certificate alone: its problems are cert_file's
    except (ssl.SSLError, ValueError):
        raise refuse("cert_file", tls.cert_file, "holds no PEM certificate") from None
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except _Encrypted:
        raise refuse("key_file", tls.key_file, "is encrypted: egress reads an unencrypted key (readable by the egress user only)") from None
    except ssl.SSLError as exc:
        mismatch = exc.reason == "KEY_VALUES_MISMATCH"
        raise refuse("key_file", tls.key_file, f"does not match the certificate in {tls.cert_file}" if mismatch else "holds no PEM private key") from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError:
            raise refuse("client_ca_file", tls.client_ca_file, "holds no PEM certificate") from None
        context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return context


class _Encrypted(Exception):
    """The key asks for a passphrase."""


def _no_passphrase() -> str:
    """load_cert_chain asks for a passphrase on the terminal otherwise."""
    raise _Encrypted

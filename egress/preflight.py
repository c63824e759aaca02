"""`egress check`'s pre-flight: what the config names is there on this host and usable now.

A valid config can still name a GeoIP file that is absent or of another edition, an
interface this host lacks, a spool directory egress cannot write or a metrics address
another process holds: each stops a service at start, or leaves fields empty. Every
finding names the key, the source of its value (as config errors do) and the value. A
`metrics.web_config` is loaded as a service loads it (its lines name that file), and its
certificate's dates are checked: an expired one fails every scrape.

With no config file only values given by a flag or an `EGRESS_*` variable are checked:
then `check` is validating a policy (on a laptop, in CI), and the built-in defaults
describe a deployed host, not this one.
"""

from __future__ import annotations

import datetime
import errno
import http.client
import os
import pwd
import socket
import ssl
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from egress.compose import geoip_skipped
from egress.config import Config, ResolvedConfig
from egress.enrich.geoip import open_reader
from egress.errors import EgressError
from egress.policy.schema import Policy
from egress.webconfig import WebConfig, load_web_config

__all__ = ["Finding", "preflight"]

_NET = Path("/sys/class/net")
#: a metrics certificate that expires sooner is a warning
EXPIRY_WARNING_DAYS = 30
_Found = list[tuple[str, int]]  # (message after the key, exit code)


class Finding(NamedTuple):
    """One line for stderr, and what it does to the exit code: 0 a warning (egress runs,
    with less), 2 a wrong value, 3 a missing dependency (SPEC: Exit codes)."""

    message: str
    exit_code: int


def preflight(resolved: ResolvedConfig, policy: Policy) -> list[Finding]:
    """Every finding about the GeoIP databases, the capture interfaces, the spool directory,
    the metrics address and its web config, in that order."""
    config = resolved.config
    web, web_findings = _web_config(resolved)
    checks: list[tuple[tuple[str, ...], Callable[[], _Found]]] = [
        (("geoip", "country_db"), lambda: _geoip(config, policy, "country")),
        (("geoip", "asn_db"), lambda: _geoip(config, policy, "asn")),
        (("capture", "interfaces"), lambda: _interfaces(config.capture.interfaces)),
        (("spool", "path"), lambda: _spool(config.spool.path)),
        (("metrics", "listen"), lambda: _metrics(config.metrics.listen, web)),
    ]
    findings = []
    for loc, run in checks:
        if resolved.file is None and resolved.origin(loc) == "default":
            continue
        where = resolved.where(loc)
        findings += [Finding(f"{_prefix(resolved, loc)}: {message}", code) for message, code in run()]
    return findings + web_findings


def _prefix(resolved: ResolvedConfig, loc: tuple[str, ...]) -> str:
    where = resolved.where(loc)
    return f"{where}: {'.'.join(loc)}" if where else ".".join(loc)


def _web_config(resolved: ResolvedConfig) -> tuple[WebConfig | None, list[Finding]]:
    """The web config as the listener loads it: an absent file at the key that names it,
    the file's own problems at its lines; then the certificate's dates."""
    path = resolved.config.metrics.web_config
    if path is None:
        return None, []
    if not os.access(path, os.R_OK):
        problem = "not found" if not path.exists() else f"not readable by user {_user()}"
        return None, [Finding(f"{_prefix(resolved, ('metrics', 'web_config'))}: {path}: {problem}", 2)]
    try:
        web = load_web_config(path)
    except EgressError as exc:
        return None, [Finding(line, exc.exit_code) for line in str(exc).splitlines()]
    tls = web.settings.tls_server_config
    if tls is None:
        return web, []
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())  # loaded by the listener's context already
    where = f"{web.doc.where(('tls_server_config', 'cert_file'))}: tls_server_config.cert_file: {tls.cert_file}"
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert.not_valid_after_utc <= now:
        return web, [Finding(f"{where}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: every scrape fails", 2)]
    if cert.not_valid_before_utc > now:
        return web, [Finding(f"{where}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: every scrape fails until then", 2)]
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        return web, [Finding(f"{where}: expires on {cert.not_valid_after_utc:%Y-%m-%d} (in {left.days} days)", 0)]
    return web, []


def _geoip(config: Config, policy: Policy, kind: str) -> _Found:
    """As the services open it (`compose`): absent at its default place and not needed, a
    warning; asked for and absent, 3; not an mmdb or another edition, 2."""
    path = config.geoip.country_db if kind == "country" else config.geoip.asn_db
    try:
        if geoip_skipped(config, policy, kind):
            return [(f"{path}: GeoIP {kind} database not found: the {kind} fields stay empty", 0)]
        if path is None:  # turned off, and no rule needs it
            return []
        reader, _ = open_reader(path, kind)
    except EgressError as exc:
        return [(str(exc).removeprefix(f"geoip.{kind}_db: "), exc.exit_code)]  # the line names the key already
    reader.close()
    return []


def _interfaces(names: tuple[str, ...]) -> _Found:
    return [(f"{name}: no such network interface on this host", 2) for name in names if not (_NET / name).exists()]


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (a container)
        return str(os.geteuid())


def _unwritable(directory: Path) -> str | None:
    """Why a file cannot be made in `directory`, found by making one (permission bits do
    not tell: root passes them, a read-only mount or /sys does not)."""
    if not directory.is_dir():
        return "is not a directory"
    try:
        fd, name = tempfile.mkstemp(prefix=".egress-check-", dir=directory)
    except OSError as exc:
        return f"is not writable by user {_user()}: {exc.strerror}"
    os.close(fd)
    os.unlink(name)
    return None


def _spool(path: Path | None) -> _Found:
    """Writable, or creatable: its nearest existing parent writable (the agent makes it)."""
    if path is None:
        return []
    existing = path
    while not os.path.exists(existing):  # False too where a parent cannot be searched: that parent is then judged
        existing = existing.parent
    problem = _unwritable(existing)
    if problem is None:
        return []
    return [(f"{path}: {problem}" if existing == path else f"{path}: cannot be created: {existing} {problem}", 2)]


def _metrics(listen: str, web: WebConfig | None) -> _Found:
    """Bound and closed now, as the metrics endpoint binds it (`listener.serve_metrics`)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Python's HTTP server does
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and _egress_serves(host, port, web):
            return [(f"{listen}: in use by a running egress (free once it stops: fine before a restart)", 0)]
        return [(f"{listen}: cannot be bound: {exc.strerror}", 2)]
    return []


def _egress_serves(host: str, port: str, web: WebConfig | None) -> bool:
    """Whether what holds the address is egress's own /metrics: `check` before a restart
    finds the running service there, which is no problem. Over TLS: the address presents
    the web config's certificate (which needs neither a password nor a client certificate)."""
    tls = web.settings.tls_server_config if web else None
    if tls is not None:
        return _presents(host, int(port), tls.cert_file)
    url = f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return b"egress_build_info" in answer.read(1 << 20)
    except (OSError, http.client.HTTPException):  # not HTTP at all: another program
        return False


def _presents(host: str, port: int, cert_file: Path) -> bool:
    """Whether a TLS server at host:port presents the certificate in `cert_file` (identified,
    not trusted: no verification, no request)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        ours = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)  # the first of a chain
        with socket.create_connection((host, port), timeout=2) as raw, context.wrap_socket(raw) as sock:
            return sock.getpeercert(binary_form=True) == ours
    except (OSError, ValueError):
        return False

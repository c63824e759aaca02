"""The metrics listener: /metrics and /healthz on `metrics.listen`, in a background thread,
over plain HTTP or, with `metrics.web_config`, TLS and basic auth (egress/webconfig.py).

Why not prometheus_client's own `start_http_server(certfile=…)`: it has no basic auth and
no /healthz, and it wraps the listening socket, so the TLS handshake runs on the one
thread that accepts: a client that connects and sends nothing stops every scrape. Here a
connection's handshake runs on its own request thread, within HANDSHAKE_TIMEOUT_SECONDS.
Every path is behind the same TLS and users, /healthz too (README: Metrics over TLS).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import REGISTRY, make_wsgi_app

import structlog

from egress.errors import EgressError
from egress.health import Health
from egress.telemetry import BurstSampler
from egress.webconfig import Users, WebConfig

__all__ = ["MetricsEndpoint", "serve_metrics", "HANDSHAKE_TIMEOUT_SECONDS"]

log = structlog.get_logger("egress.listener")
#: a client has this long to finish the TLS handshake, and then to send each request
HANDSHAKE_TIMEOUT_SECONDS = 10.0
_UNAUTHORIZED = b"Unauthorized\n"
_refused = BurstSampler().log  # a scraper with a wrong password tries every 15 s: a few lines a minute


class MetricsEndpoint:
    """/metrics and /healthz on `metrics.listen`, from `start()` to the end of the process."""

    def __init__(self, listen: str, health: Health, web: WebConfig | None = None) -> None:
        self._listen = listen
        self._health = health
        self._web = web

    def start(self) -> None:
        try:
            address = serve_metrics(self._listen, self._health, self._web)
        except OSError as exc:
            raise EgressError(f"metrics.listen {self._listen}: cannot listen: {exc.strerror}") from None
        web = self._web
        log.info("metrics_listening", address=address, tls=bool(web and web.tls), basic_auth=bool(web and web.users))


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up the exit
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; with TLS, the handshake is left to the request's thread (finish_request)."""
        sock, address = super().get_request()
        if self.tls is None:
            return sock, address
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:  # plain HTTP, an untrusted or missing client certificate, a timeout
                _refused("warning", "metrics_request_refused", reason="tls handshake", peer=client_address[0], error=str(exc)[:200])
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-request: one sampled line, not socketserver's traceback on stderr."""
        _refused("info", "metrics_request_failed", peer=client_address[0])


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = HANDSHAKE_TIMEOUT_SECONDS  # a request that does not arrive does not hold its thread

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """No access log: a scrape every 15 s is not news."""


def _app(health: Health, users: Users | None) -> Callable[..., Iterable[bytes]]:
    """/healthz from `health`; /metrics (any other path, as prometheus_client serves it) from
    the registry; with `users`, each only for a request whose basic auth they allow."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if users is not None and not users.allows(environ.get("HTTP_AUTHORIZATION")):
            _refused("warning", "metrics_request_refused", reason="unauthorized", peer=environ.get("REMOTE_ADDR"), path=environ.get("PATH_INFO"))
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="egress"'), ("Content-Type", "text/plain"),
                                                ("Content-Length", str(len(_UNAUTHORIZED)))])  # fmt: skip
            return [_UNAUTHORIZED]
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        status, body = health.answer()
        start_response("200 OK" if status == 200 else "503 Service Unavailable", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve_metrics(listen: str, health: Health, web: WebConfig | None = None) -> str:
    """Serve /metrics and /healthz on `host:port` in a background thread; returns the bound address."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = _Server6 if family == socket.AF_INET6 else _Server
    server = server_class((host, int(port)), _QuietHandler)  # what wsgiref's make_server does
    server.set_app(_app(health, web.users if web else None))
    server.tls = web.tls if web else None
    threading.Thread(target=server.serve_forever, name="egress-metrics", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    return f"{bound_host!s}:{bound_port}"

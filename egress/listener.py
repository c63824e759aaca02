"""The metrics listener: /metrics and /healthz on `metrics.listen`, in a background thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

import structlog

from egress.errors import EgressError
from egress.health import Health

__all__ = ["MetricsEndpoint", "serve_metrics"]

log = structlog.get_logger("egress.listener")


class MetricsEndpoint:
    """/metrics and /healthz on `metrics.listen`, from `start()` to the end of the process."""

    def __init__(self, listen: str, health: Health) -> None:
        self._listen = listen
        self._health = health

    def start(self) -> None:
        try:
            address = serve_metrics(self._listen, self._health)
        except OSError as exc:
            raise EgressError(f"metrics.listen {self._listen}: cannot listen: {exc.strerror}") from None
        log.info("metrics_listening", address=address)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up the exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """No access log: a scrape every 15 s is not news."""


def _app(health: Health) -> Callable[..., Iterable[bytes]]:
    """/healthz from `health`; /metrics (any other path, as prometheus_client serves it) from the registry."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        status, body = health.answer()
        start_response("200 OK" if status == 200 else "503 Service Unavailable", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve_metrics(listen: str, health: Health) -> str:
    """Serve /metrics and /healthz on `host:port` in a background thread; returns the bound address."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = _Server6 if family == socket.AF_INET6 else _Server
    server = make_server(host, int(port), _app(health), server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="egress-metrics", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    return f"{bound_host!s}:{bound_port}"

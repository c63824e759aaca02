"""The metrics listener (egress/listener.py) with a web config, in process: TLS with the test
CA, basic auth on /metrics and /healthz alike, client certificates, and a client that
connects and says nothing holding up no one."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from egress.health import Health
from egress.listener import serve_metrics
from egress.webconfig import WebConfig, load_web_config
from tests.certs import TestCA

PASSWORD = "scrape-me"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = TestCA(directory), TestCA(directory, "other")
    cert, key = ca.issue("server")
    client, client_key = ca.issue("prometheus", client=True)
    stranger, stranger_key = other.issue("stranger", client=True)
    return {"dir": directory, "ca": ca.cert_file, "cert": cert, "key": key, "client": client, "client_key": client_key,
            "stranger": stranger, "stranger_key": stranger_key}  # fmt: skip


def web_config(pki: dict[str, Path], text: str) -> WebConfig:
    path = pki["dir"] / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n{text}")
    return load_web_config(path)


def serve(web: WebConfig) -> int:
    return int(serve_metrics("127.0.0.1:0", Health(), web).rpartition(":")[2])


def trusting(pki: dict[str, Path], client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca"])
    if client:
        context.load_cert_chain(pki[client], pki[f"{client}_key"])
    return context


def get(port: int, path: str, context: ssl.SSLContext | None, password: str | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if password is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.fixture(scope="module")
def with_users(pki: dict[str, Path]) -> int:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    return serve(web_config(pki, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))


def test_tls_with_the_right_password_serves_metrics_and_healthz(pki: dict[str, Path], with_users: int) -> None:
    """A client that trusts the CA and gives the password gets both paths."""
    status, body, _ = get(with_users, "/metrics", trusting(pki), PASSWORD)
    assert status == 200 and "python_info" in body
    assert get(with_users, "/healthz", trusting(pki), PASSWORD)[:2] == (200, '{"status":"ok"}\n')


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
@pytest.mark.parametrize("password", [None, "wrong"])
def test_no_or_a_wrong_password_gets_401_on_every_path(path: str, password: str | None, pki: dict[str, Path], with_users: int) -> None:
    """/healthz is behind the password as /metrics is, with the challenge a client needs."""
    status, body, headers = get(with_users, path, trusting(pki), password)
    assert (status, body) == (401, "Unauthorized\n")
    assert headers["WWW-Authenticate"] == 'Basic realm="egress"'


def test_plain_http_and_an_untrusting_client_get_nothing(pki: dict[str, Path], with_users: int) -> None:
    """Plain HTTP on the TLS port gets no answer; a client that does not trust the CA refuses the certificate."""
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        with urllib.request.urlopen(f"http://127.0.0.1:{with_users}/metrics", timeout=5):  # noqa: S310 - loopback
            pass
    with pytest.raises(urllib.error.URLError) as caught:
        get(with_users, "/metrics", ssl.create_default_context(), PASSWORD)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)


def test_a_silent_client_holds_up_no_scrape(pki: dict[str, Path], with_users: int) -> None:
    """The handshake runs on the connection's own thread: connections that never send a
    ClientHello leave the listener answering others at once."""
    silent = [socket.create_connection(("127.0.0.1", with_users)) for _ in range(3)]
    try:
        assert get(with_users, "/metrics", trusting(pki), PASSWORD)[0] == 200
    finally:
        for sock in silent:
            sock.close()


def test_client_certificates_from_the_client_ca_only(pki: dict[str, Path]) -> None:
    """RequireAndVerifyClientCert: a certificate from the client CA gets in; none, or one from another CA, does not."""
    port = serve(web_config(pki, f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki['ca']}\n"))
    assert get(port, "/metrics", trusting(pki, "client"))[0] == 200
    for context in (trusting(pki), trusting(pki, "stranger")):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            get(port, "/metrics", context)

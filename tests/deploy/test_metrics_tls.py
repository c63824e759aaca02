"""metrics.web_config with the real Prometheus: two `egress run --read --linger` on loopback,
one serving TLS with basic auth, one TLS asking for client certificates, certificates from a
test CA; Debian's prometheus scrapes them as the deploy guide configures it (`scheme:
https`, `tls_config`, `basic_auth`), and the jobs configured wrong (a wrong password, no
trust in the CA, plain HTTP, no client certificate) are down for the reason expected."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml

from tests.certs import TestCA
from tests.conftest import PCAPS, POLICY
from tests.deploy.conftest import EGRESS, Processes, egress_env, free_port, http_get, tool, wait_for

CAPTURE = PCAPS / "street-cctv-vlan20.pcap"
PASSWORD = "correct horse battery staple"


def https_get(url: str, context: ssl.SSLContext, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if password is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def job(name: str, port: int, scheme: str = "https", **settings: object) -> dict[str, object]:
    return {"job_name": name, "scheme": scheme, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}], **settings}


def test_prometheus_scrapes_egress_over_tls_with_basic_auth_and_client_certificates(geoip: dict[str, Path], processes: Processes, tmp_path: Path) -> None:
    """Up over TLS with the password, and with a client certificate; down with a wrong password (401), without trust in the
    CA, over plain HTTP and without a client certificate; egress metrics arrive through Prometheus's API."""
    prometheus_bin = tool("prometheus", "prometheus")
    ca, stranger_ca = TestCA(tmp_path), TestCA(tmp_path, "stranger")
    cert, key = ca.issue("egress")
    client, client_key = ca.issue("prometheus", client=True)
    stranger, stranger_key = stranger_ca.issue("stranger", client=True)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    webs = {
        "auth": {"tls_server_config": {"cert_file": cert.name, "key_file": key.name}, "basic_auth_users": {"prometheus": hashed}},
        "mtls": {"tls_server_config": {"cert_file": cert.name, "key_file": key.name, "client_auth_type": "RequireAndVerifyClientCert",
                                       "client_ca_file": ca.cert_file.name}},
    }  # fmt: skip
    geo = ["--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]
    ports = {}
    for name, web in webs.items():
        (tmp_path / f"web-{name}.yml").write_text(yaml.safe_dump(web))
        ports[name] = free_port()
        env = egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{ports[name]}", EGRESS_METRICS__WEB_CONFIG=str(tmp_path / f"web-{name}.yml"))
        processes.start(f"egress-{name}", [EGRESS, "run", "--read", CAPTURE, "--linger", *geo], env=env, stdout=tmp_path / f"alerts-{name}.ndjson")
    trusting = ssl.create_default_context(cafile=ca.cert_file)
    with_client = ssl.create_default_context(cafile=ca.cert_file)
    with_client.load_cert_chain(client, client_key)
    watch = {"procs": list(processes.procs), "logs": processes.logs}
    wait_for("egress serving over TLS with basic auth", lambda: https_get(f"https://127.0.0.1:{ports['auth']}/healthz", trusting, PASSWORD) == 200, **watch)
    wait_for("egress serving over TLS to client certificates", lambda: https_get(f"https://127.0.0.1:{ports['mtls']}/healthz", with_client) == 200, **watch)

    # the same refusals outside Prometheus, from the real processes
    assert https_get(f"https://127.0.0.1:{ports['auth']}/metrics", trusting, "wrong") == 401
    assert https_get(f"https://127.0.0.1:{ports['auth']}/healthz", trusting) == 401
    with pytest.raises((OSError, urllib.error.URLError)):  # plain HTTP on the TLS port: the connection closes unanswered
        http_get(f"http://127.0.0.1:{ports['auth']}/metrics")
    stranger_context = ssl.create_default_context(cafile=ca.cert_file)
    stranger_context.load_cert_chain(stranger, stranger_key)
    for context in (trusting, stranger_context):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            https_get(f"https://127.0.0.1:{ports['mtls']}/metrics", context)

    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "wrong-password").write_text("wrong")
    auth = {"username": "prometheus", "password_file": str(tmp_path / "password")}
    jobs = [
        job("egress-tls", ports["auth"], tls_config={"ca_file": str(ca.cert_file)}, basic_auth=auth),
        job("egress-mtls", ports["mtls"], tls_config={"ca_file": str(ca.cert_file), "cert_file": str(client), "key_file": str(client_key)}),
        job("wrong-password", ports["auth"], tls_config={"ca_file": str(ca.cert_file)}, basic_auth={**auth, "password_file": str(tmp_path / "wrong-password")}),
        job("untrusted-ca", ports["auth"], basic_auth=auth),
        job("plain-http", ports["auth"], scheme="http", basic_auth=auth),
        job("no-client-cert", ports["mtls"], tls_config={"ca_file": str(ca.cert_file)}),
    ]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}))
    prometheus_port = free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    watch["procs"].append(processes.start("prometheus", [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                                                         f"--web.listen-address=127.0.0.1:{prometheus_port}"]))  # fmt: skip

    def targets() -> dict[str, dict[str, str]] | None:
        active = json.loads(http_get(f"{prometheus}/api/v1/targets"))["data"]["activeTargets"]
        found = {t["labels"]["job"]: t for t in active}
        return found if len(found) == len(jobs) and all(t["health"] != "unknown" for t in found.values()) else None

    found = wait_for("every job scraped once", targets, **watch)
    health = {name: (t["health"], t["lastError"]) for name, t in found.items()}
    assert health["egress-tls"] == ("up", "") and health["egress-mtls"] == ("up", ""), health
    assert health["wrong-password"] == ("down", "server returned HTTP status 401 Unauthorized"), health
    assert health["untrusted-ca"][0] == "down" and "x509: certificate signed by unknown authority" in health["untrusted-ca"][1], health
    plain = health["plain-http"]  # closed unanswered: an end of file, or a reset where the request was still unread
    assert plain[0] == "down" and (plain[1].endswith(": EOF") or plain[1].endswith("connection reset by peer")), health
    # TLS 1.3: the client's handshake is over before the server has checked its (missing)
    # certificate, so the server's "certificate required" alert races the client's request:
    # read first, Prometheus reports the alert; written first, the closed connection
    no_cert = health["no-client-cert"]
    refused = ("tls: certificate required", "write: broken pipe", "connection reset by peer")
    assert no_cert[0] == "down" and any(reason in no_cert[1] for reason in refused), health

    def captured(job_name: str) -> float:
        expr = f'sum(egress_packets_captured_total{{job="{job_name}"}})'
        result = json.loads(http_get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    for name in ("egress-tls", "egress-mtls"):
        assert wait_for(f"egress_packets_captured_total of {name} in Prometheus", lambda: captured(name), **watch) > 0  # noqa: B023 - called at once
    log = (tmp_path / "egress-auth.log").read_text()
    assert '"reason": "unauthorized"' in log and '"event": "metrics_request_refused"' in log

"""metrics.web_config (egress/webconfig.py): the exporter toolkit's file format, the subset
egress reads, every refusal as one located line, and basic auth against bcrypt hashes with
verified credentials remembered."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization

from egress.errors import UsageError
from egress.webconfig import Users, load_web_config
from tests.certs import TestCA
from tests.conftest import PCAPS, POLICY, run_egress

PASSWORD = "scrape-me"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = TestCA(directory), TestCA(directory, "other")
    server, server_key = ca.issue("server")
    _, other_key = other.issue("stranger")
    return {"ca": ca.cert_file, "cert": server, "key": server_key, "other_key": other_key, "dir": directory}


def write(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def refusal(path: Path) -> str:
    with pytest.raises(UsageError) as caught:
        load_web_config(path)
    return str(caught.value)


def test_tls_and_users_load_with_paths_relative_to_the_file(pki: dict[str, Path]) -> None:
    """cert_file and key_file relative to the web config's directory, as the toolkit reads them;
    a client CA turns client certificates on; users are kept."""
    path = write(pki["dir"], f"""
        tls_server_config:
          cert_file: {pki['cert'].name}
          key_file: {pki['key'].name}
          client_auth_type: RequireAndVerifyClientCert
          client_ca_file: {pki['ca'].name}
          min_version: TLS13
        basic_auth_users:
          prometheus: {HASH}
        """)
    web = load_web_config(path)
    assert web.tls is not None and web.users is not None
    assert web.settings.tls_server_config is not None and web.settings.tls_server_config.cert_file == pki["cert"]
    assert web.tls.verify_mode.name == "CERT_REQUIRED" and web.tls.minimum_version.name == "TLSv1_3"


def test_an_empty_file_is_plain_http(tmp_path: Path) -> None:
    """As in the toolkit: no TLS, no users."""
    web = load_web_config(write(tmp_path, "# nothing yet\n"))
    assert web.tls is None and web.users is None


REFUSED = [
    ("tls_server_config:\n  cert_file: {cert}\n  keyfile: {key}\n",
     ["{path}:1: tls_server_config.key_file: Field required", "{path}:3: tls_server_config.keyfile: unknown key"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
     ["{path}:4: tls_server_config.cipher_suites: not supported by egress: OpenSSL's defaults apply (TLS 1.3 suites are fixed anyway)"]),
    ("rate_limit: {{interval: 1s, burst: 20}}\n", ["{path}:1: rate_limit: not supported by egress"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAnyClientCert\n  client_ca_file: {ca}\n",
     ["{path}:4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported: egress verifies every client certificate it asks for "
      "(VerifyClientCertIfGiven, RequireAndVerifyClientCert)"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n",
     ["{path}:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file: the CA that issues the client certificates"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}\n",
     ["{path}:4: tls_server_config.client_ca_file: a client CA without client_auth_type: set client_auth_type: RequireAndVerifyClientCert"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS11\n",
     ["{path}:4: tls_server_config.min_version: Input should be 'TLS12' or 'TLS13'"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS13\n  max_version: TLS12\n",
     ["{path}:4: tls_server_config.min_version: TLS13 is above max_version TLS12"]),
    ("basic_auth_users:\n  prometheus: {hash}\n",
     ["{path}:1: basic_auth_users: users without tls_server_config: their passwords would cross the network in the clear"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  prometheus: scrape-me\n",
     ["{path}:5: basic_auth_users.prometheus: not a bcrypt hash ($2y$10$ and 53 characters); make one with: htpasswd -nBC 10 '' | tr -d ':\\n' "
      "(see deploy/README.md)"]),
    ("tls_server_config:\n  cert_file: {dir}/absent.pem\n  key_file: {key}\n", ["{path}:2: tls_server_config.cert_file: {dir}/absent.pem: not found"]),
    ("tls_server_config:\n  cert_file: {key}\n  key_file: {key}\n", ["{path}:2: tls_server_config.cert_file: {key}: holds no PEM certificate"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n",
     ["{path}:3: tls_server_config.key_file: {other_key}: does not match the certificate in {cert}"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {cert}\n", ["{path}:3: tls_server_config.key_file: {cert}: holds no PEM private key"]),
    ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {key}\n",
     ["{path}:5: tls_server_config.client_ca_file: {key}: holds no PEM certificate"]),
    ("- tls_server_config\n", ["{path}:1: expected a mapping of keys at the top level"]),
]


@pytest.mark.parametrize(("text", "lines"), REFUSED, ids=range(len(REFUSED)))
def test_refused_with_file_and_line(text: str, lines: list[str], pki: dict[str, Path], tmp_path: Path) -> None:
    """Each mistake is one `file:line: key: message` line (the toolkit's keys egress lacks by name)."""
    names = {"cert": pki["cert"], "key": pki["key"], "ca": pki["ca"], "other_key": pki["other_key"], "hash": HASH, "dir": tmp_path}
    path = write(tmp_path, text.format(**names))
    assert refusal(path).splitlines() == [line.format(path=path, **names) for line in lines]


def test_an_encrypted_key_is_refused_not_asked_for(pki: dict[str, Path], tmp_path: Path) -> None:
    """No passphrase prompt on the terminal at start: the key must be stored unencrypted."""
    key = serialization.load_pem_private_key(pki["key"].read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    path = write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {locked}\n")
    assert refusal(path) == f"{path}:3: tls_server_config.key_file: {locked}: is encrypted: egress reads an unencrypted key (readable by the egress user only)"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The hashes bcrypt was asked to check against, in order."""
    made: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        made.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr("egress.webconfig.bcrypt.checkpw", counting)
    return made


def test_users_allow_the_right_password_only(checks: list[bytes]) -> None:
    """htpasswd's $2y$ hashes work; a wrong password, an unknown user, no or broken credentials,
    a password past bcrypt's 72 bytes: refused."""
    users = Users({"prometheus": "$2y$" + HASH[4:], "grafana": HASH})
    assert users.allows(basic("prometheus", PASSWORD))
    assert users.allows(basic("grafana", PASSWORD))
    for header in (basic("prometheus", "wrong"), basic("nobody", PASSWORD), basic("prometheus", "x" * 100), None, "Bearer abc",
                   "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):  # fmt: skip
        assert not users.allows(header), header


def test_a_verified_password_is_remembered(checks: list[bytes]) -> None:
    """One bcrypt check for a user's many scrapes; a wrong password is checked every time and
    never let in on the strength of the remembered one; an unknown user costs a check too."""
    users = Users({"prometheus": HASH})
    for _ in range(5):
        assert users.allows(basic("prometheus", PASSWORD))
    assert len(checks) == 1
    assert not users.allows(basic("prometheus", "wrong")) and not users.allows(basic("prometheus", "wrong"))
    assert len(checks) == 3
    assert not users.allows(basic("nobody", PASSWORD))
    assert len(checks) == 4
    assert users.allows(basic("prometheus", PASSWORD)) and len(checks) == 4


def test_a_bad_web_config_stops_a_start_with_its_line(pki: dict[str, Path], geoip: dict[str, Path], tmp_path: Path) -> None:
    """Read with the config, before anything starts: `egress run` exits 2 with the line, no traceback."""
    web = write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['other_key']}\n")
    proc = run_egress("run", "--read", PCAPS / "street-cctv-vlan20.pcap", "--policy", POLICY, "--geoip-country", geoip["country"],
                      "--geoip-asn", geoip["asn"], env={"EGRESS_METRICS__WEB_CONFIG": str(web), "EGRESS_METRICS__LISTEN": "127.0.0.1:0"})  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"egress: {web}:3: tls_server_config.key_file: {pki['other_key']}: does not match the certificate in {pki['cert']}"]
    assert proc.stdout == ""

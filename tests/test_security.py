"""Security habits of the capture path and the services."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from egress.config import Config, load_config
from egress.errors import UsageError
from tests.conftest import PCAPS, ROOT, run_egress


def test_no_shell_anywhere_in_egress() -> None:
    """No subprocess call uses a shell and nothing calls os.system/popen: argument lists only."""
    offenders = []
    for path in (ROOT / "egress").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                    offenders.append(f"{path}:{node.lineno}: {name}")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        offenders.append(f"{path}:{node.lineno}: shell=")
    assert offenders == []


@pytest.mark.parametrize("name", ["eth0; rm -rf /", "-i", "a" * 16, "eth 0", "$(id)"])
def test_interface_names_are_validated_before_use(name: str, tmp_path: Path) -> None:
    """An interface name that is not one is refused at start, naming the option, before any process runs."""
    proc = run_egress("run", "--interface", name, env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "interface" in proc.stderr


@pytest.mark.parametrize("bpf", ['"port 53\\nport 80"', "'port 53; reboot'", "'host `id`'"])
def test_extra_bpf_is_validated(bpf: str, tmp_path: Path) -> None:
    """capture.bpf with newlines or shell characters is refused, with its line."""
    cfg = tmp_path / "egress.yaml"
    cfg.write_text(f"capture:\n  bpf: {bpf}\n")
    with pytest.raises(UsageError, match=f"{cfg}:2: capture.bpf"):
        load_config(cfg, environ={})


def test_metrics_listen_on_loopback_by_default() -> None:
    """Unless configured otherwise, the metrics endpoint binds 127.0.0.1."""
    assert Config().metrics.listen.startswith("127.0.0.1:")


def test_sasl_password_never_reaches_the_logs(tmp_path: Path) -> None:
    """A SASL password given in the environment appears in no output, even when the connection fails."""
    secret = "s3cr3t-Pa55w0rd-zz"
    env = {
        "EGRESS_KAFKA__BOOTSTRAP_SERVERS": "[127.0.0.1:1]", "EGRESS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "EGRESS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512", "EGRESS_KAFKA__SASL_USERNAME": "egress",
        "EGRESS_KAFKA__SASL_PASSWORD": secret, "EGRESS_METRICS__LISTEN": "127.0.0.1:0", "EGRESS_SPOOL__PATH": "null",
    }  # fmt: skip
    proc = run_egress("rules", "--log-level", "debug", env=env, timeout=90)
    assert proc.returncode == 3
    assert secret not in proc.stdout and secret not in proc.stderr
    proc = run_egress("agent", "--read", PCAPS / "trunk-qinq-mixed.pcap", "--log-level", "debug", env=env, timeout=90)
    assert secret not in proc.stdout and secret not in proc.stderr
    assert repr(load_config(None, environ={"EGRESS_KAFKA__SASL_PASSWORD": secret})).count(secret) == 0

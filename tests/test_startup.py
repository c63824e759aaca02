"""What a start of `egress` loads: a short analysis is mostly start-up, so what it need not
import stays out (measured in bench/vs_nfstream.py; here only what is or is not loaded)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import egress.cli, egress.compose, egress.services.serve
loaded = sorted(m for m in sys.modules if m == "rich" or m.startswith("rich."))
import structlog.dev, rich.traceback, rich.console
print(loaded, structlog.dev.rich is None, rich.traceback.Traceback.__name__)
"""


def test_egress_loads_without_rich_and_leaves_it_importable() -> None:
    """structlog is kept from loading rich (its traceback renderer, ~45 ms); rich itself is
    still importable afterwards for the table report and the progress bar."""
    out = subprocess.run([sys.executable, "-P", "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True", "Traceback"], out


def test_console_logs_render_an_exception_without_rich() -> None:
    """The console renderer still prints a logged exception's traceback."""
    code = (
        "from egress.logs import configure\nimport structlog\nconfigure('console')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    structlog.get_logger('t').exception('boom')\n"
    )
    err = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stderr
    assert "boom" in err and "ZeroDivisionError: division by zero" in err and "Traceback" in err, err


ANALYSIS = """
import sys
from egress.config import Config
from egress import compose
from egress.policy.schema import default_policy
from egress.sinks.report import Report
import io
compose.analyze(Config(), default_policy(), [], Report("json", io.StringIO()))
print(sorted(m for m in ("prometheus_client", "wsgiref.simple_server") if m in sys.modules))
from egress.telemetry import RulesMetrics
RulesMetrics()
print("prometheus_client" in sys.modules)
"""


def test_an_analysis_loads_no_metrics_server() -> None:
    """Nothing serves an analysis's metrics: it does not load prometheus_client or the
    listener (~10 ms); the services' metrics still do."""
    out = subprocess.run([sys.executable, "-P", "-c", ANALYSIS], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-2:] == ["[]", "True"], out  # after the log lines (no GeoIP databases here)


def test_the_egress_command_starts_tshark_for_analyze_before_loading_the_rest() -> None:
    """`python -m egress analyze` starts its tshark before structlog, pydantic and the pipeline
    load (they overlap tshark's ~0.17 s of loading dissectors); a program that merely imports
    egress, whatever its own arguments, starts none."""
    from tests.conftest import PCAPS

    run = subprocess.run([sys.executable, "-P", "-X", "importtime", "-m", "egress", "analyze", str(PCAPS / "street-cctv-vlan20.pcap"), "--format", "json"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    modules = [line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")]
    assert run.returncode in (0, 1) and "egress.capture.tshark" in modules, run.stderr[-2000:]
    assert modules.index("egress.capture.tshark") < modules.index("structlog") < modules.index("pydantic")
    code = "import sys; sys.argv = ['prog', 'analyze']; import egress, egress.cli; print('egress.capture.tshark' in sys.modules)"
    assert subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

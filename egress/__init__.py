"""egress: where do the cameras' packets go?"""

import sys as _sys

# The one place the version is written (pyproject.toml reads it from here): importlib.metadata
# would cost every start ~25 ms.
__version__ = "0.1.0"

__all__ = ["__version__"]

# `egress analyze` reads files through a tshark that spends ~0.17 s loading its dissectors
# before it reads a packet; egress's own imports (structlog and asyncio, pydantic, the
# pipeline) take about as long. Started here, first, the two overlap (on a 100,000-packet
# capture tshark's start-up is half of the run, when it follows them). Only for the `egress`
# command itself (its console script, or `python -m egress`), never for a program that
# imports egress. The early tshark waits on its stdin for the first capture, and ends with
# egress (its stdin closes) if none asks for it.
if (
    _sys.argv[1:2] == ["analyze"]
    and not {"-h", "--help"} & set(_sys.argv)
    and _sys.argv[0].rpartition("/")[2] in ("egress", "-m")  # "-m": egress is being imported to run as `python -m egress`
):
    from egress.capture.tshark import start_early as _start_early

    _start_early()

# structlog.dev looks for rich at import, only to offer rich's traceback renderer as its
# console default: ~45 ms of imports (rich.traceback pulls in pygments and most of rich),
# a seventh of a 100,000-packet `egress analyze`. egress formats exceptions itself
# (`format_exc_info` in logs.py), so structlog is kept from finding rich while it loads;
# rich stays importable for the report tables and the progress bar, which import it when
# they draw.
if "structlog" not in _sys.modules and "rich" not in _sys.modules:
    _sys.modules["rich"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del _sys.modules["rich"]

"""egress: where do the cameras' packets go?"""

import sys as _sys

# The one place the version is written (pyproject.toml reads it from here): importlib.metadata
# would cost every start ~25 ms.
__version__ = "0.1.0"

__all__ = ["__version__"]

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

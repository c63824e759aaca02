"""egress: where do the cameras' packets go?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("egress")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"

__all__ = ["__version__"]

"""egress: where do the cameras' packets go?"""

# The one place the version is written (pyproject.toml reads it from here): importlib.metadata
# would cost every start ~25 ms.
__version__ = "0.1.0"

__all__ = ["__version__"]

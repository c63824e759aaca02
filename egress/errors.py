"""Errors that reach the user as one line and an exit code (SPEC: Exit codes)."""

from __future__ import annotations

__all__ = ["EgressError", "UsageError", "InputError", "DependencyMissing", "EXIT_OK", "EXIT_ALERTS"]

EXIT_OK = 0
EXIT_ALERTS = 1


class EgressError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    exit_code = 2


class UsageError(EgressError):
    """Bad usage, config or policy (exit 2)."""

    exit_code = 2


class InputError(EgressError):
    """A capture file that cannot be read as one (exit 2); the message names the file."""

    exit_code = 2


class DependencyMissing(EgressError):
    """tshark, a GeoIP database or Kafka is missing or unreachable (exit 3)."""

    exit_code = 3

"""Records as NDJSON lines to a file or stdout: the alert records (`--alerts-out`, `run`'s
stdout) or every flow record with its group, verdict and deciding rule (`--flows-out`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

from egress.codec import alert_to_ecs, encode, verdict_to_ecs
from egress.errors import UsageError
from egress.model import DEVICE, Verdict

__all__ = ["AlertLines", "FlowLines"]


class _Lines:
    """One encoded record per line; `-` or None means stdout. The file is opened by `start()`
    (a path that cannot be written is a one-line usage error) and closed by `stop()`. It is
    appended to (`mode`): a service's alert lines go on across restarts, like a log."""

    mode: Literal["ab", "wb"] = "ab"

    def __init__(self, path: Path | None, what: str) -> None:
        self._path = None if path is None or str(path) == "-" else path
        self._what = what
        self._out: BinaryIO = sys.stdout.buffer

    def start(self) -> None:
        if self._path is not None:
            try:
                self._out = self._path.open(self.mode)
            except OSError as exc:
                raise UsageError(f"{self._path}: cannot write the {self._what}: {exc.strerror}") from None

    async def flush(self) -> None:
        self._out.flush()

    def stop(self) -> None:
        self._out.flush()
        if self._path is not None:
            self._out.close()


class AlertLines(_Lines):
    def __init__(self, path: Path | None) -> None:
        super().__init__(path, "alert records")

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        out = self._out
        for verdict in verdicts:
            for alert in verdict.alerts:
                out.write(encode(alert_to_ecs(alert)) + b"\n")


class FlowLines(_Lines):
    """Every flow with its verdict and the rule that decided (`ruleset`: the policy's name).
    An analysis's output: the file is replaced, as `-o` replaces the report (appended, a
    second run of the same capture doubled every flow in it)."""

    mode = "wb"

    def __init__(self, path: Path | None, ruleset: str) -> None:
        super().__init__(path, "flow records")
        self._ruleset = ruleset

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        out, ruleset = self._out, self._ruleset
        for verdict in verdicts:
            if verdict.verdict != DEVICE:  # a device record of the inventory is no flow
                out.write(encode(verdict_to_ecs(verdict, ruleset)) + b"\n")

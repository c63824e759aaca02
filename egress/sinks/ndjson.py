"""Alert records as NDJSON lines to a file or stdout, flushed per batch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

__all__ = ["NdjsonSink"]


class NdjsonSink:
    """Appends one encoded record per line; `-` or None means stdout."""

    def __init__(self, path: Path | None) -> None:
        self._own = path is not None and str(path) != "-"
        self._out: BinaryIO = path.open("ab") if self._own and path is not None else sys.stdout.buffer

    def write(self, data: bytes) -> None:
        self._out.write(data + b"\n")

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._out.close()

"""Where an `analyze` report goes (`-o F`, `--report F`): standard output for None or `-`,
else a file written whole.

A file is written to a temporary file beside it and renamed over it by `commit()`, so a
reader never sees half a report, an earlier report stays when the run fails, and a run that
read no input leaves no empty file behind. The temporary file is made when the output is
entered, before the analysis starts: a path that cannot be written is a one-line usage
error at once, not after an hour of capture. A FIFO or a device (`/dev/stdout`, `>(gzip)`)
is opened and written as it is."""

from __future__ import annotations

import errno
import os
import secrets
import stat
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from egress.errors import UsageError

__all__ = ["ReportFile", "is_stdout"]


def is_stdout(path: Path | None) -> bool:
    return path is None or str(path) == "-"


class ReportFile:
    """`with ReportFile(path, what) as out:` write to `out.stream`, then `out.commit()`;
    leaving the block without a commit discards what was written to a file."""

    def __init__(self, path: Path | None, what: str) -> None:
        self._path = None if is_stdout(path) else path
        self._what = what
        self._tmp: Path | None = None
        self.stream: IO[str] = sys.stdout

    def __enter__(self) -> ReportFile:
        path = self._path
        if path is None:
            return self
        try:
            mode = path.stat().st_mode if path.exists() else None
            if mode is not None and stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if mode is not None and not stat.S_ISREG(mode):  # a FIFO, a device: written as it is
                self.stream = path.open("w", encoding="utf-8")
                return self
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)  # the umask applies, as to `> F`
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the {self._what}: {exc.strerror}") from None
        self._tmp = tmp
        self.stream = os.fdopen(fd, "w", encoding="utf-8")
        return self

    def commit(self) -> None:
        """The report is complete: flushed, and the file (if one) put in place."""
        self.stream.flush()
        if self._path is None or self._tmp is None:
            return
        self.stream.close()
        try:
            os.replace(self._tmp, self._path)
        except OSError as exc:
            raise UsageError(f"{self._path}: cannot write the {self._what}: {exc.strerror}") from None
        self._tmp = None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._path is None:
            return
        self.stream.close()
        if self._tmp is not None:  # not committed
            self._tmp.unlink(missing_ok=True)


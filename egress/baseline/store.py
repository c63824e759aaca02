"""The baseline of `egress run` and `egress analyze`: a JSON file (`--baseline F`, config
`baseline_file`), loaded at start and replaced atomically (write, fsync, rename) every
minute and at stop, so a crash leaves the last whole copy. A file that is not a baseline,
or of another version, is refused at start (exit 2), never silently reset."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import structlog

from egress.baseline.state import BaselineState, StateError
from egress.errors import UsageError
from egress.runtime import spawn

__all__ = ["BaselineFile"]

log = structlog.get_logger("egress.baseline")


class BaselineFile:
    def __init__(self, path: Path, state: BaselineState, period: float = 60.0) -> None:
        self.path = path
        self.state = state
        self._period = period
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.load()
        self._task = spawn(self._every_period(), "egress-baseline-save")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.save()

    def load(self) -> None:
        """Into the state the evaluator holds; a missing file is an empty baseline."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.info("baseline_new", file=str(self.path))
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.path}: cannot read the baseline: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            loaded = BaselineState.from_doc(json.loads(text))
        except ValueError as exc:  # JSONDecodeError and StateError
            reason = str(exc) if isinstance(exc, StateError) else f"not JSON ({exc})"
            raise UsageError(f"{self.path}: {reason}; refusing to start (move it away to begin a new baseline)") from None
        self.state.replace_with(loaded)
        log.info("baseline_loaded", file=str(self.path), keys=len(self.state.entries), scopes=len(self.state.scopes))

    def save(self) -> None:
        data = json.dumps(self.state.to_doc(), separators=(",", ":")).encode()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with tmp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("baseline_save_failed", file=str(self.path), reason=exc.strerror)
            return
        self.state.changed.clear()

    async def _every_period(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            self.save()

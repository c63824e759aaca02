"""A headless Chromium driven over the Chrome DevTools Protocol, for the browser tests.

Debian's `chromium` is started with `--remote-debugging-pipe` (CDP messages, NUL-ended JSON,
come in on its fd 3 and go out on its fd 4), so no port is opened and, where the system
lets us (`unshare --net`, as root in CI), the browser runs in a network namespace of its
own with no interface but a loopback that is down: nothing it tried could leave. The page
is also told it is offline (Network.emulateNetworkConditions). Every console message,
uncaught exception, log entry and network request of the page is kept for the test."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def chromium() -> str | None:
    """The browser's path, or None where it is not installed."""
    return CHROMIUM if Path(CHROMIUM).exists() else None


def _can_unshare_net() -> bool:
    tool = shutil.which("unshare")
    return tool is not None and subprocess.run([tool, "--net", "true"], capture_output=True).returncode == 0


def _high(fd: int) -> int:
    """The fd moved to 10 or above (close-on-exec), so the child's dup2 onto 3 and 4 cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    """`with Browser(tmp) as b:` one page; `b.open(url)`, `b.evaluate(js)`, `b.screenshot(path)`."""

    def __init__(self, workdir: Path, width: int = 1400, height: int = 1000) -> None:
        self.workdir = workdir
        self.size = (width, height)
        self.isolated = _can_unshare_net()
        self.events: list[dict[str, Any]] = []
        self._next = 0
        self._buffer = b""
        self._session = ""

    def __enter__(self) -> Browser:
        to_child_r, to_child_w = map(_high, os.pipe())
        from_child_r, from_child_w = map(_high, os.pipe())
        log = os.open(self.workdir / "chromium.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        args = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={self.workdir / 'profile'}",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--hide-scrollbars", f"--window-size={self.size[0]},{self.size[1]}", "about:blank",
        ]  # fmt: skip
        if self.isolated:
            args = [shutil.which("unshare") or "unshare", "--net", *args]
        actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                   (os.POSIX_SPAWN_DUP2, to_child_r, 3), (os.POSIX_SPAWN_DUP2, from_child_w, 4)]  # fmt: skip
        self.pid = os.posix_spawn(args[0], args, dict(os.environ), file_actions=actions, setsid=True)
        for fd in (to_child_r, from_child_w, log):
            os.close(fd)
        self._out, self._in = to_child_w, from_child_r
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")
        self.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        self.call("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1], deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in (self._out, self._in):
            os.close(fd)
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own session (setsid): the browser and its helpers
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no answer from chromium (see chromium.log)")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed its DevTools pipe (see chromium.log)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and return its result; events that
        arrive meanwhile are kept in `events`."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self._session and not method.startswith("Target."):
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_for(self, method: str, since: int = 0, timeout: float = 30) -> dict[str, Any]:
        """The first event `method` from `events[since]` on, waiting for it where there is none yet."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[since:]:
                if event.get("method") == method:
                    return event
            self.events.append(self._read(deadline))

    def open(self, url: str) -> None:
        since = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", since, timeout=60)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, selector: str | None = None) -> Path:
        """A PNG of the whole page, or of the element `selector` picks."""
        if selector is None:
            box = self.evaluate("({x: 0, y: 0, width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight})")
        else:
            box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                                " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}; })()")  # fmt: skip
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip={**box, "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def problems(self) -> list[str]:
        """What the page logged as an error or threw: console errors, exceptions, error log entries."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(f"log: {params['entry'].get('text', '')} {params['entry'].get('url', '')}")
        return found

    def requests(self) -> list[str]:
        """The URL of every request the page made (its own document included)."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

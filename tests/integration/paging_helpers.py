"""Real HTTP receivers on 127.0.0.1 and a real pager process, for the paging integration tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.integration.conftest import ROOT
from tokenbrake.schemas.codec import loads
from tokenbrake.streams.broker import CHILD, free_port
from tokenbrake.streams.status import fetch_status


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, tail: Callable[[], str] = str) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail()}")


class Receivers:
    """One aiohttp server (its own thread and loop) playing every receiver:
    ``/pd`` answers 202, ``/flaky`` 500 twice then 200, ``/slack`` 429 with Retry-After: 1
    once then 200, ``/hang`` never answers (until the test ends), ``/am`` 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.hanging = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> Receivers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        kind = path.split("/")[1]
        with self._lock:
            earlier = sum(1 for r in self.requests if r["kind"] == kind)
            record = {"kind": kind, "path": path, "headers": dict(request.headers), "body": body,
                      "json": loads(body), "t": time.monotonic(), "status": None}
            self.requests.append(record)
        if kind == "hang":
            self.hanging += 1
            try:
                assert self._release is not None
                await self._release.wait()
            finally:
                self.hanging -= 1
            return web.Response(status=503)
        if kind == "pd":
            status, text, headers = 202, '{"status":"success","message":"Event processed"}', {}
        elif kind == "flaky":
            status, text, headers = (500, "boom", {}) if earlier < 2 else (200, "thanks", {})
        elif kind == "slack":
            status, text, headers = (429, "rate_limited", {"Retry-After": "1"}) if earlier == 0 else (200, "ok", {})
        else:
            status, text, headers = 200, "", {}
        record["status"] = status
        return web.Response(status=status, text=text, headers=headers)

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["kind"] == kind]

    def stop(self) -> None:
        async def _stop() -> None:
            if self._release is not None:
                self._release.set()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class PagerProc:
    """``python -m tokenbrake.streams pager`` as a real process."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.proc: subprocess.Popen[bytes] | None = None
        self.env["TOKENBRAKE_PAGER_WEB_PORT"] = str(free_port())
        self.url = f"http://127.0.0.1:{self.env['TOKENBRAKE_PAGER_WEB_PORT']}/tokenbrake/pager"

    def start(self, timeout_s: float = 60.0) -> PagerProc:
        log = open(self.home / "pager.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "tokenbrake.streams", "pager"], env=self.env, cwd=ROOT,
                                     stdout=log, stderr=log, **CHILD)
        wait_for(lambda: self.status_or_none() and self.status_or_none()["active"], timeout_s, "the pager to start",
                 self.log_tail)
        return self

    def status_or_none(self) -> dict[str, Any] | None:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log_tail()
        try:
            return fetch_status(self.url)
        except OSError:
            return None

    def status(self) -> dict[str, Any]:
        status = self.status_or_none()
        assert status is not None
        return status

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed (a crash)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        path = self.home / "pager.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

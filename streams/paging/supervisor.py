"""The pager process beside the worker, restarted if it dies (a pager that silently stopped
would page nobody). Its own process, so it never competes with decisions for the worker's
event loop; it dies with the worker (``CHILD``) and is stopped with it."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

from tokenbrake.streams.broker import CHILD

log = logging.getLogger("tokenbrake.pager")


class PagerSupervisor:
    def __init__(self, bootstrap: str, min_backoff_s: float = 1.0, max_backoff_s: float = 60.0) -> None:
        self.command = [sys.executable, "-m", "tokenbrake.streams", "pager", "--bootstrap", bootstrap]
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_running, name="pager-supervisor", daemon=True)

    def start(self) -> PagerSupervisor:
        self._thread.start()
        return self

    def _keep_running(self) -> None:
        backoff = self.min_backoff_s
        while not self._stop.is_set():  # (CHILD's death signal follows this thread: it outlives the child)
            self.proc = subprocess.Popen(self.command, **CHILD)
            code = self.proc.wait()
            if self._stop.is_set():
                return
            if code == 2:  # a configuration error (the routes file): restarting cannot help
                log.critical("the pager stopped on a configuration error (exit 2); alerts are not being delivered")
                return
            self.restarts += 1
            log.error("the pager exited with code %s; restarting it in %.0fs", code, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(self.max_backoff_s, backoff * 2)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout_s)

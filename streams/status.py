"""Read the running worker's state over its HTTP endpoint.

Only one process may open a chdb directory, and the worker holds it; so readers
(``tokenbrake status``, the demo) ask the worker at ``/tokenbrake/status``, and read
ClickHouse directly only when it is a server (http DSN) or the worker has stopped.

A worker writes where it listens to ``<TOKENBRAKE_HOME>/worker.json`` while it runs, so
``tokenbrake status`` in the same directory finds it on any port without
``TOKENBRAKE_WEB_PORT`` being set in that shell too.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tokenbrake.schemas.codec import loads
from tokenbrake.streams.tables import render_status  # noqa: F401 - the CLI's renderer

STATUS_PATH = "/tokenbrake/status"
WORKER_FILE = "worker.json"


def fetch_status(url: str, timeout: float = 3.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator-given local URL
        return loads(resp.read())


def status_url(given: str) -> str:
    """``host:port``, ``http://host:port`` or ``http://host:port/`` -> the status endpoint's URL;
    a URL with a path is kept as given."""
    parts = urlsplit(given if "://" in given else f"http://{given}")
    path = parts.path.rstrip("/") or STATUS_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def write_worker_file(home: Path, url: str) -> Path:
    path = home / WORKER_FILE
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    return path


def remove_worker_file(home: Path) -> None:
    path = home / WORKER_FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def recorded_worker_url(home: Path) -> str | None:
    """The URL a worker running with this home recorded, if that process still lives."""
    try:
        record = json.loads((home / WORKER_FILE).read_text())
        os.kill(int(record["pid"]), 0)
        return str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

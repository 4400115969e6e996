"""What the status endpoints answer (``/tokenbrake/stats`` cheap, ``/tokenbrake/status`` with
the spend per scope)."""

from __future__ import annotations

import time
from typing import Any


def stats_view(runtime: Any) -> dict[str, Any]:
    """Counts, sink, broker contact and liveness: no scan of the spend state (fine to poll)."""
    engine, view = runtime.engine.stats(), runtime.control_view
    silent = view.staleness_s
    return {"ready": runtime.attached >= 0, "counts": {**engine["counts"], **runtime.unknown_fields},
            "watermark_ms": engine["watermark_ms"], "controls": engine["controls"],
            "control_view": {"applied": view.applied, "ignored": dict(view.ignored),
                             "reasserted": runtime.reasserter.reasserted},
            "worker": {**runtime.stats, "uptime_s": round(time.time() - runtime.started, 1),
                       "sink": runtime.sink.stats(),
                       "last_message_age_s": round(time.monotonic() - runtime.last_decided, 1),
                       "broker_silent_s": None if silent == float("inf") else round(silent, 1)}}


def status_view(runtime: Any, limit: int = 50) -> dict[str, Any]:
    """:func:`stats_view` plus today's and this month's spend of the top ``limit`` scopes."""
    stats = stats_view(runtime)
    return {**runtime.engine.status(limit), "ready": stats["ready"], "worker": stats["worker"],
            "control_view": stats["control_view"]}


def install_pages(runtime: Any) -> None:
    """``GET /tokenbrake/status[?limit=N]`` and ``GET /tokenbrake/stats`` on Faust's web server."""
    from faust.web import Request, Response, View

    @runtime.app.page("/tokenbrake/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            limit = request.query.get("limit", "50")
            return self.json(status_view(runtime, int(limit) if limit.isdigit() else 50))

    @runtime.app.page("/tokenbrake/stats")
    class Stats(View):  # cheap: no scan of the spend state, fine to poll often
        async def get(self, request: Request) -> Response:
            return self.json(stats_view(runtime))

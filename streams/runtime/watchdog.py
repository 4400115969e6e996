"""A worker whose broker is gone stops, for its supervisor to start it again."""

from __future__ import annotations

import logging

log = logging.getLogger("tokenbrake.worker")


def broker_silence(limit_s: float, silent_s: float) -> float | None:
    """The seconds without an answer from the broker once they pass ``limit_s`` (0: never), else
    None. The control view proves contact every 2 seconds (``silent_s``: inf before it starts).
    Stopping (exit 1; nothing undecided was acknowledged) beats retrying for ever.

    >>> broker_silence(300, 12.0), broker_silence(0, 900.0), broker_silence(300, float("inf"))
    (None, None, None)
    """
    if not limit_s or silent_s <= limit_s or silent_s == float("inf"):
        return None
    log.critical("no answer from the broker for %.0fs (TOKENBRAKE_BROKER_LOST_EXIT_S=%s): stopping so a "
                 "supervisor restarts the worker", silent_s, limit_s)
    return silent_s

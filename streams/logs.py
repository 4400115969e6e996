"""Structured logs: ``ts level logger message key=value ...`` on stderr.

Nothing is logged per event at INFO: per-event lines are DEBUG; INFO is for state changes
(controls issued, state attached, broker up) and WARNING for alerts.
"""

from __future__ import annotations

import logging
from typing import Any

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower():7} {record.name} " \
               f"{record.getMessage()}"
        extras = " ".join(f"{k}={_fmt(v)}" for k, v in vars(record).items() if k not in _STD and not k.startswith("_"))
        text = f"{base} {extras}" if extras else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _fmt(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if " " in text else text


def logging_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"kv": {"()": KeyValueFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "kv", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {"aiokafka": {"level": "WARNING"}, "faust": {"level": "WARNING"}, "mode": {"level": "WARNING"}},
    }


def configure(level: str = "info") -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level))


class LogBudget:
    """At most ``per_window`` log lines per ``window_s`` for one kind of repeated failure; the
    rest are counted, and :meth:`take_suppressed` says how many were not logged.

    >>> budget = LogBudget(per_window=2, window_s=60, clock=lambda: 0.0)
    >>> [budget.allow() for _ in range(4)], budget.take_suppressed(), budget.take_suppressed()
    ([True, True, False, False], 2, 0)
    """

    def __init__(self, per_window: int = 10, window_s: float = 60.0, clock: Any = None) -> None:
        import time

        self.per_window, self.window_s = per_window, window_s
        self._clock = clock or time.monotonic
        self._window_start = self._clock()
        self._used = 0
        self._suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window_start >= self.window_s:
            self._window_start, self._used = now, 0
        if self._used < self.per_window:
            self._used += 1
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self._suppressed = self._suppressed, 0
        return n

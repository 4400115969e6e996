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
        "filters": {"repeats": {"()": RepeatFilter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "kv", "stream": "ext://sys.stderr",
                                "filters": ["repeats"]}},
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


class RepeatFilter(logging.Filter):
    """The libraries' loggers (aiokafka retrying a lost broker: about 90 lines a second) may
    repeat one line many times a second: at most ``per_window`` lines per logger and message
    template per ``window_s``; the first line let through afterwards carries
    ``suppressed_similar=N``. Our own loggers are left alone (they budget their repeats with
    :class:`LogBudget`).

    >>> now = [0.0]
    >>> repeats = RepeatFilter(per_window=2, window_s=60, clock=lambda: now[0])
    >>> line = lambda: logging.LogRecord("aiokafka.consumer", 40, "", 0, "Failed fetch from %s", (1,), None)
    >>> [repeats.filter(line()) for _ in range(5)]
    [True, True, False, False, False]
    >>> now[0] = 61.0
    >>> record = line()
    >>> repeats.filter(record), record.suppressed_similar
    (True, 3)
    >>> repeats.filter(logging.LogRecord("tokenbrake.worker", 40, "", 0, "ours", (), None))
    True
    """

    LIBRARIES = ("aiokafka", "faust", "mode", "kafka")
    MAX_KINDS = 1000  # message templates remembered (a library that formats its own lines has many)

    def __init__(self, per_window: int = 5, window_s: float = 60.0, clock: Any = None) -> None:
        super().__init__()
        self.per_window, self.window_s, self.clock = per_window, window_s, clock
        self._budgets: dict[tuple[str, str], LogBudget] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.LIBRARIES):
            return True
        kind = (record.name, str(record.msg))
        budget = self._budgets.get(kind)
        if budget is None:
            if len(self._budgets) >= self.MAX_KINDS:
                self._budgets.clear()
            budget = self._budgets[kind] = LogBudget(self.per_window, self.window_s, self.clock)
        if not budget.allow():
            return False
        suppressed = budget.take_suppressed()
        if suppressed:
            record.suppressed_similar = suppressed
        return True

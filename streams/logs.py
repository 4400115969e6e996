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

"""Log lines, one format for every logger of a charnn process: API, uvicorn, workers.

``CHARNN_LOG_FORMAT=json`` makes each line one JSON object, with the id of the request
being served (``-`` outside requests, and in training workers). The configuration goes
on the root logger, so what libraries log (uvicorn, rq) is written the same way; uvicorn
takes ``logging_config(..., uvicorn=True)`` as its ``log_config``, which replaces its own
formats, start-up and access lines included.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# uvicorn's access line: (client "host:port", method, path with query, HTTP version, status)
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(zip(ACCESS_FIELDS, record.args, strict=False))  # fields to query by
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def logging_config(level: str, json_format: bool, *, uvicorn: bool = False) -> dict[str, Any]:
    """``logging.config.dictConfig``'s: one handler on stderr, in charnn's format.

    ``uvicorn``: also take over uvicorn's loggers (they have handlers of their own and do
    not propagate), for ``uvicorn.run(log_config=...)``. Only there: once uvicorn has
    applied ``--no-access-log``, configuring its loggers again would undo it.
    """
    formatter = {"()": JsonFormatter} if json_format else {"format": TEXT_FORMAT}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"charnn": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "filters": ["request_id"],
                "formatter": "charnn",
            }
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},  # libraries: what goes wrong
        "loggers": {"charnn": {"level": level.upper(), "handlers": [], "propagate": True}},
    }
    if uvicorn:
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            config["loggers"][name] = {"level": "INFO", "handlers": [], "propagate": True}
    return config


def configure_logging(level: str, json_format: bool) -> None:
    logging.config.dictConfig(logging_config(level, json_format))

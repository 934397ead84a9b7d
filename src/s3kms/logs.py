"""The server's log on stderr: one format for s3kms's loggers and uvicorn's, text or JSON lines.

`configure(log_format, level)` sets the log up in this process. `dict_config(...)` is the same
set-up as a `logging.config.dictConfig` dictionary: `s3kms server` hands it to uvicorn as its
`log_config`, and uvicorn applies it again in every worker process (`--workers N`), so every
process, and uvicorn's own lines (`uvicorn.error`; `uvicorn.access` when enabled), write the one
format chosen.

- `text`: `2026-12-01 17:45:33,533 INFO s3kms: message` (the traceback, if any, on the next lines).
- `json`: one object per line, `{"time": "2026-12-01T17:45:33.533Z", "level": "INFO",
  "logger": "s3kms", "message": "..."}`, with `request_id` when the line is logged while a request
  is served, `exc` (the formatted traceback, one string) when there is one, and the fields a
  line carries in `extra={FIELDS: {...}}` (the start summary's).

What is logged never holds a secret (docs/security.md): neither format adds anything to a message
but the request id.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from s3kms.request import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# `log.info(..., extra={FIELDS: {"name": value}})`: fields of their own in a JSON line.
FIELDS = "s3kms_fields"
_RESERVED = ("time", "level", "logger", "message", "request_id", "exc")


def iso_time(created: float) -> str:
    """A record's time as ISO 8601 in UTC, to the millisecond: `2026-12-01T17:45:33.533Z`."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside values are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Formatted in the task that logged (handlers here are synchronous), so the context
        # variable is that task's: set for the whole of a request by the HTTP shell (http/app.py).
        request_id = current_request_id.get()
        if request_id is not None:
            out["request_id"] = request_id
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            out.update((k, v) for k, v in fields.items() if k not in _RESERVED)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a path that is not UTF-8 (kept with surrogate escapes) stays printable.
        return json.dumps(out, default=str)


def dict_config(log_format: str, level: str) -> dict[str, Any]:
    """The log set-up as a dictConfig: every logger to one stderr handler in `log_format`."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format.lower() == "json"
        else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"s3kms": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "s3kms",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # uvicorn's loggers lose the handlers and formats of its own set-up and reach the root's.
        # (uvicorn then sets their levels to --log-level, and mutes uvicorn.access when the access
        # log is off, as it is in s3kms.)
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
        },
    }


def configure(log_format: str, level: str) -> None:
    logging.config.dictConfig(dict_config(log_format, level))


def failure_line(message: str, exit_code: int) -> str:
    """A failed start's one line as a JSON line (`--log-format json`), with its exit code."""
    record = logging.makeLogRecord(
        {"name": "s3kms", "levelno": logging.ERROR, "levelname": "ERROR", "msg": message}
    )
    setattr(record, FIELDS, {"exit_code": exit_code})
    return JsonFormatter().format(record)

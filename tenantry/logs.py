"""Structured JSON logs: one object per line, each carrying the request id it belongs to."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

#: The request id of the request being served by this thread or task, for every log line.
request_id_var: ContextVar[str | None] = ContextVar("tenantry_request_id", default=None)

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object with its `extra` fields and the current request id."""

    def format(self, record: logging.LogRecord) -> str:
        """Returns the record as a single JSON line."""
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            # Which process wrote it: with `serve --workers N`, which worker served a request.
            "pid": record.process,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str) -> None:
    """Sends every log record to stderr as JSON lines at `level`; uvicorn's access log is ours."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware writes one access line per request, with the request id; uvicorn's would
    # duplicate it without one.
    logging.getLogger("uvicorn.access").disabled = True
    # Connexion logs every validation failure at INFO; the access line already records the 400.
    logging.getLogger("connexion").setLevel(max(logging.WARNING, logging.getLevelName(level)))

"""One-line structured logs on stderr: ``configure(service, level, fmt)`` once at start.

Log with ``extra={...}`` for fields (``trace_id``, ``app``, ``reason``...). Never pass secrets
or message plaintext: nothing here can tell them apart from other text.

``trace_id`` need not be passed while an entry is handled: the consumer runtime sets
``TRACE_ID`` (a context variable, so each delivery's task has its own) to the entry's trace id,
and every line logged meanwhile carries it, a handler's own included.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import msgspec

__all__ = ["TRACE_ID", "configure"]

# The trace id of the entry being handled in this task ("" outside one).
TRACE_ID: ContextVar[str] = ContextVar("wecom_bus_trace_id", default="")

# Record attributes that are not fields of ours (uvicorn adds color_message to its records).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
_encode = msgspec.json.Encoder(enc_hook=str).encode


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    if "trace_id" not in fields and (trace_id := TRACE_ID.get()):
        fields["trace_id"] = trace_id
    return fields


class JSONFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return _encode(line).decode()


class ConsoleFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{stamp} {record.levelname[:4]} {self.service:<9} {record.getMessage()} {extra}"
        if record.exc_info and record.exc_info[0] is not None:
            text += f" error={record.exc_info[0].__name__}: {record.exc_info[1]}"
        return text.rstrip()


def configure(service: str, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(service) if fmt == "json" else ConsoleFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and WeCom URLs carry access_token: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

"""JSON log lines on stdout, each carrying the request id and the trace and span ids.

Usage: ``logging.config.dictConfig(logging_config("INFO"))`` (gunicorn applies it through
``logconfig_dict`` in app/gunicorn_conf.py, before workers start).

Trace context is added by a filter on the handler rather than by
opentelemetry-instrumentation-logging, which replaces the process-wide LogRecord factory.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import g, has_request_context

from .tracing import current_trace_ids

FIELDS = "{asctime}{levelname}{name}{message}"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


class ContextFilter(logging.Filter):
    """Add request_id, trace_id, span_id and trace_sampled to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = g.get("request_id")
        if not hasattr(record, "trace_id"):
            ids = current_trace_ids()
            if ids is not None:
                record.trace_id, record.span_id, record.trace_sampled = ids
        return True


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """Return a dictConfig mapping: one JSON handler on stdout for the app and gunicorn."""
    handler = ["json"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": FIELDS,
                "style": "{",
                "rename_fields": RENAMED,
                "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            }
        },
        "handlers": {
            "json": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                     "formatter": "json", "filters": ["context"]},
        },
        "root": {"level": level, "handlers": handler},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": handler, "propagate": False},
            "gunicorn.access": {"level": level, "handlers": handler, "propagate": False},
        },
    }

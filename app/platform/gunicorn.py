"""What both services' gunicorn configurations share (app/gunicorn_conf.py,
app/notifier/gunicorn_conf.py): the logger without gunicorn's own access line, and the bounded
flush of a worker's queued spans at its exit, the concurrency a worker reports."""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

TRACE_FLUSH_SECONDS = 2.0  # bounded, so a dead collector cannot hold a worker's exit


class AppAccessLogger(glogging.Logger):
    """Gunicorn's logger without gunicorn's access line.

    The app writes one structured access line per request (route, request id, trace id).
    Gunicorn writes its own as well whenever logging is configured through logconfig_dict, as
    here, and ``accesslog = None`` does not stop that: it would be a second line per request,
    and its formatting cost about a fifth of a small request's time in gunicorn.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def report_capacity(worker: Any, limit: int) -> None:
    """Gunicorn's ``post_worker_init``: tell the app how many requests this worker handles at once
    (the saturation gauge's denominator), which only the server knows."""
    telemetry = worker.wsgi.extensions.get("lookout.telemetry")
    if telemetry is not None and telemetry.metrics is not None:
        telemetry.metrics.capacity.set(limit)


def flush_telemetry(worker: Any) -> None:
    """Gunicorn's ``worker_exit``: flush queued spans within TRACE_FLUSH_SECONDS, which keeps the
    exit inside the graceful timeout."""
    app = getattr(worker, "wsgi", None)
    telemetry = app.extensions.get("lookout.telemetry") if app is not None else None
    if telemetry is not None:
        telemetry.shutdown(TRACE_FLUSH_SECONDS)

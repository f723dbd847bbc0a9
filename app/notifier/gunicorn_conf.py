"""Gunicorn settings of the notifier's web process (its API, probes and /metrics):

    gunicorn -c python:app.notifier.gunicorn_conf app.notifier.wsgi:app

Environment: PORT (default 8001), HOST (default 127.0.0.1; the image sets 0.0.0.0),
GUNICORN_WORKERS (default 1, the Kubernetes process model), GUNICORN_THREADS (default 4),
LOG_LEVEL. The notifier's settings are validated here first, so a bad one stops the server before
it forks, naming the setting. Lines are JSON on stdout, gunicorn's own included
(app/platform/logs.py), one access line per request (the app's); the workers flush their spans
as they exit (app/platform/gunicorn.py, shared with the users service).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.notifier.config import ConfigError, load_config
from app.platform.gunicorn import TRACE_FLUSH_SECONDS, AppAccessLogger, flush_telemetry, report_capacity
from app.platform.logs import logging_config


class Server(BaseModel):
    """The server's own settings, from the environment, checked like the users service's
    (app/gunicorn_conf.py): a bad one stops the master naming it, not with a traceback."""

    model_config = ConfigDict(frozen=True)

    HOST: str = "127.0.0.1"  # like the users service: loopback unless told (the image sets 0.0.0.0)
    PORT: int = Field(default=8001, ge=1, le=65535)
    GUNICORN_WORKERS: int = Field(default=1, ge=1, le=64)
    GUNICORN_THREADS: int = Field(default=4, ge=1, le=256)
    GUNICORN_GRACEFUL_TIMEOUT: int = Field(default=20, gt=TRACE_FLUSH_SECONDS)


try:
    _server = Server.model_validate({name: os.environ[name] for name in Server.model_fields
                                     if name in os.environ})
except ValidationError as exc:
    sys.exit("lookout-notifier: invalid server setting: " + "; ".join(
        f"{e['loc'][0] if e['loc'] else 'settings'}: {e['msg']}" for e in exc.errors()))
try:
    _settings = load_config()
except ConfigError as exc:
    sys.exit(f"lookout-notifier: {exc}")

bind = [f"{_server.HOST}:{_server.PORT}"]
if _settings.METRICS_PORT:
    bind.append(f"{_server.HOST}:{_settings.METRICS_PORT}")
workers = _server.GUNICORN_WORKERS
threads = _server.GUNICORN_THREADS
worker_class = "gthread"
graceful_timeout = _server.GUNICORN_GRACEFUL_TIMEOUT
logconfig_dict = logging_config(_settings.LOG_LEVEL)
# The app's own access line (app/platform/telemetry.py) carries the trace ids; gunicorn's would be
# a second line per request, which accesslog = None alone does not silence.
accesslog = None
logger_class = AppAccessLogger
# Gunicorn >= 25.1 opens a control socket under $HOME by default: that fails on a read-only root
# filesystem and collides between several servers on one machine.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """The saturation gauge's denominator: the requests a gthread worker serves at once."""
    report_capacity(worker, threads)


def worker_exit(server_: Any, worker: Any) -> None:
    """Flush queued spans, within a bound that keeps exit inside the graceful timeout."""
    flush_telemetry(worker)

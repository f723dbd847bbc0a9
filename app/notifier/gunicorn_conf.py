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

from app.notifier.config import ConfigError, load_config
from app.platform.gunicorn import AppAccessLogger, flush_telemetry
from app.platform.logs import logging_config

try:
    _settings = load_config()
except ConfigError as exc:
    sys.exit(f"lookout-notifier: {exc}")

# Like the users service: loopback unless told otherwise (the image sets HOST=0.0.0.0).
_host = os.environ.get("HOST", "127.0.0.1")
bind = [f"{_host}:{os.environ.get('PORT', '8001')}"]
if _settings.METRICS_PORT:
    bind.append(f"{_host}:{_settings.METRICS_PORT}")
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
logconfig_dict = logging_config(_settings.LOG_LEVEL)
# The app's own access line (app/platform/telemetry.py) carries the trace ids; gunicorn's would be
# a second line per request, which accesslog = None alone does not silence.
accesslog = None
logger_class = AppAccessLogger
# Gunicorn >= 25.1 opens a control socket under $HOME by default: that fails on a read-only root
# filesystem and collides between several servers on one machine.
control_socket_disable = True


def worker_exit(server_: Any, worker: Any) -> None:
    """Flush queued spans, within a bound that keeps exit inside the graceful timeout."""
    flush_telemetry(worker)

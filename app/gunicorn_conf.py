"""Gunicorn settings, read from the environment and validated before any worker starts.

Usage: ``gunicorn -c python:app.gunicorn_conf app.wsgi:app``

Environment variables (defaults in ``ServerConfig``):
    HOST, PORT                      listen address (HOST=0.0.0.0 in the container image)
    GUNICORN_WORKERS                worker processes (1: the Kubernetes model, app/README.md)
    GUNICORN_THREADS                threads per worker (gthread)
    GUNICORN_WORKER_CLASS           sync | gthread | gevent
    GUNICORN_TIMEOUT                worker heartbeat timeout, seconds
    GUNICORN_GRACEFUL_TIMEOUT       seconds from SIGTERM to exit: drain, then in-flight requests
    GUNICORN_DRAIN_SECONDS          after SIGTERM, seconds /readyz says 503 while the server still
                                    accepts and serves (gthread; app/gunicorn_worker.py)
    GUNICORN_KEEPALIVE              keep-alive seconds (above the load balancer's idle timeout)
    GUNICORN_MAX_REQUESTS           recycle a worker after this many requests (0 = never)
    GUNICORN_MAX_REQUESTS_JITTER    random extra requests, so workers do not recycle together
    GUNICORN_WORKER_TMP_DIR         heartbeat directory (a memory-backed dir is best)
    FORWARDED_ALLOW_IPS             proxies trusted for X-Forwarded-* headers
    GUNICORN_GC_FREEZE              true: each worker moves what it built at start-up out of the
                                    garbage collector's sight (gc.freeze) before serving
    PROMETHEUS_MULTIPROC_DIR        with several workers: where they share metrics (a fresh
                                    temporary directory when unset); ignored with one worker
The application's own settings (app.config) are checked here too, so a bad one stops the
master with a message naming it instead of every worker failing to boot. METRICS_PORT, an app
setting, adds a second listener that alone serves /metrics.
"""

from __future__ import annotations

import gc
import glob
import logging
import os
import sys
import tempfile
from typing import Any, Literal

from gunicorn.workers import gthread as _gthread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Shared with the notifier's configuration.
from app.platform.gunicorn import TRACE_FLUSH_SECONDS, AppAccessLogger, flush_telemetry, report_capacity

# How long a stopping gthread worker keeps idle kept-alive connections (gunicorn >= 27).
KEEPALIVE_LINGER_SECONDS = float(getattr(_gthread, "STOP_KEEPALIVE_LINGER", 0))


class ServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    HOST: str = "127.0.0.1"
    PORT: int = Field(default=8000, ge=1, le=65535)
    GUNICORN_WORKERS: int = Field(default=1, ge=1, le=64)
    GUNICORN_THREADS: int = Field(default=8, ge=1, le=256)
    GUNICORN_WORKER_CLASS: Literal["sync", "gthread", "gevent"] = "gthread"
    GUNICORN_TIMEOUT: int = Field(default=30, ge=1)
    GUNICORN_GRACEFUL_TIMEOUT: int = Field(default=20, ge=1)
    GUNICORN_DRAIN_SECONDS: float = Field(default=5.0, ge=0)
    GUNICORN_KEEPALIVE: int = Field(default=75, ge=0)
    GUNICORN_MAX_REQUESTS: int = Field(default=0, ge=0)
    GUNICORN_MAX_REQUESTS_JITTER: int = Field(default=0, ge=0)
    # The heartbeat file, kept in memory as gunicorn's docs advise; it holds no data.
    GUNICORN_WORKER_TMP_DIR: str | None = (
        "/dev/shm" if os.path.isdir("/dev/shm") else None)  # noqa: S108  # nosec B108 # heartbeat
    FORWARDED_ALLOW_IPS: str = "127.0.0.1"
    GUNICORN_GC_FREEZE: bool = True

    @model_validator(mode="after")
    def _drain_fits(self) -> ServerConfig:
        """The master kills what is left at GUNICORN_GRACEFUL_TIMEOUT. Before that the worker
        drains, then keeps idle kept-alive connections for gunicorn's linger, finishes its
        in-flight requests and flushes traces (bounded): the fixed parts must leave room."""
        fixed = self.GUNICORN_DRAIN_SECONDS + KEEPALIVE_LINGER_SECONDS + TRACE_FLUSH_SECONDS
        if fixed >= self.GUNICORN_GRACEFUL_TIMEOUT:
            raise ValueError(
                f"GUNICORN_GRACEFUL_TIMEOUT must exceed GUNICORN_DRAIN_SECONDS + "
                f"{KEEPALIVE_LINGER_SECONDS + TRACE_FLUSH_SECONDS:g} s (keep-alive linger and trace "
                f"flush), with room for in-flight requests")
        return self


def _metrics_dir(workers: int) -> str | None:
    """Choose the metrics process model before anything imports prometheus_client.

    prometheus_client picks single- or multi-process mode when first imported, from
    PROMETHEUS_MULTIPROC_DIR, and workers inherit the master's environment.
    """
    if workers == 1:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: exemplars, process metrics
        return None
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="lookout-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _load() -> tuple[ServerConfig, Any]:
    env = {name: os.environ[name] for name in ServerConfig.model_fields if name in os.environ}
    try:
        server = ServerConfig.model_validate(env)
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0] if e['loc'] else 'settings'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        sys.exit(f"lookout: invalid server setting: {problems}")
    _metrics_dir(server.GUNICORN_WORKERS)
    from app.config import ConfigError, load_config

    try:
        return server, load_config()
    except ConfigError as exc:
        sys.exit(f"lookout: {exc}")


server, app_config = _load()

bind = [f"{server.HOST}:{server.PORT}"]
if app_config.METRICS_PORT:
    bind.append(f"{server.HOST}:{app_config.METRICS_PORT}")
workers = server.GUNICORN_WORKERS
worker_class: Any = server.GUNICORN_WORKER_CLASS
if worker_class == "gthread":
    from app.gunicorn_worker import LookoutWorker

    LookoutWorker.drain_seconds = server.GUNICORN_DRAIN_SECONDS
    worker_class = LookoutWorker
# The longest request line gunicorn allows (its default is 4094); longer ones get a 414 problem.
limit_request_line = 8190
threads = server.GUNICORN_THREADS
timeout = server.GUNICORN_TIMEOUT
graceful_timeout = server.GUNICORN_GRACEFUL_TIMEOUT
keepalive = server.GUNICORN_KEEPALIVE
max_requests = server.GUNICORN_MAX_REQUESTS
max_requests_jitter = server.GUNICORN_MAX_REQUESTS_JITTER
worker_tmp_dir = server.GUNICORN_WORKER_TMP_DIR
forwarded_allow_ips = server.FORWARDED_ALLOW_IPS
# The app, and with it the TracerProvider and its export thread, is built in each worker
# after the fork; preloading would share them across the fork.
preload_app = False
# Gunicorn >= 25.1 opens a control socket under $HOME by default: that fails on a read-only
# root filesystem and collides between several servers on one machine.
control_socket_disable = True
accesslog = None  # and AppAccessLogger, since this alone does not silence gunicorn's line
logger_class = AppAccessLogger


class WithoutConfigDump(logging.Filter):
    """Drop gunicorn's start-up listing of all its settings.

    At DEBUG (development's level) gunicorn opens with one 6 KB record of every setting, most of
    them defaults, before the line that says where it serves. ``--print-config`` shows the same
    listing on demand: ``gunicorn -c python:app.gunicorn_conf --print-config app.wsgi:app``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Current configuration:")


def _logconfig() -> dict[str, Any]:
    from app.platform.logs import lean_records, logging_config

    lean_records()
    config = logging_config(app_config.LOG_LEVEL)
    config["filters"]["without_config_dump"] = {"()": WithoutConfigDump}
    config["loggers"]["gunicorn.error"]["filters"] = ["without_config_dump"]
    return config


logconfig_dict = _logconfig()


def when_ready(server_: Any) -> None:
    """Say where the service answers and how to stop it, once the listeners are bound."""
    url = f"http://{server.HOST}:{server.PORT}"
    metrics = f"; /metrics on port {app_config.METRICS_PORT}" if app_config.METRICS_PORT else ""
    server_.log.info("Lookout serving on %s (Ctrl-C stops); API docs at %s/docs%s", url, url, metrics)


def on_starting(server_: Any) -> None:
    """Empty the multiprocess directory: files left by an earlier run would be counted again."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)


def post_worker_init(worker: Any) -> None:
    """Tell the app how many requests this worker handles at once (the saturation gauge), then
    freeze the start-up heap (GUNICORN_GC_FREEZE)."""
    report_capacity(worker, {"gthread": threads, "gevent": worker.cfg.worker_connections}.get(
        server.GUNICORN_WORKER_CLASS, 1))
    if server.GUNICORN_GC_FREEZE:
        freeze_heap()


def freeze_heap() -> int:
    """Move every object alive now into the collector's permanent generation; return how many.

    The app, its libraries and their caches (SQLAlchemy, marshmallow, OpenTelemetry) are a
    heap of about 130,000 objects that lives as long as the worker, and every full collection
    walks all of it while holding the GIL, every request in flight waiting (tens of ms).
    Requests that allocate a lot (ORM rows, serialised pages) bring one every thousand requests
    or so: ``make bench`` measures the users endpoint with and without this. Frozen objects are
    never collected, so garbage is collected first; what start-up keeps is kept for the
    worker's life anyway. This is the standard library's own tool for the purpose
    (``gc.freeze``), run in the worker because the app is built there.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logging.getLogger("gunicorn.error").info(
        "gc.freeze: %d start-up objects moved to the permanent generation", frozen)
    return frozen


def on_reload(arbiter: Any) -> None:
    """Tell the workers about to be replaced that this is a reload: they stop without draining."""
    from app.gunicorn_worker import mark_reload

    mark_reload(arbiter.worker_age)


def worker_exit(server_: Any, worker: Any) -> None:
    """Flush queued spans, within a bound that keeps exit inside the graceful timeout."""
    flush_telemetry(worker)


def child_exit(server_: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess merge."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # lazily, after the directory is chosen

        multiprocess.mark_process_dead(worker.pid)

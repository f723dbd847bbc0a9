"""``flask --app app.notifier:create_app notifier consume``: the consumer process.

It logs JSON lines on stdout (app/platform/logs.py), serves its metrics on
CONSUMER_METRICS_ADDRESS:CONSUMER_METRICS_PORT, and stops cleanly on SIGTERM or SIGINT: the
delivery in hand is finished and settled, the rest are left unacknowledged for the next consumer.
"""

from __future__ import annotations

import logging
import logging.config
import signal
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup

notifier_cli = AppGroup("notifier", help="The notifier's processes.")
log = logging.getLogger(__name__)


@notifier_cli.command("consume")
def consume() -> None:
    """Consume the user events and send the emails, until SIGTERM."""
    from ..platform.logs import logging_config
    from ..platform.telemetry import telemetry_of
    from .consumer import Consumer
    from .handling import Handler

    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    logging.config.dictConfig(logging_config(app.config["LOG_LEVEL"]))
    telemetry = telemetry_of(app)
    metrics: Any = telemetry.metrics if telemetry is not None else None
    provider = telemetry.tracing.provider if telemetry is not None and telemetry.tracing is not None else None
    if metrics is not None:
        serve_metrics(app, metrics.registry)
    consumer = Consumer(app, Handler(app, metrics, provider))

    def stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        consumer.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.run()
    finally:
        if telemetry is not None:
            telemetry.shutdown(5.0)


def serve_metrics(app: Flask, registry: Any) -> Any:
    """Serve ``registry`` on CONSUMER_METRICS_ADDRESS:CONSUMER_METRICS_PORT in a daemon thread; the
    listening server, or None when the port is 0."""
    port, address = app.config["CONSUMER_METRICS_PORT"], app.config["CONSUMER_METRICS_ADDRESS"]
    if not port:
        return None
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=address, registry=registry)
    click.echo(f"metrics on {address}:{port}/metrics", err=True)
    return server


def init_app(app: Flask) -> None:
    app.cli.add_command(notifier_cli)

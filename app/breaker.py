"""Fail fast while the database is down, so an outage cannot use up the worker's threads.

Without this, every API request during an outage waits for its bounded timeouts (connect plus
read, several seconds) before its 503. With a few such requests per thread, the thread pool is
full of waiting requests and even /livez queues behind them: the liveness probe times out and
Kubernetes restarts pods that were healthy, which cures nothing.

A circuit breaker: after a database failure (the 503 handler reports it) API requests get their
503 at once for DATABASE_FAILFAST_SECONDS, except one trial request per interval that is let
through to find out whether the database is back. Any statement that succeeds (a trial, or the
/readyz check on its own thread) closes the breaker.

Written here rather than taken from pybreaker: pybreaker counts failures of a wrapped call,
while here the failure is seen by the error handler, the success by an engine event, and the
refusal must happen before the view runs; the state machine is a few lines.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app, request
from sqlalchemy import event

KEY = "lookout.breaker"
GUARDED_BLUEPRINTS = frozenset({"api", "auth"})  # the routes that need the database
log = logging.getLogger(__name__)


class DatabaseBreaker:
    """Open after a failure; one trial per ``interval`` while open; closed by any success."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._next_trial = 0.0  # 0: closed

    @property
    def is_open(self) -> bool:
        return self._next_trial != 0.0

    def allow(self) -> bool:
        """Whether a request may use the database now."""
        if not self.is_open:  # the common case takes no lock
            return True
        with self._lock:
            now = time.monotonic()
            if self._next_trial and now >= self._next_trial:
                self._next_trial = now + self.interval  # this request is the trial
                return True
            return not self._next_trial

    def failed(self) -> None:
        with self._lock:
            if not self._next_trial:
                log.warning("database failing: API requests get 503 at once, one trial every %ss",
                            self.interval)
            self._next_trial = time.monotonic() + self.interval

    def succeeded(self) -> None:
        if self.is_open:
            with self._lock:
                if self._next_trial:
                    log.info("database answering again")
                self._next_trial = 0.0


def init_app(app: Flask) -> None:
    """Attach a breaker to ``app`` (needs the database extension initialised)."""
    from .extensions import db

    seconds = app.config["DATABASE_FAILFAST_SECONDS"]
    if not seconds:
        return
    breaker = app.extensions[KEY] = DatabaseBreaker(seconds)
    with app.app_context():
        for engine in db.engines.values():
            event.listen(engine, "after_cursor_execute", lambda *args: breaker.succeeded())

    @app.before_request
    def _fail_fast() -> None:
        if request.blueprint in GUARDED_BLUEPRINTS and not breaker.allow():
            raise DatabaseDown()


class DatabaseDown(Exception):
    """Refused by the open breaker: answered like any database outage (503, Retry-After)."""


def report_failure() -> None:
    """Called by the 503 handler for every database failure."""
    breaker: DatabaseBreaker | None = current_app.extensions.get(KEY)
    if breaker is not None:
        breaker.failed()

"""Rate limits (Flask-Limiter): one limiter per app, built from its settings, on which each
blueprint declares its own limits when it is registered.

Settings: RATE_LIMIT_ENABLED, RATE_LIMIT_STORAGE_URL, RATE_LIMIT_STORAGE_TIMEOUT,
RATE_LIMIT_KEY_PREFIX, RATE_LIMIT_LOGIN, RATE_LIMIT_LOGIN_FAILURES,
RATE_LIMIT_LOGIN_FAILURES_ACCOUNT, RATE_LIMIT_READS, RATE_LIMIT_WRITES.

The limits and what each counts are in app/auth/limits.py (the token endpoint) and
app/api/limits.py (the API's reads and writes): every one is on a write method (WRITE_METHODS)
or on a blueprint that asked for its reads to be limited (``limit_reads``).
A refused request is answered here: 429 problem with Retry-After, counted in
``lookout_rate_limited_total``.

Counts live in Redis when RATE_LIMIT_STORAGE_URL is a redis:// URL (shared by every process
and pod), in process memory otherwise (each process counts alone). When Redis fails, each
process falls back to its own memory with the same limits, logs it, keeps answering, and
returns to Redis when a periodic check (exponential back-off) finds it again. Every Redis call
is bounded by RATE_LIMIT_STORAGE_TIMEOUT, so a black-holed Redis costs a request at most that.
``lookout_rate_limit_fallback`` is 1 while a process counts alone (the LookoutRateLimitFallback
alert watches it); it changes on the requests the limiter sees (writes, API reads).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import flask_limiter
from flask import Flask, Response, current_app, request
from flask.sansio.app import App
from flask_limiter import Limiter, RateLimitExceeded

from .errors import problem
from .telemetry import count_rate_limited, set_rate_limit_fallback

KEY = "lookout.limiter"
READS_KEY = "lookout.limited_reads"
WRITE_METHODS = ["POST", "PATCH", "DELETE"]


def client_address() -> str:
    """The key of a limit counted per client address (the default key)."""
    return f"address:{request.remote_addr or 'unknown'}"


def init_app(app: Flask) -> Limiter:
    """Attach a limiter to ``app``, built from its settings, and answer its refusals.

    One limiter per app, so tests can build many apps with different settings in one process:
    Flask-Limiter keeps the storage, key prefix, strategy and fallback state on the Limiter
    object, so one module-level Limiter would make every app count with the settings of one.
    """
    config = app.config
    storage_options = {}
    if config["RATE_LIMIT_STORAGE_URL"].startswith("redis"):
        timeout = config["RATE_LIMIT_STORAGE_TIMEOUT"]
        storage_options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    limiter = Limiter(
        client_address,
        enabled=config["RATE_LIMIT_ENABLED"],
        storage_uri=config["RATE_LIMIT_STORAGE_URL"],
        storage_options=storage_options,
        key_prefix=config["RATE_LIMIT_KEY_PREFIX"],  # several services may share one Redis
        in_memory_fallback_enabled=True,
        # A storage error that slips past the fallback (after the response is built) is logged
        # and the request is answered, rather than turning into a 500.
        swallow_errors=True,
        headers_enabled=False,  # Retry-After is set on the 429 problem only (_rate_limited)
        strategy="moving-window",
    )
    limiter.init_app(app)
    app.extensions[READS_KEY] = set()
    _check_limited_only(app, limiter)
    _report_fallback(app, limiter)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    app.extensions[KEY] = limiter
    return limiter


def limit_reads(app: App, blueprint: str) -> None:
    """Let the limiter see the reads of ``blueprint`` too (it declares limits on them)."""
    app.extensions.setdefault(READS_KEY, set()).add(blueprint)


def is_limited() -> bool:
    """Whether the limiter looks at this request: a write, or a read of a blueprint whose reads
    are limited. Other requests (/, health, docs, /metrics) skip it."""
    return request.method in WRITE_METHODS or request.blueprint in current_app.extensions[READS_KEY]


def limiter_of(app: App) -> Limiter:
    """The limiter ``init_app`` attached to ``app``; a blueprint declares its limits on it in a
    ``record_once`` callback, which Flask calls when the blueprint is registered on the app."""
    limiter: Limiter = app.extensions[KEY]
    return limiter


def _rate_limited(exc: RateLimitExceeded) -> Response:
    count_rate_limited(which_limit(exc))
    seconds = retry_after()
    return problem(429, f"Too many requests; retry in {seconds} s.", {"Retry-After": str(seconds)})


def _report_fallback(app: Flask, limiter: Limiter) -> None:
    """After each request the limiter sees, publish whether this process counts alone (its store failed).

    While Flask-Limiter counts in its in-memory fallback, the strategy it uses
    (``Limiter.limiter``) works on that memory instead of the configured ``Limiter.storage``.
    tests/test_ratelimit.py cuts the store and checks the metric follows.
    """
    if not limiter.enabled:
        return

    @app.teardown_request
    def _fallback(exc: BaseException | None) -> None:
        if is_limited():
            set_rate_limit_fallback(limiter.limiter.storage is not limiter.storage)


def _check_limited_only(app: Flask, limiter: Limiter) -> None:
    """Run the limiter's app-wide request hooks only for the requests it limits (``is_limited``).

    Flask-Limiter resolves and evaluates the limits of every request in its before_request
    hook and reads its per-request context in its after_request and teardown hooks. Its public
    way to skip a request, a ``request_filter``, still runs most of that: 0.24 million
    instructions per request, 18% of an in-process ``GET /`` and 2.2% of the users endpoint
    (valgrind, Flask-Limiter 4.1.1; with no filter at all, 35% and 7%). Every limit here is on
    a write method or on the reads of a blueprint that called ``limit_reads``, so other reads
    (/, health, docs, /metrics) skip the three hooks (tests/test_ratelimit.py checks both sides).

    This rewires Flask's hook lists around hooks Flask-Limiter registers in ``init_app``; a
    release that registers them differently stops the app at start with a message naming the
    version, rather than leaving writes unlimited.
    """
    if not limiter.enabled:  # RATE_LIMIT_ENABLED=false: Flask-Limiter added no hooks
        return

    def owned(hook: Any) -> bool:  # bound methods of the limiter, or partials over it
        return getattr(hook, "__self__", None) is limiter or (
            isinstance(hook, partial) and hook.args[:1] == (limiter,))

    def before(hook: Callable[[], None]) -> Callable[[], None]:
        def limited_only() -> None:
            if is_limited():
                hook()
        return limited_only

    def after(hook: Callable[[Response], Response]) -> Callable[[Response], Response]:
        def limited_only(response: Response) -> Response:
            return hook(response) if is_limited() else response
        return limited_only

    def teardown(hook: Callable[[BaseException | None], None]) -> Callable[[BaseException | None], None]:
        def limited_only(exc: BaseException | None) -> None:
            if is_limited():
                hook(exc)
        return limited_only

    for name, guard in (("before_request_funcs", before), ("after_request_funcs", after),
                        ("teardown_request_funcs", teardown)):
        hooks: list[Any] = getattr(app, name)[None]
        positions = [i for i, hook in enumerate(hooks) if owned(hook)]
        if len(positions) != 1:  # no app at all rather than limits silently skipped
            raise RuntimeError(
                f"Flask-Limiter {flask_limiter.__version__} registers {len(positions)} request hooks "
                f"of its own in app.{name}, where app/ratelimit.py (_check_limited_only) expects 1: "
                "check its Limiter.init_app, or drop the trim and let every request run the hooks")
        hooks[positions[0]] = guard(hooks[positions[0]])


def which_limit(exc: RateLimitExceeded) -> str:
    """The metric label of the limit that was hit: ``login``, ``login-failures``,
    ``login-failures-account``, ``reads`` or ``writes``."""
    scope = getattr(exc.limit, "scope", None)
    return scope if isinstance(scope, str) else "other"


def retry_after() -> int:
    """Whole seconds until the breached limit lets a request through again (at least 1)."""
    limiter: Limiter | None = current_app.extensions.get(KEY)
    current = limiter.current_limit if limiter is not None else None
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))

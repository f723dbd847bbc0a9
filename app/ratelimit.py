"""Rate limits (Flask-Limiter) on the token endpoint and on writes.

Settings: RATE_LIMIT_ENABLED, RATE_LIMIT_STORAGE_URL, RATE_LIMIT_STORAGE_TIMEOUT,
RATE_LIMIT_KEY_PREFIX, RATE_LIMIT_LOGIN, RATE_LIMIT_LOGIN_FAILURES, RATE_LIMIT_WRITES.

- ``POST /api/v1/auth/token``: RATE_LIMIT_LOGIN per client address (every attempt), and
  RATE_LIMIT_LOGIN_FAILURES per account email (refused attempts only, so guessing one account's
  password from many addresses is slowed while its owner's successful logins cost nothing).
- ``POST``, ``PATCH``, ``DELETE`` under ``/api/v1``: RATE_LIMIT_WRITES per user (the token's
  subject), or per client address for a request without a valid token.
- ``PATCH`` under ``/api/v1``: RATE_LIMIT_LOGIN_FAILURES per user, counting the requests refused
  for a wrong ``current_password`` only: a stolen token buys no faster password guessing than
  the token endpoint allows. Spent, it refuses the user's PATCH requests until it refills.

Counts live in Redis when RATE_LIMIT_STORAGE_URL is a redis:// URL (shared by every process
and pod), in process memory otherwise (each process counts alone). When Redis fails, each
process falls back to its own memory with the same limits, logs it, keeps answering, and
returns to Redis when a periodic check (exponential back-off) finds it again. Every Redis call
is bounded by RATE_LIMIT_STORAGE_TIMEOUT, so a black-holed Redis costs a request at most that.
``lookout_rate_limit_fallback`` is 1 while a process counts alone (the LookoutRateLimitFallback
alert watches it); it changes on writes, the only requests the limiter sees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from werkzeug.exceptions import HTTPException

from .auth.tokens import request_claims
from .schemas import normalise_email

KEY = "lookout.limiter"
WRITE_METHODS = ["POST", "PATCH", "DELETE"]


def client_address() -> str:
    return f"address:{request.remote_addr or 'unknown'}"


def account() -> str:
    """The email the token request is for (normalised as at login), else the address."""
    try:
        body = request.get_json(silent=True)
    except (RecursionError, HTTPException):  # too deep, too large: refused later, with its status
        body = None
    email = body.get("email") if isinstance(body, dict) else None
    if isinstance(email, str) and email.strip():
        return f"account:{normalise_email(email)}"
    return client_address()


def principal() -> str:
    """The user a write is made by (a valid token's subject), else the client address."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    claims = request_claims(token) if scheme.lower() == "bearer" and token else None
    return f"user:{claims['sub']}" if claims else client_address()


def refused(response: Response) -> bool:
    return response.status_code == 401


def refuse_password() -> None:
    """Mark this request as refused for a wrong password (the view then answers 403)."""
    g.password_refused = True


def password_refused(response: Response) -> bool:
    return response.status_code == 403 and g.get("password_refused", False)


def init_app(app: Flask) -> Limiter | None:
    """Attach a limiter to ``app`` with the configured limits (one per app, so tests can build
    many apps with different settings in one process)."""
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
        headers_enabled=False,  # Retry-After is set on the 429 problem only (app/errors.py)
        strategy="moving-window",
    )
    from . import api, auth

    # Shared limits: one budget per key across every route of the blueprint, named by scope.
    limiter.shared_limit(config["RATE_LIMIT_LOGIN"], "login", methods=["POST"])(auth.bp)
    limiter.shared_limit(config["RATE_LIMIT_LOGIN_FAILURES"], "login-failures", key_func=account,
                         methods=["POST"], deduct_when=refused)(auth.bp)
    limiter.shared_limit(config["RATE_LIMIT_WRITES"], "writes", key_func=principal,
                         methods=WRITE_METHODS)(api.bp)
    # The same scope as the token endpoint's refused attempts, keyed by user, not by email.
    limiter.shared_limit(config["RATE_LIMIT_LOGIN_FAILURES"], "login-failures", key_func=principal,
                         methods=["PATCH"], deduct_when=password_refused)(api.bp)
    limiter.init_app(app)
    _check_writes_only(app, limiter)
    _report_fallback(app, limiter)
    app.extensions[KEY] = limiter
    return limiter


def _report_fallback(app: Flask, limiter: Limiter) -> None:
    """After each write, publish whether this process counts alone (its store failed).

    Flask-Limiter (4.1) has no public flag or hook for its in-memory fallback; it logs the switch
    and keeps the state in ``_storage_dead``, read here. Checked at start, so a release that
    renames it stops the app rather than leaving the metric at 0 (tests/test_ratelimit.py).
    """
    if not limiter.enabled:
        return
    if not isinstance(getattr(limiter, "_storage_dead", None), bool):
        raise RuntimeError("Flask-Limiter no longer keeps _storage_dead; see app/ratelimit.py")
    from .telemetry import set_rate_limit_fallback

    @app.teardown_request
    def _fallback(exc: BaseException | None) -> None:
        if request.method in WRITE_METHODS:
            set_rate_limit_fallback(limiter._storage_dead)


def _check_writes_only(app: Flask, limiter: Limiter) -> None:
    """Run the limiter's app-wide request hooks for write methods only.

    Flask-Limiter resolves and evaluates the limits of every request in its before_request
    hook and reads its per-request context in its after_request and teardown hooks; a request
    its ``request_filter`` exempts still pays for all of it: 7% of an in-process ``GET /``.
    Every limit here is on a write method, so reads skip the three hooks. A limit on a read
    method would have to change this (tests/test_ratelimit.py checks both sides).
    """
    if not limiter.enabled:  # RATE_LIMIT_ENABLED=false: Flask-Limiter added no hooks
        return

    def owned(hook: Any) -> bool:  # bound methods of the limiter, or partials over it
        return getattr(hook, "__self__", None) is limiter or (
            isinstance(hook, partial) and hook.args[:1] == (limiter,))

    def before(hook: Callable[[], None]) -> Callable[[], None]:
        def writes_only() -> None:
            if request.method in WRITE_METHODS:
                hook()
        return writes_only

    def after(hook: Callable[[Response], Response]) -> Callable[[Response], Response]:
        def writes_only(response: Response) -> Response:
            return hook(response) if request.method in WRITE_METHODS else response
        return writes_only

    def teardown(hook: Callable[[BaseException | None], None]) -> Callable[[BaseException | None], None]:
        def writes_only(exc: BaseException | None) -> None:
            if request.method in WRITE_METHODS:
                hook(exc)
        return writes_only

    for registry, guard in ((app.before_request_funcs, before), (app.after_request_funcs, after),
                            (app.teardown_request_funcs, teardown)):
        hooks: list[Any] = registry[None]
        positions = [i for i, hook in enumerate(hooks) if owned(hook)]
        if len(positions) != 1:  # no app at all rather than limits silently skipped
            raise RuntimeError("Flask-Limiter's request hooks are not where app/ratelimit.py expects them")
        hooks[positions[0]] = guard(hooks[positions[0]])


def which_limit(exc: RateLimitExceeded) -> str:
    """The metric label of the limit that was hit: ``login``, ``login-failures`` or ``writes``."""
    scope = getattr(exc.limit, "scope", None)
    return scope if isinstance(scope, str) else "other"


def retry_after() -> int:
    """Whole seconds until the breached limit lets a request through again (at least 1)."""
    limiter: Limiter | None = current_app.extensions.get(KEY)
    current = limiter.current_limit if limiter is not None else None
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))

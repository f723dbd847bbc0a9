"""The token endpoint's rate limits, declared on the app's limiter when the blueprint is registered.

``POST /api/v1/auth/token``, each limit checked before the password is:

- RATE_LIMIT_LOGIN per client address (every attempt);
- RATE_LIMIT_LOGIN_FAILURES per account email and client address (refused attempts only): a
  guesser at one address gets that many tries a window, while the owner's correct password
  from their own address still gets in (a per-account budget alone let anyone lock anyone out);
- RATE_LIMIT_LOGIN_FAILURES_ACCOUNT per account email, from every address together (refused
  attempts only): a much higher ceiling that bounds guessing from many addresses at once. Only
  reaching it, which takes many addresses, refuses the owner too.

Successful logins cost nothing in either failure budget.
"""

from __future__ import annotations

import re
from typing import cast

from flask import Blueprint, Response, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException

from ..ratelimit import client_address, limiter_of
from ..schemas import normalise_email

LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # the body is refused; the key must still encode


def account() -> str:
    """The email the token request is for (normalised as at login), else the address."""
    try:
        body = request.get_json(silent=True)
    except (RecursionError, HTTPException):  # too deep, too large: refused later, with its status
        body = None
    email = body.get("email") if isinstance(body, dict) else None
    if isinstance(email, str) and email.strip() and not LONE_SURROGATE.search(email):  # no store key
        return f"account:{normalise_email(email)}"
    return client_address()


def account_at_address() -> str:
    """The account the token request is for, at the client's address."""
    key = account()
    return f"{key}|{client_address()}" if key.startswith("account:") else key


def refused(response: Response) -> bool:
    return response.status_code == 401


def declare_limits(state: BlueprintSetupState) -> None:
    """Put the token endpoint's limits on the limiter of the app the blueprint is registered on."""
    limiter, config = limiter_of(state.app), state.app.config
    blueprint = cast(Blueprint, state.blueprint)  # typed as Flask's sans-IO base class
    # Shared limits: one budget per key across every route of the blueprint, named by scope.
    limiter.shared_limit(config["RATE_LIMIT_LOGIN"], "login", methods=["POST"])(blueprint)
    limiter.shared_limit(config["RATE_LIMIT_LOGIN_FAILURES"], "login-failures",
                         key_func=account_at_address, methods=["POST"], deduct_when=refused)(blueprint)
    limiter.shared_limit(config["RATE_LIMIT_LOGIN_FAILURES_ACCOUNT"], "login-failures-account",
                         key_func=account, methods=["POST"], deduct_when=refused)(blueprint)

"""The API's rate limits, declared on the app's limiter when the blueprint is registered.

- ``GET``: RATE_LIMIT_READS per user (the token's subject), or per client address for a
  request without a valid token, so one token cannot page through every profile quickly.

- ``POST``, ``PATCH``, ``DELETE``: RATE_LIMIT_WRITES per user (the token's subject), or per
  client address for a request without a valid token.
- ``PATCH``: RATE_LIMIT_LOGIN_FAILURES per user, counting the requests refused for a wrong
  ``current_password`` only: a stolen token buys no faster password guessing than the token
  endpoint allows. Spent, it refuses the user's PATCH requests until it refills.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Response, g, request
from flask.blueprints import BlueprintSetupState

from ..auth.tokens import request_claims
from ..ratelimit import WRITE_METHODS, client_address, limit_reads, limiter_of


def principal() -> str:
    """The user a request is made by (a valid token's subject), else the client address."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    claims = request_claims(token) if scheme.lower() == "bearer" and token else None
    return f"user:{claims['sub']}" if claims else client_address()


def refuse_password() -> None:
    """Mark this request as refused for a wrong password (the view then answers 403)."""
    g.password_refused = True


def password_refused(response: Response) -> bool:
    return response.status_code == 403 and g.get("password_refused", False)


def declare_limits(state: BlueprintSetupState) -> None:
    """Put the API's limits on the limiter of the app the blueprint is registered on."""
    limiter, config = limiter_of(state.app), state.app.config
    blueprint = cast(Blueprint, state.blueprint)  # typed as Flask's sans-IO base class
    limiter.shared_limit(config["RATE_LIMIT_WRITES"], "writes", key_func=principal,
                         methods=WRITE_METHODS)(blueprint)
    limiter.shared_limit(config["RATE_LIMIT_READS"], "reads", key_func=principal, methods=["GET"])(blueprint)
    limit_reads(state.app, blueprint.name)
    # The same scope as the token endpoint's refused attempts, keyed by user, not by email.
    limiter.shared_limit(config["RATE_LIMIT_LOGIN_FAILURES"], "login-failures", key_func=principal,
                         methods=["PATCH"], deduct_when=password_refused)(blueprint)

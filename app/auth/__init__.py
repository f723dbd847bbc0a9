"""Authentication: the token endpoint and the bearer-token guard used by other blueprints."""

from __future__ import annotations

import re

from apiflask import APIBlueprint, HTTPError, HTTPTokenAuth, abort
from flask import Response, current_app
from sqlalchemy import select

from ..extensions import db
from ..guards import require_json_body
from ..models import Role, User
from ..records import UserRecord, read_user
from ..schemas import TokenIn, TokenOut, normalise_email
from ..telemetry import count_auth_failure
from .limits import declare_limits
from .passwords import verify_password
from .tokens import issue_token, request_claims

SUBJECT = re.compile("[0-9]{1,10}")  # a user id
bp = APIBlueprint("auth", __name__, url_prefix="/api/v1/auth", tag="Auth")
bp.before_request(require_json_body)
bp.record_once(declare_limits)
auth = HTTPTokenAuth(scheme="Bearer", realm="lookout", description="JWT from POST /api/v1/auth/token")


@auth.verify_token
def _verify(token: str) -> UserRecord | None:
    claims = request_claims(token) if token else None
    # ASCII digits only: str.isdigit() also takes "\u00b2", which int() refuses (a 500).
    if claims is None or not isinstance(subject := claims["sub"], str) or not SUBJECT.fullmatch(subject):
        return None
    # The user is re-read on every request (its columns, from the read cache when there is one,
    # which every write clears after its commit): a deleted user's token stops working at once,
    # and a role change takes effect without waiting for the token to expire.
    user = read_user(int(subject))
    # SQLite reuses the id of a deleted last row: a token issued before its user existed
    # belongs to the deleted one. iat is whole seconds and clocks of pods differ a little, so
    # the comparison allows the token leeway.
    leeway = current_app.config["JWT_LEEWAY_SECONDS"]
    if user is None or claims["iat"] + leeway < int(user.created_at.timestamp()):
        return None
    # A password change raises the user's token version: tokens issued before it (and tokens
    # from before versions existed, which count as 0) stop working.
    if claims.get("ver", 0) != user.token_version:
        return None
    return user


@auth.error_processor
def _refused(error: HTTPError) -> Response:
    count_auth_failure("token" if error.status_code == 401 else "forbidden")
    return current_app.error_callback(error)  # type: ignore[attr-defined]


@auth.get_user_roles
def _roles(user: UserRecord) -> list[str]:
    return [user.role.value]


def current_user() -> UserRecord:
    """The caller of an ``auth_required`` view: their record as the token check read it."""
    user: UserRecord | None = auth.current_user
    if user is None:  # not an assert: those vanish under python -O
        raise RuntimeError("current_user() called outside an auth_required view")
    return user


@bp.post("/token")
@bp.input(TokenIn, arg_name="credentials")
@bp.output(TokenOut)
@bp.doc(summary="Exchange email and password for an access token",
        responses={401: "Wrong email or password"})
def create_token(credentials: dict[str, str]) -> dict[str, object]:
    user = db.session.scalar(select(User).where(User.email == normalise_email(credentials["email"])))
    ok, new_hash = verify_password(user.password_hash if user else None, credentials["password"])
    if not ok or user is None:
        count_auth_failure("credentials")
        current_app.logger.info("token refused: wrong email or password")
        abort(401, "Wrong email or password.", headers={"WWW-Authenticate": 'Bearer realm="lookout"'})
    if new_hash:
        user.password_hash = new_hash
        db.session.commit()
    token, ttl = issue_token(user.id, Role(user.role).value, user.token_version)
    return {"access_token": token, "token_type": auth.scheme, "expires_in": ttl}

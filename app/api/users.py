"""The users resource: create, list, get, partial update, delete; who may do what is in policy.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apiflask import APIBlueprint, abort
from flask import Response
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError

from ..auth import auth, current_user
from ..auth.passwords import hash_password, verify_password
from ..extensions import db
from ..guards import require_json_body
from ..models import MAX_ID, Role, User
from ..outbox import record_event
from ..records import COLUMNS, USERS, forget_users, full_view, read_user
from ..schemas import PageQuery, UserFull, UserIn, UserPatch, UsersPage, normalise_email
from ..telemetry import count_auth_failure, count_user_created
from .limits import declare_limits, refuse_password
from .policy import Operation, allow
from .responses import json_response, link, page_links, user_response

bp = APIBlueprint("api", __name__, url_prefix="/api/v1", tag="Users")
bp.before_request(require_json_body)
bp.record_once(declare_limits)

DUPLICATE_EMAIL = "A user with this email already exists."


LAST_ADMIN = ("That is the last admin: make another user an admin first, or nobody could manage "
              "roles or delete users.")


def lock_admins() -> None:
    """Lock the admin rows until the transaction ends (PostgreSQL, MySQL), so requests that may remove
    an admin run one after another and each counts what the one before left. SQLite ignores
    FOR UPDATE; there the write a caller flushes next takes the database's write lock, which
    makes the count after it exact just the same."""
    db.session.execute(select(User.id).where(User.role == Role.ADMIN).order_by(User.id).with_for_update())


def refuse_if_no_admin_left() -> None:
    """After the change is flushed: 409, and the change rolled back, if no admin is left."""
    db.session.flush()
    admins = db.session.scalar(select(func.count()).select_from(User).where(User.role == Role.ADMIN))
    if not admins:
        db.session.rollback()
        abort(409, LAST_ADMIN)


def get_user_or_404(user_id: int) -> User:
    user = db.session.get(User, user_id) if user_id <= MAX_ID else None
    if user is None:
        abort(404, f"No user with id {user_id}.")
    return user


def commit_or_409(check: Callable[[], None] | None = None) -> None:
    """Commit, or 409 on a duplicate email; ``check`` runs first (it may flush and refuse)."""
    try:
        if check is not None:
            check()
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409, DUPLICATE_EMAIL)


def record_events(user: User, old_email: str, old_role: Role, password_changed: bool) -> None:
    """Add the outbox rows of a PATCH: the email change goes to the OLD address too."""
    if user.email != old_email:
        record_event(user, "user.email_changed",
                     {"old_email": old_email, "new_email": user.email, "name": user.name})
    if password_changed:
        record_event(user, "user.password_changed", {"email": user.email, "name": user.name})
    if user.role != old_role:
        record_event(user, "user.role_changed", {"email": user.email, "name": user.name,
                                                 "old_role": Role(old_role).value,
                                                 "new_role": Role(user.role).value})
# One statement per page: the rows and, beside each, the count of every matching row.
PAGE = select(*COLUMNS, func.count().over()).order_by(USERS.c.id)


@bp.get("/users")
@bp.auth_required(auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(UsersPage)
@bp.doc(summary="List users, oldest first (admins only)",
        description="Filter by `role` and find by `email`; the pagination links keep the filters.",
        responses={403: "Only admins list users"})
def list_users(query: dict[str, Any]) -> Response:
    allow(Operation.LIST, current_user())
    conditions: list[ColumnElement[bool]] = []
    filters: dict[str, Any] = {}
    if "role" in query:
        conditions.append(USERS.c.role == query["role"])
        filters["role"] = query["role"].value
    if "email" in query:
        conditions.append(USERS.c.email == normalise_email(query["email"]))
        filters["email"] = query["email"]
    page, per_page = query["page"], query["per_page"]
    rows = db.session.execute(PAGE.where(*conditions).limit(per_page).offset((page - 1) * per_page)).all()
    if rows:
        total = rows[0][-1]
    elif page == 1:  # nothing matches at all
        total = 0
    else:  # past the end: the links still need the count
        total = db.session.scalar(select(func.count()).select_from(USERS).where(*conditions)) or 0
    items = [full_view(row) for row in rows]  # the columns carry the record's names
    return json_response({"items": items, "pagination": page_links(page, per_page, total, filters)})


@bp.get("/users/me")
@bp.auth_required(auth)
@bp.output(UserFull)
@bp.doc(summary="Get your own full record")
def get_me() -> Response:
    actor = current_user()
    allow(Operation.ME, actor)
    return json_response(full_view(actor))


@bp.get("/users/<int:user_id>")
@bp.auth_required(auth)
@bp.output(UserFull)
@bp.doc(summary="Get a user")
def get_user(user_id: int) -> Response:
    actor = current_user()
    user = actor if user_id == actor.id else read_user(user_id)
    if user is None:
        abort(404, f"No user with id {user_id}.")
    allow(Operation.GET, actor, user)
    return user_response(actor, user)


@bp.post("/users")
@bp.auth_required(auth)
@bp.input(UserIn, arg_name="data")
@bp.output(UserFull, status_code=201)
@bp.doc(summary="Create a user", responses={403: "Only admins create admins", 409: DUPLICATE_EMAIL})
def create_user(data: dict[str, Any]) -> Response:
    actor = current_user()
    allow(Operation.CREATE_ADMIN if data["role"] == Role.ADMIN else Operation.CREATE, actor)
    user = User(email=data["email"], name=data["name"], role=data["role"],
                password_hash=hash_password(data["password"]), created_by_id=actor.id)
    db.session.add(user)
    record_event(user, "user.created",
                 {"email": user.email, "name": user.name, "role": Role(user.role).value})
    commit_or_409()
    count_user_created()
    return user_response(actor, user, 201, {"Location": link("api.get_user", user_id=user.id)})


@bp.patch("/users/<int:user_id>")
@bp.auth_required(auth)
@bp.input(UserPatch, arg_name="changes")
@bp.output(UserFull)
@bp.doc(summary="Change some fields of a user",
        description="Allowed for admins, the user themself and the user's creator (while the user's role "
                    "is not higher than the creator's). "
                    "Changing a role needs an admin; changing a password needs an admin or the user. "
                    "Users changing their own password or email send their `current_password` too. "
                    "A password change ends every token issued to the user before it, the caller's "
                    "own included.",
        responses={403: "Not allowed to change this user, or `current_password` missing or wrong",
                   409: f"{DUPLICATE_EMAIL} Or the change would demote the last admin."})
def update_user(user_id: int, changes: dict[str, Any]) -> Response:
    actor, user = current_user(), get_user_or_404(user_id)
    is_self = actor.id == user.id
    allow(Operation.PATCH_PROFILE, actor, user)  # any change needs at least this
    if "role" in changes and changes["role"] != user.role:
        allow(Operation.PATCH_ROLE, actor, user)
    demotes = changes.get("role") == Role.USER
    if demotes:  # before any change is flushed: every such request takes its locks in one order
        lock_admins()
    current_password = changes.pop("current_password", None)
    if "password" in changes:
        allow(Operation.PATCH_PASSWORD, actor, user)
    # A stolen token alone must neither take the account over (a new password) nor move its
    # login to another address, locking the owner out (a new email).
    new_email = changes.get("email", user.email) != user.email
    if is_self and ("password" in changes or new_email):
        if current_password is None:
            what = "password" if "password" in changes else "email"
            abort(403, f"Changing your own {what} needs your current_password too.")
        if not verify_password(user.password_hash, current_password)[0]:
            count_auth_failure("credentials")
            refuse_password()  # counted against RATE_LIMIT_LOGIN_FAILURES, as a refused login is
            abort(403, "The current password is wrong.")
    old_email, old_role = user.email, user.role
    password_changed = "password" in changes
    if password_changed:
        user.password_hash = hash_password(changes.pop("password"))
        # Every token issued so far stops working, the caller's too. Raised in SQL, so two
        # changes at once cannot both write the same new version.
        user.token_version = User.token_version + 1
    for field, value in changes.items():
        setattr(user, field, value)
    record_events(user, old_email, old_role, password_changed)
    commit_or_409(refuse_if_no_admin_left if demotes else None)
    forget_users(user.id)
    return user_response(actor, user)


@bp.delete("/users/<int:user_id>")
@bp.auth_required(auth)
@bp.output({}, status_code=204)
@bp.doc(summary="Delete a user (admins only)",
        responses={403: "Only admins delete users", 409: "That is the last admin"})
def delete_user(user_id: int) -> tuple[str, int]:
    actor = current_user()
    if not actor.is_admin:  # before the lookup: a 404 would tell who exists
        allow(Operation.DELETE, actor)
    user = get_user_or_404(user_id)
    allow(Operation.DELETE, actor, user)
    admin = user.is_admin
    if admin:
        lock_admins()
    data = {"email": user.email, "name": user.name}
    # Their created_by becomes null (ON DELETE SET NULL): their cached records change too.
    created = db.session.scalars(select(User.id).where(User.created_by_id == user.id)).all()
    db.session.delete(user)
    db.session.flush()  # the DELETE first: see record_event
    record_event(user, "user.deleted", data, deleted=True)
    if admin:
        refuse_if_no_admin_left()
    db.session.commit()
    forget_users(user_id, *created)
    return "", 204

"""Who may do what to a user, written once as data.

``RULES`` maps an operation and a kind of caller to the status the API answers and the view of
the user the answer carries (``public``: id and name; ``full``: the whole record). The views in
``users.py`` consult it; tests/test_authorization.py runs every cell against the real app;
``make docs`` writes the table of app/README.md from it (app/policy_table.py).

Callers, for an operation on one user (the target):

- ``anonymous``: no valid bearer token (401 before any view runs).
- ``admin``: the token's user is an admin (themself included).
- ``self``: a regular user acting on their own account.
- ``creator``: a regular user acting on an account they created, while that account's role is not
  higher than the creator's own current role (creator rights never reach an admin, and end
  when the creator is demoted below the account).
- ``user``: any other authenticated user.

Operations without a target (list, me, create) have no ``self`` or ``creator`` column.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from apiflask import abort

from ..models import Role
from ..records import UserLike
from ..telemetry import count_auth_failure


class Caller(enum.StrEnum):
    ANONYMOUS = "anonymous"
    USER = "user"
    SELF = "self"
    CREATOR = "creator"
    ADMIN = "admin"


class View(enum.StrEnum):
    PUBLIC = "public"
    FULL = "full"


class Operation(enum.StrEnum):
    LIST = "list"
    GET = "get"
    ME = "me"
    CREATE = "create a user"
    CREATE_ADMIN = "create an admin"
    PATCH_PROFILE = "patch name, email"
    PATCH_PASSWORD = "patch password"  # noqa: S105  # nosec B105 # an operation's name
    PATCH_ROLE = "patch role"
    DELETE = "delete"


@dataclass(frozen=True)
class Rule:
    status: int
    view: View | None = None  # the view of the user in the answer; None: no user in it
    detail: str = ""  # why a 403, as the problem's detail and in the README


# The order of the roles: creator rights reach only a user whose role is not higher.
RANK = {Role.USER: 0, Role.ADMIN: 1}
ANONYMOUS = Rule(401)
NOT_ADMIN = Rule(403, detail="Only admins list users.")
NOT_YOURS = Rule(403, detail="You can change only yourself and users you created.")
ADMINS_DELETE = Rule(403, detail="Only admins delete users.")
PUBLIC, FULL = Rule(200, View.PUBLIC), Rule(200, View.FULL)

RULES: dict[Operation, dict[Caller, Rule]] = {
    Operation.LIST: {Caller.ANONYMOUS: ANONYMOUS, Caller.USER: NOT_ADMIN, Caller.ADMIN: FULL},
    Operation.GET: {Caller.ANONYMOUS: ANONYMOUS, Caller.USER: PUBLIC, Caller.SELF: FULL,
                    Caller.CREATOR: PUBLIC, Caller.ADMIN: FULL},
    Operation.ME: {Caller.ANONYMOUS: ANONYMOUS, Caller.USER: FULL, Caller.ADMIN: FULL},
    Operation.CREATE: {Caller.ANONYMOUS: ANONYMOUS, Caller.USER: Rule(201, View.PUBLIC),
                       Caller.ADMIN: Rule(201, View.FULL)},
    Operation.CREATE_ADMIN: {Caller.ANONYMOUS: ANONYMOUS,
                             Caller.USER: Rule(403, detail="Only an admin can create an admin."),
                             Caller.ADMIN: Rule(201, View.FULL)},
    Operation.PATCH_PROFILE: {Caller.ANONYMOUS: ANONYMOUS, Caller.USER: NOT_YOURS, Caller.SELF: FULL,
                              Caller.CREATOR: PUBLIC, Caller.ADMIN: FULL},
    Operation.PATCH_PASSWORD: {
        Caller.ANONYMOUS: ANONYMOUS, Caller.USER: NOT_YOURS, Caller.SELF: FULL,
        Caller.CREATOR: Rule(403, detail="Only the user or an admin can change a password."),
        Caller.ADMIN: FULL},
    Operation.PATCH_ROLE: {
        Caller.ANONYMOUS: ANONYMOUS, Caller.USER: NOT_YOURS,
        Caller.SELF: Rule(403, detail="Only an admin can change a role."),
        Caller.CREATOR: Rule(403, detail="Only an admin can change a role."), Caller.ADMIN: FULL},
    Operation.DELETE: {Caller.ANONYMOUS: ANONYMOUS, Caller.USER: ADMINS_DELETE, Caller.SELF: ADMINS_DELETE,
                       Caller.CREATOR: ADMINS_DELETE, Caller.ADMIN: Rule(204)},
}


def caller_of(actor: UserLike | None, target: UserLike | None = None) -> Caller:
    """The kind of caller ``actor`` is for an operation on ``target`` (None: no target)."""
    if actor is None:
        return Caller.ANONYMOUS
    if actor.is_admin:
        return Caller.ADMIN
    if target is not None:
        if target.id == actor.id:
            return Caller.SELF
        if target.created_by_id == actor.id and RANK[Role(target.role)] <= RANK[Role(actor.role)]:
            return Caller.CREATOR
    return Caller.USER


def allow(operation: Operation, actor: UserLike, target: UserLike | None = None) -> Rule:
    """The rule for ``actor`` doing ``operation`` (on ``target``); a refusal answers 403 here."""
    rule = RULES[operation][caller_of(actor, target)]
    if rule.status == 403:
        count_auth_failure("forbidden")
        abort(403, rule.detail)
    return rule


def view_for(actor: UserLike, target: UserLike) -> View:
    """The view of ``target`` that ``actor`` may read (the rule of GET)."""
    view = RULES[Operation.GET][caller_of(actor, target)].view
    return view or View.PUBLIC

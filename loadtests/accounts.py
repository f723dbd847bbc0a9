"""Accounts and data the personas need, made through the API (never in the database).

Every read of the API needs a token: plain users see others' public profiles and their own full
record, admins list users. So every persona logs in first and reuses its token.

Set-up and measured traffic are kept apart:
- Set-up goes through plain HTTP requests that are not in Locust's stats: the admin's login
  (``--admin-email``/``--admin-password``, the bootstrap admin of the deployment or of
  ``flask users bootstrap-admin``), the seed users (``seed_users``, a ``test_start`` listener),
  each writer's account, the readers' accounts (``ReaderAccounts``) and the ids readers fetch
  (``stable_ids``). It happens once per run, process or user, so measuring it would overweight
  it in a short run; a set-up failure raises ``SetupError`` and the SLO gate fails the run on it.
- What the personas do, their own logins included, goes through their Locust client.

``PASSWORD`` is made per process: an account is logged into only by the process that made it
(in distributed mode, the master's seed users are only ever read, never logged into).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import gevent.lock
import gevent.pool
import requests
from locust.runners import WorkerRunner

from loadtests.checks import expect, token_errors

DOMAIN = "loadtest.example.com"
SEED_PREFIX = "seed-"
# Every account and user the load test makes gets this password; each create still pays the
# full Argon2id hash, which is the cost being measured.
PASSWORD = "lt-" + secrets.token_urlsafe(18)
REFRESH_MARGIN = 30.0  # seconds before expiry at which a token is renewed
SETUP_TIMEOUT = 30.0
logger = logging.getLogger(__name__)


class SetupError(RuntimeError):
    """The target service cannot be prepared for the load test."""


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float  # time.monotonic() deadline

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.expires_at - REFRESH_MARGIN


def login(user: Any, email: str, password: str) -> Token | None:
    """Get a token as ``user`` (a FastHttpUser, so the request is in the stats); None on failure."""
    body = None
    with user.rest("POST", "/api/v1/auth/token", json={"email": email, "password": password}) as resp:
        body = expect(resp, 200, token_errors)
    if body is None:
        return None
    return Token(body["access_token"], time.monotonic() + body["expires_in"])


class Account:
    """An account this process made, and its token, shared by the users that log in as it."""

    def __init__(self, email: str, user_id: int) -> None:
        self.email, self.id = email, user_id
        self.token: Token | None = None
        self._lock = gevent.lock.BoundedSemaphore()  # one login at a time, the others reuse it

    def headers(self, user: Any) -> dict[str, str] | None:
        """Return the Authorization header, logging in as ``user`` (measured) when the token is stale."""
        with self._lock:
            if self.token is None or not self.token.fresh():
                self.token = login(user, self.email, PASSWORD)
        return self.token.headers if self.token else None


class ReaderAccounts:
    """Plain accounts for readers, made by the admin as set-up: one per ``per_account`` readers.

    Sharing keeps the Argon2id cost of logins low (a token per account, not per reader), while
    each account's reads stay below the service's per-user read limit (RATE_LIMIT_READS, 600 a
    minute by default): 8 readers at about one read a second each make some 480 a minute.
    """

    def __init__(self, per_account: int = 8) -> None:
        self.per_account = per_account
        self._accounts: list[Account] = []
        self._assigned = 0
        self._lock = gevent.lock.BoundedSemaphore()

    def assign(self, environment: Any) -> Account:
        """Return the account the next reader uses, making a new one every ``per_account`` readers."""
        with self._lock:
            if self._assigned % self.per_account == 0:
                email = new_email("reader")
                user_id = create_account(environment, email, "Load Reader")
                if user_id is None:  # accept_existing is off: a 409 raised already
                    raise SetupError(f"{email} was not created")
                self._accounts.append(Account(email, user_id))
            self._assigned += 1
            return self._accounts[-1]


READERS = ReaderAccounts()


class StableIds:
    """Ids readers fetch, which no persona deletes: the seed users and the bootstrap admin.

    Found once per process by the admin (set-up), from the oldest users: listing is for admins.
    """

    def __init__(self) -> None:
        self._ids: list[int] | None = None
        self._lock = gevent.lock.BoundedSemaphore()

    def get(self, environment: Any) -> list[int]:
        with self._lock:
            if self._ids is None:
                answer = setup_request(environment, "GET", "/api/v1/users?page=1&per_page=100",
                                       headers=ADMIN.headers(environment))
                if answer.status_code != 200:
                    raise SetupError(f"listing users as the admin failed: {answer.status_code} "
                                     f"{answer.text[:200]}")
                self._ids = [u["id"] for u in answer.json()["items"]
                             if u["email"].startswith(SEED_PREFIX) or u["created_by"] is None]
            return self._ids


STABLE_IDS = StableIds()


def me_path(environment: Any, account: Account, token: Token) -> str | None:
    """Return "/api/v1/users/me" when the service has it (set-up, probed once per process), else None.

    Services from before restricted reads answer 404 there; readers then read their own record
    by id, which needs the same rights.
    """
    if _ME["probed"] is None:
        answer = setup_request(environment, "GET", "/api/v1/users/me", headers=token.headers)
        if answer.status_code not in (200, 404):
            raise SetupError(f"GET /api/v1/users/me as {account.email}: {answer.status_code} "
                             f"{answer.text[:200]}")
        _ME["probed"] = answer.status_code == 200
    return "/api/v1/users/me" if _ME["probed"] else None


_ME: dict[str, bool | None] = {"probed": None}


class AdminSession:
    """The admin's token for this process, fetched by a set-up login and renewed before it expires."""

    def __init__(self) -> None:
        self._token: Token | None = None
        # Writers spawned together would otherwise all log in at once (each login is an Argon2id verify).
        self._lock = gevent.lock.BoundedSemaphore()

    def headers(self, environment: Any) -> dict[str, str]:
        """Return the admin's Authorization header; raise SetupError when the admin cannot log in."""
        with self._lock:
            if self._token is None or not self._token.fresh():
                options = environment.parsed_options
                if not (options.admin_email and options.admin_password):
                    raise SetupError("set --admin-email and --admin-password (or LOOKOUT_LOADTEST_ADMIN_"
                                     "EMAIL and LOOKOUT_LOADTEST_ADMIN_PASSWORD) to an admin of the target")
                answer = setup_request(environment, "POST", "/api/v1/auth/token", json={
                    "email": options.admin_email, "password": options.admin_password})
                if answer.status_code != 200 or token_errors(body := answer.json()):
                    raise SetupError(f"admin login failed: {answer.status_code} {answer.text[:200]}")
                self._token = Token(body["access_token"], time.monotonic() + body["expires_in"])
            return self._token.headers


ADMIN = AdminSession()


def setup_request(environment: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    """Send a set-up request outside Locust's stats; raise SetupError when there is no answer."""
    try:
        return requests.request(method, environment.host.rstrip("/") + path, timeout=SETUP_TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise SetupError(f"{method} {path}: {exc}") from exc


def new_email(kind: str) -> str:
    """Return an address no other run or process uses."""
    return f"{kind}-{secrets.token_hex(6)}@{DOMAIN}"


def create_account(environment: Any, email: str, name: str, accept_existing: bool = False) -> int | None:
    """Create a plain user as the admin (set-up); return its id, or None when it already existed."""
    answer = setup_request(environment, "POST", "/api/v1/users", headers=ADMIN.headers(environment),
                           json={"email": email, "name": name, "password": PASSWORD})
    if answer.status_code == 409 and accept_existing:  # made by an earlier run on this database
        return None
    if answer.status_code != 201:
        raise SetupError(f"creating {email} failed: {answer.status_code} {answer.text[:200]}")
    return int(answer.json()["id"])


def seed_users(environment: Any, **_kwargs: Any) -> None:
    """Make sure the seed users exist (a ``test_start`` listener; the master or local runner only)."""
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or options is None or options.seed_users <= 0:
        return

    def seed(n: int) -> int | None:
        email = f"{SEED_PREFIX}{n}@{DOMAIN}"
        return create_account(environment, email, f"Seed User {n}", accept_existing=True)

    # A few at a time: each create is an Argon2id hash on the server.
    created = gevent.pool.Pool(4).map(seed, range(1, options.seed_users + 1))
    made = sum(1 for c in created if c is not None)
    logger.info("seeded %d users (%d already there)", made, len(created) - made)
    if environment.shape_class is not None:
        # The shape's clock starts when the load can start, as Locust's master runner does too;
        # otherwise the seeding time would eat into the first stage.
        environment.shape_class.reset_time()

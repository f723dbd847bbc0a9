"""Who uses the service: readers look users up, admins browse the directory, writers manage the
users they created, one admin cleans up. Every request is authenticated (only the login itself is not).

How the permission model shapes the traffic:
- Writers are plain users. The admin creates each writer's account as set-up (not measured, see
  accounts.py); the writer logs in once and keeps its token (renewed before expiry): a token
  costs an Argon2id verify on the server, so it is not fetched per task.
- Writers create users, rename them (allowed: they are the creator) and read them back. Deleting
  needs the admin role, so a writer's delete is expected to be refused (403 problem); the writer
  then hands the user to the admin, whose persona deletes it (204) and checks it is gone (404).
- Readers are plain users (accounts the admin makes as set-up, shared by a few readers each):
  they fetch seed users by id (the public profile; they are never deleted, so a 404 there is a
  real failure), their own record (``/users/me``, the full record) and ids that do not exist (a
  404 problem is the right answer). Listing users is for admins: the Directory persona browses
  pages with the admin's token.

Every response is validated (status, media type and body shape) by ``loadtests.checks``.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from locust import FastHttpUser, task

from loadtests.accounts import (
    ADMIN,
    PASSWORD,
    READERS,
    STABLE_IDS,
    Token,
    create_account,
    login,
    me_path,
    new_email,
)
from loadtests.checks import expect, no_body, page_errors, problem_errors, profile_errors, user_errors

USERS = "/api/v1/users"
UNKNOWN_ID_BASE = 1_000_000_000  # far above any real id, inside PostgreSQL's integer range
OWNED_MAX = 10  # users a writer keeps before handing the oldest to the admin
# Users writers are done with, waiting for this process's admin to delete them. Bounded: with
# no admin in this process (a distributed worker without one), the oldest are simply left.
RETIRED: deque[int] = deque(maxlen=1000)


def user_check(full: bool = False, **expected: Any) -> Any:
    """Return a check of a user body that also compares the given fields where they are present.

    ``full``: the caller is the user or an admin, so the whole record must be there; otherwise the
    public profile (id, name) must, and whatever else the service shows must be right.
    """

    def check(body: Any) -> list[str]:
        errors = user_errors(body) if full else profile_errors(body)
        if not errors:
            errors = [f"user.{k} is {body[k]!r}, expected {v!r}" for k, v in expected.items()
                      if k in body and body[k] != v]
        return errors

    return check


class LookoutUser(FastHttpUser):
    """Shared settings: bounded timeouts and a think time scaled by --think-time-scale."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 5.0
    think_time = (0.5, 1.5)  # seconds between tasks, before scaling

    def wait_time(self) -> float:
        low, high = self.think_time
        return random.uniform(low, high) * self.environment.parsed_options.think_time_scale


class Reader(LookoutUser):
    """A plain user looking others up: profiles by id, their own record, ids that do not exist."""

    weight = 16

    def on_start(self) -> None:
        # Set-up (not measured): an account shared with a few readers, the ids to fetch.
        self.account = READERS.assign(self.environment)
        self.stable_ids = STABLE_IDS.get(self.environment) or [self.account.id]
        headers = self.auth()
        token = self.account.token
        self.me = me_path(self.environment, self.account, token) if headers and token else None

    def auth(self) -> dict[str, str] | None:
        return self.account.headers(self)

    @task(5)
    def get_user(self) -> None:
        if (headers := self.auth()) is None:
            return
        user_id = random.choice(self.stable_ids)
        with self.rest("GET", f"{USERS}/{user_id}", headers=headers, name=f"{USERS}/[id]") as resp:
            expect(resp, 200, user_check(id=user_id))

    @task(2)
    def get_me(self) -> None:
        if (headers := self.auth()) is None:
            return
        path, name = (self.me, self.me) if self.me else (f"{USERS}/{self.account.id}", f"{USERS}/[own id]")
        with self.rest("GET", path, headers=headers, name=name) as resp:
            expect(resp, 200, user_check(full=True, id=self.account.id, email=self.account.email))

    @task(1)
    def get_unknown_user(self) -> None:
        if (headers := self.auth()) is None:
            return
        with self.rest("GET", f"{USERS}/{UNKNOWN_ID_BASE + random.randint(0, 999_999)}", headers=headers,
                       name=f"{USERS}/[unknown id]") as resp:
            expect(resp, 404, problem_errors(404))


class Directory(LookoutUser):
    """An admin browsing the directory page by page (listing users is for admins)."""

    weight = 2

    def on_start(self) -> None:
        self.pages = 1

    @task
    def browse(self) -> None:
        headers = ADMIN.headers(self.environment)
        body = None
        with self.rest("GET", f"{USERS}?page={random.randint(1, self.pages)}&per_page=20", headers=headers,
                       name=f"{USERS}?page=[n]&per_page=20") as resp:
            body = expect(resp, 200, page_errors)
        if body:
            self.pages = max(1, body["pagination"]["pages"])


class Writer(LookoutUser):
    """Creates users, renames them and reads them back; hands them to the admin to delete."""

    weight = 2
    think_time = (2.0, 5.0)  # people filling in forms

    def on_start(self) -> None:
        self.owned: deque[int] = deque()
        self.email = new_email("writer")
        # Set-up, as an administrator would do it once; raises SetupError, which fails the run.
        self.account_id = create_account(self.environment, self.email, "Load Writer")
        self.token: Token | None = login(self, self.email, PASSWORD)

    def auth(self) -> dict[str, str] | None:
        """Return the writer's Authorization header, logging in again when the token is stale."""
        if self.token is None or not self.token.fresh():
            self.token = login(self, self.email, PASSWORD)
        return self.token.headers if self.token else None

    @task(1)
    def create_user(self) -> None:
        headers = self.auth()
        if headers is None:
            return
        email = new_email("user")
        with self.rest("POST", USERS, headers=headers,
                       json={"email": email, "name": "Load User", "password": PASSWORD}) as resp:
            user = expect(resp, 201, user_check(email=email, role="user", created_by=self.account_id))
            location = str(resp.headers.get("Location") or "")
            if not location.endswith(f"{USERS}/{user['id']}"):
                raise AssertionError(f"Location {location!r} does not name user {user['id']}")
            self.owned.append(user["id"])
            if len(self.owned) > OWNED_MAX:
                RETIRED.append(self.owned.popleft())

    @task(3)
    def rename_user(self) -> None:
        headers = self.auth()
        if headers is None or not self.owned:
            return self.create_user()
        user_id, name = random.choice(self.owned), f"Renamed {random.randint(1, 10**6)}"
        with self.rest("PATCH", f"{USERS}/{user_id}", headers=headers, json={"name": name},
                       name=f"{USERS}/[id]") as resp:
            expect(resp, 200, user_check(id=user_id, name=name))

    @task(4)
    def get_own_user(self) -> None:
        headers = self.auth()
        if headers is None or not self.owned:
            return self.create_user()
        user_id = random.choice(self.owned)
        with self.rest("GET", f"{USERS}/{user_id}", headers=headers, name=f"{USERS}/[id]") as resp:
            expect(resp, 200, user_check(id=user_id, created_by=self.account_id))

    @task(1)
    def delete_own_user(self) -> None:
        headers = self.auth()
        if headers is None or not self.owned:
            return self.create_user()
        user_id = self.owned.popleft()
        with self.rest("DELETE", f"{USERS}/{user_id}", headers=headers,
                       name=f"{USERS}/[id] (not admin)") as resp:
            expect(resp, 403, problem_errors(403))
        RETIRED.append(user_id)


class Admin(LookoutUser):
    """One administrator: reads large pages and deletes the users writers handed over."""

    fixed_count = 1
    think_time = (1.0, 3.0)

    @task(2)
    def list_large_page(self) -> None:
        with self.rest("GET", f"{USERS}?page=1&per_page=100", headers=ADMIN.headers(self.environment),
                       name=f"{USERS}?page=[n]&per_page=100") as resp:
            expect(resp, 200, page_errors)

    @task(3)
    def delete_retired_user(self) -> None:
        if not RETIRED:
            return self.list_large_page()
        headers = ADMIN.headers(self.environment)
        user_id = RETIRED.popleft()
        with self.rest("DELETE", f"{USERS}/{user_id}", headers=headers, name=f"{USERS}/[id]") as resp:
            expect(resp, 204, no_body)
        with self.rest("GET", f"{USERS}/{user_id}", headers=headers, name=f"{USERS}/[deleted id]") as resp:
            expect(resp, 404, problem_errors(404))

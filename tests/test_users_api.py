"""The users resource over the Flask test client, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import PASSWORD, assert_problem, bearer, metric_value

from app.models import Role

NEW = {"email": "  Ada.Lovelace@Example.COM ", "name": " Ada ", "password": "analytical-engine"}


def test_create_normalises_and_hides_password(client, admin_headers):
    response = client.post("/api/v1/users", json=NEW, headers=admin_headers)
    assert response.status_code == 201
    body = response.get_json()
    assert body["email"] == "ada.lovelace@example.com"
    assert body["name"] == "Ada"
    assert body["role"] == "user"
    assert "password" not in body and "password_hash" not in body
    assert response.headers["Location"] == f"/api/v1/users/{body['id']}"
    created = datetime.fromisoformat(body["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0


def test_create_then_get(client, admin_headers):
    created = client.post("/api/v1/users", json=NEW, headers=admin_headers).get_json()
    fetched = client.get(f"/api/v1/users/{created['id']}", headers=admin_headers)
    assert fetched.status_code == 200
    assert fetched.get_json() == created


def test_duplicate_email_is_409_whatever_the_case(client, admin_headers):
    assert client.post("/api/v1/users", json=NEW, headers=admin_headers).status_code == 201
    again = {**NEW, "email": "ADA.LOVELACE@example.com"}
    body = assert_problem(client.post("/api/v1/users", json=again, headers=admin_headers), 409)
    assert "already exists" in body["detail"]


def test_unknown_id_is_404(client, user_headers):
    body = assert_problem(client.get("/api/v1/users/424242", headers=user_headers), 404)
    assert "424242" in body["detail"]


def test_list_is_paginated_in_stable_order(client, make_user):
    users = [make_user(Role.ADMIN)] + [make_user() for _ in range(6)]
    headers = bearer(users[0])
    first = client.get("/api/v1/users?per_page=3", headers=headers).get_json()
    second = client.get("/api/v1/users?per_page=3&page=2", headers=headers).get_json()
    last = client.get("/api/v1/users?per_page=3&page=3", headers=headers).get_json()
    ids = [u["id"] for page in (first, second, last) for u in page["items"]]
    assert ids == sorted(u.id for u in users)
    assert first["pagination"]["total"] == 7 and first["pagination"]["pages"] == 3
    assert first["pagination"]["next"] == "/api/v1/users?page=2&per_page=3"
    assert last["pagination"]["next"] == ""
    assert client.get("/api/v1/users?page=9&per_page=3", headers=headers).get_json()["items"] == []


@pytest.mark.parametrize("users", [0, 1, 7])
def test_every_pagination_link_can_be_followed(client, make_user, users):
    admin = make_user(Role.ADMIN)
    headers = bearer(admin)
    for _ in range(users):
        make_user()
    query = "role=user&" if users else ""  # 0 users: no user of that role, an empty first page
    for page in (1, 2, 3, 9):
        pagination = client.get(f"/api/v1/users?{query}per_page=3&page={page}",
                                headers=headers).get_json()["pagination"]
        for name in ("first", "last", "next", "prev", "current"):
            if pagination[name]:
                followed = client.get(pagination[name], headers=headers)
                assert followed.status_code == 200, (users, page, name, followed.get_json())
        assert pagination["first"] and pagination["last"] and pagination["current"]
        if page > max(pagination["pages"], 1):
            assert pagination["prev"] == pagination["last"]  # not to another empty page


def test_page_size_is_capped(client, app, make_user, admin_headers):
    for _ in range(3):
        make_user()
    app.config["PAGE_SIZE_MAX"] = 2
    body = client.get("/api/v1/users?per_page=1000", headers=admin_headers).get_json()
    assert len(body["items"]) == 2 and body["pagination"]["per_page"] == 2


def test_default_page_size(client, app, make_user, admin_headers):
    for _ in range(3):
        make_user()
    app.config["PAGE_SIZE_DEFAULT"] = 2
    assert len(client.get("/api/v1/users", headers=admin_headers).get_json()["items"]) == 2


def test_owner_can_patch_user_they_created(client, make_user):
    creator = make_user()
    created = client.post("/api/v1/users", json=NEW, headers=bearer(creator)).get_json()
    response = client.patch(f"/api/v1/users/{created['id']}", json={"name": "Countess"},
                            headers=bearer(creator))
    assert response.status_code == 200
    body = response.get_json()
    assert body == {"id": created["id"], "name": "Countess"}  # a creator sees the public profile


def login(client, email: str, password: str) -> dict[str, str] | None:
    response = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    if response.status_code != 200:
        return None
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def test_user_changes_own_password_with_the_current_one_and_every_earlier_token_ends(client, make_user):
    me = make_user()
    earlier, mine = login(client, me.email, PASSWORD), login(client, me.email, PASSWORD)
    response = client.patch(f"/api/v1/users/{me.id}", headers=mine,
                            json={"password": "a-new-password", "current_password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    for headers in (earlier, mine):  # another device's login and the caller's own
        assert_problem(client.patch(f"/api/v1/users/{me.id}", json={"name": "x"}, headers=headers), 401)
    assert login(client, me.email, PASSWORD) is None
    fresh = login(client, me.email, "a-new-password")
    assert fresh is not None
    assert client.patch(f"/api/v1/users/{me.id}", json={"name": "Me Again"}, headers=fresh).status_code == 200


@pytest.mark.parametrize("current", [None, "not-my-password"], ids=["missing", "wrong"])
@pytest.mark.parametrize("credential, value", [("password", "hijacked-password"),
                                               ("email", "thief@example.com")])
def test_own_password_or_email_change_needs_the_current_password(app, client, make_user, credential,
                                                                  value, current):
    """A stolen token alone neither takes the account over nor moves its login elsewhere; the
    refused change changes nothing."""
    me = make_user()
    headers = bearer(me)
    changes = {credential: value, "name": "Hijacked"}
    if current is not None:
        changes["current_password"] = current
    response = client.patch(f"/api/v1/users/{me.id}", json=changes, headers=headers)
    detail = assert_problem(response, 403)["detail"]
    if current is None:
        assert detail == f"Changing your own {credential} needs your current_password too."
    else:
        assert detail == "The current password is wrong."
        assert metric_value(app, "lookout_auth_failures_total", {"reason": "credentials"}) == 1
    assert client.get(f"/api/v1/users/{me.id}", headers=headers).get_json()["name"] == "Test User"
    assert login(client, me.email, PASSWORD) is not None
    still_mine = client.patch(f"/api/v1/users/{me.id}", json={"name": "Still Me"}, headers=headers)
    assert still_mine.status_code == 200


def test_admin_resets_a_password_without_it_and_the_users_tokens_end(client, make_user, admin_headers):
    user = make_user()
    headers = login(client, user.email, PASSWORD)
    response = client.patch(f"/api/v1/users/{user.id}", json={"password": "reset-by-admin"},
                            headers=admin_headers)
    assert response.status_code == 200, response.get_json()
    assert_problem(client.patch(f"/api/v1/users/{user.id}", json={"name": "x"}, headers=headers), 401)
    assert login(client, user.email, "reset-by-admin") is not None
    # The admin's own token is untouched: only the changed user's tokens end.
    admin_still = client.patch(f"/api/v1/users/{user.id}", json={"name": "y"}, headers=admin_headers)
    assert admin_still.status_code == 200


def test_other_changes_keep_tokens(client, make_user):
    me = make_user()
    old_email = me.email
    headers = login(client, old_email, PASSWORD)
    new_email = {"email": "renamed@example.com", "current_password": PASSWORD}
    for changes in ({"name": "Renamed"}, new_email):
        assert client.patch(f"/api/v1/users/{me.id}", json=changes, headers=headers).status_code == 200
    assert client.patch(f"/api/v1/users/{me.id}", json={"name": "Again"}, headers=headers).status_code == 200
    assert login(client, "renamed@example.com", PASSWORD) is not None
    assert login(client, old_email, PASSWORD) is None


def test_own_email_sent_unchanged_needs_no_password(client, make_user):
    me = make_user()
    response = client.patch(f"/api/v1/users/{me.id}", json={"email": f" {me.email.upper()}", "name": "Same"},
                            headers=bearer(me))
    assert response.status_code == 200, response.get_json()


def test_admins_and_creators_change_a_users_email_without_its_password(client, make_user, admin_headers):
    creator = make_user()
    created = client.post("/api/v1/users", json=NEW, headers=bearer(creator)).get_json()
    changers = ((bearer(creator), "by-creator@example.com"), (admin_headers, "by-admin@example.com"))
    for headers, email in changers:
        response = client.patch(f"/api/v1/users/{created['id']}", json={"email": email}, headers=headers)
        assert response.status_code == 200, response.get_json()
        stored = client.get(f"/api/v1/users/{created['id']}", headers=admin_headers).get_json()
        assert stored["email"] == email


def test_current_password_alone_changes_nothing(client, make_user):
    me = make_user()
    body = assert_problem(client.patch(f"/api/v1/users/{me.id}", json={"current_password": PASSWORD},
                                       headers=bearer(me)), 422)
    assert body["errors"][0]["message"] == "Give at least one field to update."


def test_patch_email_conflict_is_409(client, make_user, admin_headers):
    a, b = make_user(), make_user()
    assert_problem(client.patch(f"/api/v1/users/{b.id}", json={"email": a.email.upper()},
                                headers=admin_headers), 409)


def test_patch_someone_else_is_403(client, make_user):
    stranger, victim = make_user(), make_user()
    assert_problem(client.patch(f"/api/v1/users/{victim.id}", json={"name": "x"},
                                headers=bearer(stranger)), 403)


def test_creator_cannot_change_password_of_created_user(client, make_user):
    creator = make_user()
    created = client.post("/api/v1/users", json=NEW, headers=bearer(creator)).get_json()
    assert_problem(client.patch(f"/api/v1/users/{created['id']}", json={"password": "hijacked!!"},
                                headers=bearer(creator)), 403)


def test_only_admin_changes_roles_or_creates_admins(client, make_user, admin_headers):
    me = make_user()
    assert_problem(client.patch(f"/api/v1/users/{me.id}", json={"role": "admin"}, headers=bearer(me)), 403)
    assert_problem(client.post("/api/v1/users", json={**NEW, "role": "admin"}, headers=bearer(me)), 403)
    promoted = client.patch(f"/api/v1/users/{me.id}", json={"role": "admin"}, headers=admin_headers)
    assert promoted.status_code == 200 and promoted.get_json()["role"] == "admin"


def test_delete_needs_admin(client, make_user, admin_headers):
    victim, other = make_user(), make_user()
    assert_problem(client.delete(f"/api/v1/users/{victim.id}", headers=bearer(other)), 403)
    assert client.delete(f"/api/v1/users/{victim.id}", headers=admin_headers).status_code == 204
    assert_problem(client.get(f"/api/v1/users/{victim.id}", headers=admin_headers), 404)
    assert_problem(client.delete(f"/api/v1/users/{victim.id}", headers=admin_headers), 404)


def test_a_deleted_users_id_is_never_given_again(client, admin_headers):
    """A client still holding the id (or retrying its DELETE) must not reach someone else."""
    newest = client.post("/api/v1/users", json=NEW, headers=admin_headers).get_json()
    assert client.delete(f"/api/v1/users/{newest['id']}", headers=admin_headers).status_code == 204
    again = client.post("/api/v1/users", json=NEW, headers=admin_headers).get_json()
    assert again["id"] > newest["id"]
    assert_problem(client.get(f"/api/v1/users/{newest['id']}", headers=admin_headers), 404)


def test_deleting_creator_keeps_created_users(client, make_user, admin_headers):
    creator = make_user()
    created = client.post("/api/v1/users", json=NEW, headers=bearer(creator)).get_json()
    assert client.delete(f"/api/v1/users/{creator.id}", headers=admin_headers).status_code == 204
    fetched = client.get(f"/api/v1/users/{created['id']}", headers=admin_headers)
    assert fetched.get_json()["created_by"] is None


def test_the_last_admin_can_be_neither_deleted_nor_demoted(client, make_user, app):
    """Nobody could manage roles or delete users afterwards; a second admin makes both possible."""
    from app.extensions import db
    from app.models import User

    admin = make_user(Role.ADMIN)
    headers = bearer(admin)
    body = assert_problem(client.delete(f"/api/v1/users/{admin.id}", headers=headers), 409)
    assert "last admin" in body["detail"]
    refused = client.patch(f"/api/v1/users/{admin.id}", json={"role": "user", "name": "Renamed"},
                           headers=headers)
    body = assert_problem(refused, 409)
    assert "last admin" in body["detail"]
    db.session.expire_all()
    kept = db.session.get(User, admin.id)
    assert (kept.role, kept.name) == (Role.ADMIN, "Test User")  # nothing of the refused change stays

    second = make_user(Role.ADMIN)
    demoted = client.patch(f"/api/v1/users/{admin.id}", json={"role": "user"}, headers=headers)
    assert demoted.status_code == 200 and demoted.get_json()["role"] == "user"
    assert_problem(client.delete(f"/api/v1/users/{second.id}", headers=bearer(second)), 409)
    promoted = client.patch(f"/api/v1/users/{admin.id}", json={"role": "admin"}, headers=bearer(second))
    assert promoted.status_code == 200
    assert client.delete(f"/api/v1/users/{second.id}", headers=bearer(admin)).status_code == 204


def test_two_admins_demoting_each_other_at_once_leave_one_admin(make_user, app, monkeypatch):
    """The second request waits for the first (row locks on PostgreSQL, the write lock on SQLite)
    and then finds it would remove the last admin."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from app.api import users
    from app.extensions import db
    from app.models import User

    first, second = make_user(Role.ADMIN), make_user(Role.ADMIN)
    flushed, release = threading.Event(), threading.Event()
    check = users.refuse_if_no_admin_left

    def held_after_flush() -> None:  # the first request holds its locks here until released
        db.session.flush()
        if not flushed.is_set():
            flushed.set()
            assert release.wait(10)
        check()

    monkeypatch.setattr(users, "refuse_if_no_admin_left", held_after_flush)

    def demote(target: int, headers: dict[str, str]) -> int:
        return app.test_client().patch(f"/api/v1/users/{target}", json={"role": "user"},
                                       headers=headers).status_code

    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(demote, second.id, bearer(first))
        assert flushed.wait(10), one.result()
        other = pool.submit(demote, first.id, bearer(second))
        try:
            assert not _finished_within(other, 0.5), "the second did not wait"
        finally:
            release.set()
        assert (one.result(timeout=10), other.result(timeout=10)) == (200, 409)
    db.session.expire_all()
    assert [u.id for u in db.session.scalars(db.select(User).where(User.role == Role.ADMIN))] == [first.id]


def _finished_within(future, seconds: float) -> bool:
    from concurrent.futures import TimeoutError as FutureTimeout

    try:
        future.result(timeout=seconds)
    except FutureTimeout:
        return False
    return True


def test_writes_need_a_token(client, make_user):
    user = make_user()
    for response in (
        client.post("/api/v1/users", json=NEW),
        client.patch(f"/api/v1/users/{user.id}", json={"name": "x"}),
        client.delete(f"/api/v1/users/{user.id}"),
    ):
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_role_is_read_from_the_database_not_the_token(client, make_user, app):
    from app.auth.tokens import issue_token

    user = make_user(Role.USER)
    token, _ = issue_token(user.id, "admin")  # a stale or forged role claim grants nothing
    victim = make_user()
    assert_problem(client.delete(f"/api/v1/users/{victim.id}",
                                 headers={"Authorization": f"Bearer {token}"}), 403)


def test_token_login_with_seeded_password(client, make_user):
    user = make_user()
    response = client.post("/api/v1/auth/token", json={"email": user.email.upper(), "password": PASSWORD})
    assert response.status_code == 200


def test_links_never_come_from_the_host_header(client, make_user, admin_headers):
    for _ in range(3):
        make_user()
    response = client.get("/api/v1/users?per_page=2", headers={**admin_headers, "Host": "evil.example",
                                                                 "X-Forwarded-Proto": "https",
                                                                 "X-Forwarded-Host": "evil.example"})
    links = [v for k, v in response.get_json()["pagination"].items() if isinstance(v, str) and v]
    assert links and all(link.startswith("/api/v1/users?") for link in links), links
    created = client.post("/api/v1/users", json={**NEW, "email": "host@example.com"},
                          headers={**admin_headers, "Host": "evil.example"})
    assert created.headers["Location"] == f"/api/v1/users/{created.get_json()['id']}"


def test_links_use_public_url_when_it_is_set(database_url, admin_headers):
    from app import create_app

    app = create_app({"DATABASE_URL": database_url, "PUBLIC_URL": "https://api.example.com/"})
    pagination = app.test_client().get("/api/v1/users", headers={**admin_headers, "Host": "evil.example"}
                                       ).get_json()["pagination"]
    assert pagination["first"] == "https://api.example.com/api/v1/users?page=1&per_page=20"


def test_the_list_filters_by_role_and_email_and_its_links_keep_the_filters(client, make_user,
                                                                           admin_headers):
    for n in range(3):
        make_user(email=f"plain{n}@example.com")
    make_user(Role.ADMIN, email="second.admin@example.com")
    admins = client.get("/api/v1/users?role=admin&per_page=1", headers=admin_headers).get_json()
    assert [u["role"] for u in admins["items"]] == ["admin"] and admins["pagination"]["total"] == 2
    assert admins["pagination"]["next"] == "/api/v1/users?page=2&per_page=1&role=admin"
    following = client.get(admins["pagination"]["next"], headers=admin_headers).get_json()
    assert [u["email"] for u in following["items"]] == ["second.admin@example.com"]
    found = client.get("/api/v1/users?email=%20Plain1@EXAMPLE.com", headers=admin_headers).get_json()
    assert [u["email"] for u in found["items"]] == ["plain1@example.com"]
    assert "email=" in found["pagination"]["current"]
    none = client.get("/api/v1/users?email=nobody@example.com", headers=admin_headers).get_json()
    assert none["items"] == [] and none["pagination"]["total"] == 0
    assert_problem(client.get("/api/v1/users?role=root", headers=admin_headers), 422)


@pytest.mark.parametrize("email", ["\uff42\uff4f\uff53\uff53@example.com", "BOSS@EXAMPLE.COM",
                                   "boss@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"])  # full width
def test_an_email_equal_after_nfkc_and_lower_casing_is_taken(client, make_user, admin_headers, email):
    make_user(email="boss@example.com")
    response = client.post("/api/v1/users", json={**NEW, "email": email}, headers=admin_headers)
    body = assert_problem(response, 409)
    assert "already exists" in body["detail"]


@pytest.mark.parametrize("email", ["\u0430dmin@example.com", "boss@ex\u0430mple.com",  # Cyrillic a
                                   "p\u0430ypal@example.com"])
def test_an_email_mixing_scripts_within_a_part_is_refused(client, admin_headers, email):
    response = client.post("/api/v1/users", json={**NEW, "email": email}, headers=admin_headers)
    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == ["email"]


@pytest.mark.parametrize("email", ["\u0438\u0432\u0430\u043d@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444",  # noqa: E501
                                   "\u03b4\u03bf\u03ba\u03b9\u03bc\u03ae@example.com",
                                   "m\u00fcller@example.de",
                                   "\u592a\u90ce@\u4f8b\u3048.jp"])
def test_an_email_in_one_script_per_part_is_accepted(client, admin_headers, email):
    response = client.post("/api/v1/users", json={**NEW, "email": email}, headers=admin_headers)
    if response.status_code == 422:  # the address validator's own rules, not the script rule
        assert not any("script" in e["message"] for e in response.get_json()["errors"]), response.get_json()
    else:
        assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize("name", ["\u202eevil\u202c", "Ada\u2066", "\u200f", "a\u061cb", "\u200e Bob"])
def test_a_name_with_a_bidi_control_is_refused(client, admin_headers, name):
    response = client.post("/api/v1/users", json={**NEW, "name": name}, headers=admin_headers)
    body = assert_problem(response, 422)
    assert {e["field"] for e in body["errors"]} == {"name"}
    assert any("bidirectional" in e["message"] for e in body["errors"])


@pytest.mark.parametrize("name", ["\u200b", "\u200b\u200c\u200d", "\u0301\u0301", "\u3000\u200b", "\ufeff"])
def test_a_name_of_invisible_characters_only_is_refused(client, admin_headers, make_user, name):
    target = make_user()
    for response in (client.post("/api/v1/users", json={**NEW, "name": name}, headers=admin_headers),
                     client.patch(f"/api/v1/users/{target.id}", json={"name": name}, headers=admin_headers)):
        body = assert_problem(response, 422)
        assert [e["field"] for e in body["errors"]] == ["name"]


@pytest.mark.parametrize("page, statements", [(1, 1), (3, 1), (9, 2)])
def test_a_page_is_one_statement_and_past_the_end_still_counts(app, client, make_user, page, statements):
    """count(*) over () gives the total beside the rows; only a page with no rows needs a count."""
    from sqlalchemy import event

    from app.extensions import db

    admin = make_user(Role.ADMIN)
    for _ in range(6):
        make_user()
    headers = bearer(admin)
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        body = client.get(f"/api/v1/users?per_page=3&page={page}", headers=headers).get_json()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert body["pagination"]["total"] == 7 and body["pagination"]["pages"] == 3
    assert len(body["items"]) == {1: 3, 3: 1, 9: 0}[page]
    selects = [s for s in seen if s.lstrip().upper().startswith("SELECT") and "users" in s]
    assert len(selects) == 1 + statements, selects  # the caller's re-read, then the page

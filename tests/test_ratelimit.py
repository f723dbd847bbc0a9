"""Rate limits on the token endpoint and on writes: 429 problems with Retry-After, counted."""

from __future__ import annotations

import re

import pytest
from conftest import PASSWORD, assert_problem, bearer, metric_value

from app import create_app
from app.config import ConfigError, load_config
from app.models import Role

NEW = {"name": "Limited", "password": "long-enough"}


@pytest.fixture
def limited_app(database_url):
    """The test's database, with small limits."""

    def build(**limits: str):
        return create_app({"DATABASE_URL": database_url, **limits})

    return build


def assert_rate_limited(response, limit: str, app) -> None:
    body = assert_problem(response, 429)
    assert int(response.headers["Retry-After"]) >= 1
    assert "retry" in body["detail"].lower()
    assert metric_value(app, "lookout_rate_limited_total", {"limit": limit}) >= 1


def test_reads_outside_the_api_skip_the_limiter_and_the_rest_go_through_it(app, admin_headers, monkeypatch):
    """Every limit is on a write method or on the API's reads, so other reads (/, health, docs)
    skip the limiter's per-request hooks."""
    limiter = app.extensions["lookout.limiter"]
    checked, context_reads = [], []
    identify = limiter.identify_request
    monkeypatch.setattr(limiter, "identify_request", lambda: checked.append(1) or identify())
    context = type(limiter).context  # read by its after_request and teardown hooks
    monkeypatch.setattr(type(limiter), "context",
                        property(lambda self: context_reads.append(1) or context.fget(self)))
    client = app.test_client()
    for path in ("/", "/livez", "/openapi.json"):
        assert client.get(path, headers=admin_headers).status_code == 200
    assert client.head("/livez").status_code == 200
    assert checked == [] and context_reads == []
    assert client.get("/api/v1/users", headers=admin_headers).status_code == 200
    assert len(checked) == 1 and context_reads
    client.post("/api/v1/users", json={**NEW, "email": "limited@example.com"}, headers=admin_headers)
    client.delete("/api/v1/users/999999", headers=admin_headers)
    assert len(checked) == 3


def test_a_write_verifies_its_token_once(app, make_user, monkeypatch):
    """The writes limit, PATCH's wrong-password limit and the auth guard share one decode."""
    from app.auth import tokens

    me, admin = make_user(email="once@example.com"), make_user(Role.ADMIN, email="boss@example.com")
    with app.app_context():
        mine, admins = bearer(me), bearer(admin)
    decoded = []
    decode = tokens.jwt.decode

    def counting(token, *args, **kwargs):
        decoded.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(tokens.jwt, "decode", counting)
    client = app.test_client()
    assert client.patch(f"/api/v1/users/{me.id}", json={"name": "Once"}, headers=mine).status_code == 200
    assert decoded == [mine["Authorization"].split()[1]]
    created = client.post("/api/v1/users", json={**NEW, "email": "made@example.com"}, headers=admins)
    assert created.status_code == 201
    assert len(decoded) == 2  # a new request decodes afresh
    assert app.extensions["lookout.limiter"].enabled


def test_token_endpoint_is_limited_per_address(app, make_user, limited_app):
    user = make_user()
    limited = limited_app(RATE_LIMIT_LOGIN="3 per minute")
    client = limited.test_client()
    for _ in range(3):
        assert (
            client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD}).status_code
            == 200
        )
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert_rate_limited(response, "login", limited)
    other = client.post(
        "/api/v1/auth/token",
        json={"email": user.email, "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert other.status_code == 200  # another address has its own budget


def test_refused_logins_are_limited_per_account_and_address(app, make_user, limited_app):
    """Guessing from one address is as slow as RATE_LIMIT_LOGIN_FAILURES allows; the owner's correct
    password from their own address still gets in; successful logins cost nothing."""
    victim, bystander = make_user(email="victim@example.com"), make_user(email="bystander@example.com")
    limited = limited_app(RATE_LIMIT_LOGIN="100 per minute", RATE_LIMIT_LOGIN_FAILURES="2 per minute",
                          RATE_LIMIT_LOGIN_FAILURES_ACCOUNT="5 per minute")
    client = limited.test_client()

    def login(email: str, password: str, address: str):
        return client.post("/api/v1/auth/token", json={"email": email, "password": password},
                           environ_base={"REMOTE_ADDR": address})

    for _ in range(3):  # successful logins cost nothing
        assert login(victim.email, PASSWORD, "10.0.0.1").status_code == 200
    for _ in range(2):
        assert login(" Victim@Example.com", "guess-guess", "10.6.6.6").status_code == 401
    # The guesser's budget for this account is spent: even the right password is refused there.
    assert_rate_limited(login(victim.email, PASSWORD, "10.6.6.6"), "login-failures", limited)
    assert_rate_limited(login(victim.email, "next-guess", "10.6.6.6"), "login-failures", limited)
    assert login(victim.email, PASSWORD, "10.0.0.1").status_code == 200  # the owner still gets in
    assert login(bystander.email, PASSWORD, "10.6.6.6").status_code == 200  # other accounts too


def test_refused_logins_of_one_account_have_a_ceiling_over_every_address(app, make_user, limited_app):
    """Guessing from many addresses at once is bounded by RATE_LIMIT_LOGIN_FAILURES_ACCOUNT."""
    victim, bystander = make_user(email="victim@example.com"), make_user(email="bystander@example.com")
    limited = limited_app(RATE_LIMIT_LOGIN="100 per minute", RATE_LIMIT_LOGIN_FAILURES="2 per minute",
                          RATE_LIMIT_LOGIN_FAILURES_ACCOUNT="5 per minute")
    client = limited.test_client()
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.3"):
        wrong = client.post("/api/v1/auth/token", json={"email": victim.email, "password": "guess-guess"},
                            environ_base={"REMOTE_ADDR": address})
        assert wrong.status_code == 401
    blocked = client.post("/api/v1/auth/token", json={"email": victim.email, "password": PASSWORD},
                          environ_base={"REMOTE_ADDR": "10.0.0.4"})
    assert_rate_limited(blocked, "login-failures-account", limited)
    ok = client.post("/api/v1/auth/token", json={"email": bystander.email, "password": PASSWORD},
                     environ_base={"REMOTE_ADDR": "10.0.0.4"})
    assert ok.status_code == 200


def test_wrong_current_passwords_are_limited_per_user(app, make_user, limited_app):
    """Guessing through PATCH's current_password with a stolen token is as slow as at login."""
    me, bystander = make_user(email="me@example.com"), make_user(email="bystander@example.com")
    limited = limited_app(RATE_LIMIT_LOGIN_FAILURES="2 per minute")
    client = limited.test_client()
    with limited.app_context():
        mine, theirs = bearer(me), bearer(bystander)
    path = f"/api/v1/users/{me.id}"
    others = [({"name": "Renamed"}, 200), ({"password": "no-current-one"}, 403), ({"role": "admin"}, 403)]
    for changes, status in others * 2:  # cost nothing
        assert client.patch(path, json=changes, headers=mine).status_code == status
    for _ in range(2):
        wrong = client.patch(path, json={"password": "new-password", "current_password": "guess-guess"},
                             headers=mine)
        assert assert_problem(wrong, 403)["detail"] == "The current password is wrong."
    right = client.patch(path, json={"password": "new-password", "current_password": PASSWORD}, headers=mine)
    assert_rate_limited(right, "login-failures", limited)
    assert_rate_limited(client.patch(path, json={"name": "x"}, headers=mine), "login-failures", limited)
    bystanders = client.patch(f"/api/v1/users/{bystander.id}", json={"name": "y"}, headers=theirs)
    assert bystanders.status_code == 200  # another user's budget
    login = client.post("/api/v1/auth/token", json={"email": me.email, "password": PASSWORD})
    assert login.status_code == 200  # the token endpoint's, per email


def test_writes_are_limited_per_user(app, make_user, limited_app):
    first, second = make_user(Role.ADMIN, email="a@example.com"), make_user(Role.ADMIN, email="b@example.com")
    limited = limited_app(RATE_LIMIT_WRITES="2 per minute")
    client = limited.test_client()
    with limited.app_context():
        first_auth, second_auth = bearer(first), bearer(second)
    for i in range(2):
        created = client.post("/api/v1/users", json={**NEW, "email": f"n{i}@example.com"}, headers=first_auth)
        assert created.status_code == 201
    response = client.patch("/api/v1/users/1", json={"name": "x"}, headers=first_auth)
    assert_rate_limited(response, "writes", limited)
    assert (
        client.post("/api/v1/users", json={**NEW, "email": "m@example.com"}, headers=second_auth).status_code
        == 201
    )
    assert client.get("/api/v1/users", headers=first_auth).status_code == 200  # reads have their own limit


def test_reads_are_limited_per_user(app, make_user, limited_app):
    """One token cannot page through every profile: RATE_LIMIT_READS per user, 429 with Retry-After."""
    first, second = make_user(email="reader@example.com"), make_user(email="other@example.com")
    limited = limited_app(RATE_LIMIT_READS="2 per minute")
    client = limited.test_client()
    with limited.app_context():
        first_auth, second_auth = bearer(first), bearer(second)
    for _ in range(2):
        assert client.get(f"/api/v1/users/{second.id}", headers=first_auth).status_code == 200
    response = client.get("/api/v1/users/me", headers=first_auth)
    assert_rate_limited(response, "reads", limited)
    assert client.get(f"/api/v1/users/{first.id}", headers=second_auth).status_code == 200
    written = client.post("/api/v1/users", json={**NEW, "email": "w@example.com"}, headers=first_auth)
    assert written.status_code == 201  # writes have their own budget


def test_limits_can_be_switched_off(app, make_user, limited_app):
    user = make_user()
    limited = limited_app(RATE_LIMIT_LOGIN="1 per minute", RATE_LIMIT_ENABLED="false")
    client = limited.test_client()
    for _ in range(3):
        assert (
            client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD}).status_code
            == 200
        )


def test_a_body_too_deep_to_parse_is_400_and_leaves_the_limiter_alone(client, app):
    deep = b"[" * 5000 + b"]" * 5000
    response = client.post("/api/v1/auth/token", data=deep, content_type="application/json")
    assert_problem(response, 400)
    assert metric_value(app, "lookout_rate_limit_fallback") == 0  # not mistaken for a storage failure


@pytest.mark.parametrize("setting", ["RATE_LIMIT_LOGIN", "RATE_LIMIT_LOGIN_FAILURES", "RATE_LIMIT_READS",
                                     "RATE_LIMIT_LOGIN_FAILURES_ACCOUNT", "RATE_LIMIT_WRITES"])
def test_a_malformed_limit_is_refused_naming_the_setting(setting):
    with pytest.raises(ConfigError, match=setting):
        load_config({setting: "lots"}, default_env="testing")


def test_storage_must_be_memory_or_redis():
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URL"):
        load_config({"RATE_LIMIT_STORAGE_URL": "memcached://x"}, default_env="testing")


def test_spec_documents_429_with_retry_after(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    limited = [
        ("/api/v1/auth/token", "post"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{user_id}", "patch"),
        ("/api/v1/users/{user_id}", "delete"),
    ]
    for path, method in limited:
        response = paths[path][method]["responses"]["429"]
        assert "Retry-After" in response["headers"], (path, method)
    assert "429" in paths["/api/v1/users"]["get"]["responses"]  # reads of the users too
    assert "429" not in paths["/livez"]["get"]["responses"]


def test_redis_storage_shares_one_budget_between_processes(app, make_user, database_url, redis_url):
    """Two apps (as two gunicorn workers or pods would be) count against one limit in Redis."""
    import uuid

    import redis

    user = make_user()
    prefix = f"lookout-test-{uuid.uuid4().hex[:8]}"
    settings = {
        "DATABASE_URL": database_url,
        "RATE_LIMIT_STORAGE_URL": redis_url,
        "RATE_LIMIT_KEY_PREFIX": prefix,
        "RATE_LIMIT_LOGIN": "4 per minute",
    }
    first, second = create_app(settings).test_client(), create_app(settings).test_client()
    login = {"email": user.email, "password": PASSWORD}
    statuses = [
        client.post("/api/v1/auth/token", json=login).status_code
        for client in (first, second, first, second, first, second)
    ]
    assert statuses == [200, 200, 200, 200, 429, 429]
    storage = redis.Redis.from_url(redis_url)
    keys = storage.keys(f"*{prefix}*")
    assert keys, "nothing was stored in Redis"
    storage.delete(*keys)


def test_a_process_counting_alone_says_so_until_its_store_is_back(app, make_user, database_url, redis_url):
    """lookout_rate_limit_fallback: 0 on Redis, 1 while the store does not answer, 0 again after."""
    import uuid
    from urllib.parse import urlsplit

    from faults import TCPProxy

    from loadtests.harness import wait_until

    make_user()
    upstream = urlsplit(redis_url)
    with TCPProxy(upstream.port or 6379) as proxy:
        limited = create_app({
            "DATABASE_URL": database_url,
            "RATE_LIMIT_STORAGE_URL": f"redis://127.0.0.1:{proxy.port}{upstream.path or '/0'}",
            "RATE_LIMIT_STORAGE_TIMEOUT": "0.3",
            "RATE_LIMIT_KEY_PREFIX": f"lookout-test-{uuid.uuid4().hex[:8]}",
        })
        client = limited.test_client()

        def refused_login() -> float | None:
            login = {"email": "nobody@example.com", "password": "x"}
            response = client.post("/api/v1/auth/token", json=login)
            assert response.status_code == 401, response.get_data(as_text=True)
            return metric_value(limited, "lookout_rate_limit_fallback")

        assert metric_value(limited, "lookout_rate_limit_fallback") == 0  # exposed before any write
        assert refused_login() == 0
        proxy.cut()
        assert refused_login() == 1
        assert client.get("/api/v1/users").status_code in (200, 401)  # reads leave it as it is
        assert metric_value(limited, "lookout_rate_limit_fallback") == 1
        proxy.restore()
        # Flask-Limiter retries the store with back-off from 1 s.
        wait_until(lambda: refused_login() == 0, "the process to go back to its store", interval=0.5)


def test_the_app_refuses_to_start_when_flask_limiter_moves_its_hooks(database_url, monkeypatch):
    """Reads skip the limiter by rewiring the request hooks Flask-Limiter registers; a release
    that registers them another way stops the app, naming the version, instead of leaving
    writes unlimited or reads paying for it."""
    import flask_limiter

    from app import ratelimit

    class Wrapped(flask_limiter.Limiter):
        def init_app(self, app):
            super().init_app(app)
            hooks = app.before_request_funcs[None]
            hooks[:] = [(lambda: self._check_request_limit()) if getattr(hook, "__self__", None) is self
                        else hook for hook in hooks]

    monkeypatch.setattr(ratelimit, "Limiter", Wrapped)
    version = re.escape(flask_limiter.__version__)
    with pytest.raises(RuntimeError, match=rf"^Flask-Limiter {version} registers 0 .*before_request_funcs"):
        create_app({"DATABASE_URL": database_url})


def test_a_store_that_refuses_connections_is_counted_in_memory_and_reported(database_url):
    """No Redis needed: a store that refuses every connection puts the process in Flask-Limiter's
    in-memory fallback, where the same limits apply, and lookout_rate_limit_fallback says so."""
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound and never listening: connections are refused
        limited = create_app({
            "DATABASE_URL": database_url,
            "RATE_LIMIT_STORAGE_URL": f"redis://127.0.0.1:{unused.getsockname()[1]}/0",
            "RATE_LIMIT_LOGIN": "2 per minute",
        })
        client = limited.test_client()
        assert metric_value(limited, "lookout_rate_limit_fallback") == 0
        login = {"email": "nobody@example.com", "password": "x"}
        statuses = [client.post("/api/v1/auth/token", json=login).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        assert metric_value(limited, "lookout_rate_limit_fallback") == 1


def test_each_app_counts_with_its_own_limiter(app, make_user, limited_app):
    """Apps built later in the same process neither reset nor change an earlier app's limits."""
    user = make_user()
    login = {"email": user.email, "password": PASSWORD}
    strict = limited_app(RATE_LIMIT_LOGIN="1 per minute")
    assert strict.test_client().post("/api/v1/auth/token", json=login).status_code == 200
    relaxed = limited_app(RATE_LIMIT_LOGIN="100 per minute", RATE_LIMIT_KEY_PREFIX="relaxed")
    off = limited_app(RATE_LIMIT_ENABLED="false")
    assert [relaxed.test_client().post("/api/v1/auth/token", json=login).status_code
            for _ in range(2)] == [200, 200]
    assert [off.test_client().post("/api/v1/auth/token", json=login).status_code
            for _ in range(2)] == [200, 200]
    assert_rate_limited(strict.test_client().post("/api/v1/auth/token", json=login), "login", strict)

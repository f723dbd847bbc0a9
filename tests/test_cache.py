"""The Redis read cache (app/cache.py) on SQLite and PostgreSQL with a real Redis: hits and
misses, views never shared between kinds of callers, writes visible at once from another
process's app, the stale-set race, and a Redis that does not answer."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PASSWORD, empty_users, metric_value
from conftest import bearer as bearer_in_context
from faults import BlackHole
from sqlalchemy import event

from app import create_app
from app.cache import UserCache, build_client, cache_of
from app.config import ConfigError
from app.extensions import db
from app.models import Role, User
from app.records import UserRecord, read_user


@pytest.fixture
def prefix() -> str:
    return f"test-cache-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_app(database_url: str, redis_url: str, prefix: str) -> Iterator[Callable[..., Any]]:
    """Apps on one database and one Redis: each stands for another process or pod."""
    apps: list[Any] = []

    def make(**settings: Any) -> Any:
        app = create_app({"DATABASE_URL": database_url, "CACHE_URL": redis_url, "CACHE_KEY_PREFIX": prefix,
                          "RATE_LIMIT_ENABLED": False, **settings})
        apps.append(app)
        return app

    yield make
    with apps[0].app_context():
        empty_users()
    for app in apps[1:]:
        with app.app_context():
            db.engine.dispose()
    client = build_client(redis_url, 1.0)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def add_user(app: Any, role: Role = Role.USER, email: str | None = None,
             created_by: int | None = None) -> User:
    from app.auth.passwords import hash_password

    with app.app_context():
        user = User(email=email or f"{uuid.uuid4().hex[:10]}@example.com", name="Cached", role=role,
                    password_hash=hash_password(PASSWORD), created_by_id=created_by)
        db.session.add(user)
        db.session.commit()
        db.session.refresh(user)
        db.session.expunge(user)
        return user


@functools.cache
def signer() -> Any:
    return create_app({"DATABASE_URL": "sqlite://"})  # signs with the tests' key


def bearer(user: User) -> dict[str, str]:
    with signer().app_context():
        return bearer_in_context(user)


def counts(app: Any) -> tuple[float, float]:
    hits = metric_value(app, "lookout_cache_hits_total", {"cache": "users"}) or 0
    misses = metric_value(app, "lookout_cache_misses_total", {"cache": "users"}) or 0
    return hits, misses


def test_a_second_read_is_a_hit_and_the_record_is_the_same(make_app: Callable[..., Any]) -> None:
    app = make_app()
    admin, other = add_user(app, Role.ADMIN), add_user(app)
    client = app.test_client()
    first = client.get(f"/api/v1/users/{other.id}", headers=bearer(admin))
    assert first.status_code == 200
    assert counts(app) == (0, 2)  # the caller's record and the user's, both from the database
    second = client.get(f"/api/v1/users/{other.id}", headers=bearer(admin))
    assert second.get_json() == first.get_json()
    assert counts(app) == (2, 2)
    with app.test_request_context():
        assert read_user(other.id) == read_user(other.id)  # a cached record reads back equal


@pytest.mark.parametrize("order", ["admin first", "user first"])
def test_a_view_is_never_served_to_another_kind_of_caller(make_app: Callable[..., Any], order: str) -> None:
    app = make_app()
    admin, reader, target = add_user(app, Role.ADMIN), add_user(app), add_user(app)
    client = app.test_client()
    callers = [admin, reader] if order == "admin first" else [reader, admin]
    for caller in callers * 2:  # the second pass is served from the cache
        body = client.get(f"/api/v1/users/{target.id}", headers=bearer(caller)).get_json()
        if caller is admin:
            assert body["email"] == target.email and body["role"] == "user"
        else:
            assert body == {"id": target.id, "name": target.name}
    assert counts(app)[0] > 0


def test_a_write_is_visible_to_the_next_read_from_another_process(make_app: Callable[..., Any]) -> None:
    one, two = make_app(), make_app()
    admin, target = add_user(one, Role.ADMIN), add_user(one)
    path = f"/api/v1/users/{target.id}"
    assert two.test_client().get(path, headers=bearer(admin)).get_json()["name"] == "Cached"
    changed = one.test_client().patch(path, json={"name": "Renamed"}, headers=bearer(admin))
    assert changed.status_code == 200
    assert two.test_client().get(path, headers=bearer(admin)).get_json()["name"] == "Renamed"
    assert metric_value(one, "lookout_cache_invalidations_total", {"cache": "users"}) == 1


def test_a_changed_password_ends_old_tokens_at_once_everywhere(make_app: Callable[..., Any]) -> None:
    one, two = make_app(), make_app()
    user = add_user(one)
    old = bearer(user)
    assert two.test_client().get("/api/v1/users/me", headers=old).status_code == 200  # cached there
    changed = one.test_client().patch(f"/api/v1/users/{user.id}", headers=old,
                                      json={"password": "another-password-1", "current_password": PASSWORD})
    assert changed.status_code == 200
    assert two.test_client().get("/api/v1/users/me", headers=old).status_code == 401


def test_a_deleted_user_is_gone_at_once_everywhere(make_app: Callable[..., Any]) -> None:
    one, two = make_app(), make_app()
    admin = add_user(one, Role.ADMIN)
    user = add_user(one, created_by=admin.id)
    created = add_user(one, created_by=user.id)
    for headers, path in ((bearer(user), "/api/v1/users/me"), (bearer(admin), f"/api/v1/users/{created.id}")):
        assert two.test_client().get(path, headers=headers).status_code == 200  # cached there
    assert one.test_client().delete(f"/api/v1/users/{user.id}", headers=bearer(admin)).status_code == 204
    assert two.test_client().get("/api/v1/users/me", headers=bearer(user)).status_code == 401
    assert two.test_client().get(f"/api/v1/users/{user.id}", headers=bearer(admin)).status_code == 404
    # ON DELETE SET NULL changed the records of the users they had created: not cached stale.
    body = two.test_client().get(f"/api/v1/users/{created.id}", headers=bearer(admin)).get_json()
    assert body["created_by"] is None


class UnversionedCache(UserCache):
    """Fills without the generation check: the stale-set race the test must be able to see."""

    def fill(self, user_id: int, ticket: bytes | None, value: bytes) -> None:
        if ticket is not None:
            self.client().set(self.keys(user_id)[0], value, px=self.ttl_ms)


def race(make_app: Callable[..., Any], cache_class: type[UserCache]) -> str:
    """A reader misses and reads the row, and is held (a slowed database) until a writer has
    committed and invalidated; then it fills. The name the next read returns."""
    reader_app, writer_app = make_app(), make_app()
    old = cache_of(reader_app)
    assert old is not None
    reader_app.extensions["lookout.cache"] = cache_class(
        old.url, 60, old.timeout, old.retry_seconds, old.prefix)
    target = add_user(writer_app)
    read_done, written = threading.Event(), threading.Event()
    holder: dict[str, Any] = {}  # the reader thread, and the record it read

    with reader_app.app_context():
        engine = db.engine

    @event.listens_for(engine, "after_cursor_execute")
    def _slow(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is holder.get("thread") and "FROM users" in statement:
            read_done.set()
            assert written.wait(10), "the writer never finished"

    def read() -> None:
        holder["thread"] = threading.current_thread()
        with reader_app.test_request_context():
            holder["record"] = read_user(target.id)
            db.session.remove()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        assert read_done.wait(10), "the reader never read"
        with writer_app.app_context():
            user = db.session.get(User, target.id)
            assert user is not None
            user.name = "Written"
            db.session.commit()
            from app.records import forget_users

            forget_users(target.id)
        written.set()
        thread.join(10)
    finally:
        written.set()
        event.remove(engine, "after_cursor_execute", _slow)
    assert holder["record"].name == "Cached"  # the reader did read the old row
    with reader_app.test_request_context():
        record = read_user(target.id)
        db.session.remove()
    assert record is not None
    return record.name


def test_a_read_overtaken_by_a_write_cannot_put_the_old_record_back(make_app: Callable[..., Any]) -> None:
    assert race(make_app, UserCache) == "Written"


def test_the_race_test_sees_the_stale_set_without_versions(make_app: Callable[..., Any]) -> None:
    assert race(make_app, UnversionedCache) == "Cached"


def test_a_redis_that_does_not_answer_costs_one_timeout_then_is_bypassed(
        make_app: Callable[..., Any]) -> None:
    with BlackHole() as hole:
        app = make_app(CACHE_URL=f"redis://127.0.0.1:{hole.port}/0", CACHE_TIMEOUT=0.1,
                       CACHE_RETRY_SECONDS=60)
        admin, other = add_user(app, Role.ADMIN), add_user(app)
        client = app.test_client()
        started = time.monotonic()
        first = client.get(f"/api/v1/users/{other.id}", headers=bearer(admin))
        first_seconds = time.monotonic() - started
        assert first.status_code == 200 and first.get_json()["email"] == other.email
        assert first_seconds < 1.0  # one call: 0.1 s and one retry, then the database
        assert metric_value(app, "lookout_cache_errors_total", {"cache": "users"}) == 1
        assert metric_value(app, "lookout_cache_bypassed", {"cache": "users"}) == 1
        started = time.monotonic()
        for _ in range(5):
            assert client.get(f"/api/v1/users/{other.id}", headers=bearer(admin)).status_code == 200
        assert time.monotonic() - started < first_seconds * 5  # bypassed: no more timeouts
        assert metric_value(app, "lookout_cache_errors_total", {"cache": "users"}) == 1


def test_a_write_while_redis_fails_still_answers(make_app: Callable[..., Any]) -> None:
    with BlackHole() as hole:
        app = make_app(CACHE_URL=f"redis://127.0.0.1:{hole.port}/0", CACHE_TIMEOUT=0.1)
        admin, other = add_user(app, Role.ADMIN), add_user(app)
        changed = app.test_client().patch(f"/api/v1/users/{other.id}", json={"name": "Still"},
                                          headers=bearer(admin))
        assert changed.status_code == 200 and changed.get_json()["name"] == "Still"
        assert (metric_value(app, "lookout_cache_errors_total", {"cache": "users"}) or 0) >= 1


def test_the_client_gives_up_fast() -> None:
    client = build_client("redis://127.0.0.1:6379/0", 0.15)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.15 and kwargs["socket_connect_timeout"] == 0.15
    assert kwargs["retry"].get_retries() == 1
    assert client.connection_pool.timeout == 0.15  # type: ignore[attr-defined]  # a BlockingConnectionPool


@pytest.mark.parametrize("url", ["memory://", "http://redis:6379", "redis"])
def test_a_bad_cache_url_stops_the_start(url: str) -> None:
    with pytest.raises(ConfigError, match="CACHE_URL"):
        create_app({"DATABASE_URL": "sqlite://", "CACHE_URL": url})


def test_without_a_cache_url_there_is_no_cache() -> None:
    app = create_app({"DATABASE_URL": "sqlite://"})
    assert cache_of(app) is None


def test_a_record_survives_the_cache_unchanged(make_app: Callable[..., Any]) -> None:
    app = make_app()
    user = add_user(app, Role.ADMIN, created_by=None)
    with app.test_request_context():
        record = read_user(user.id)
    assert record is not None and record.is_admin
    assert UserRecord.loads(record.dumps()) == record


class FailingCache(UserCache):
    """A writer's cache whose invalidation fails, while reads and fills still reach Redis."""

    def invalidate(self, user_ids: Any) -> bool:
        self.errors.inc()
        return False


@pytest.fixture
def relay_for(amqp_url: str) -> Iterator[Callable[..., Any]]:
    """Relays on an app's database, publishing to this session's vhost; outbox emptied around."""
    import pika
    from sqlalchemy import delete

    from app.models import OutboxEvent
    from app.platform.messaging import NOTIFIER_QUEUE, declare_topology
    from app.relay import Relay

    made: list[tuple[Any, Relay]] = []

    def make(app: Any, cache: UserCache | None) -> Relay:
        with app.app_context():
            db.session.execute(delete(OutboxEvent))
            db.session.commit()
            relay = Relay(db.engine, amqp_url, cache=cache)
        made.append((app, relay))
        return relay

    yield make
    for app, relay in made:
        relay.disconnect()
        with app.app_context():
            db.session.execute(delete(OutboxEvent))
            db.session.commit()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_topology(channel)
    channel.queue_purge(NOTIFIER_QUEUE)
    connection.close()


def relay_metric(relay: Any, name: str) -> float:
    return relay.metrics.registry.get_sample_value(name) or 0


def test_the_relay_corrects_a_write_whose_own_invalidation_failed(
        make_app: Callable[..., Any], relay_for: Callable[..., Any], redis_url: str, prefix: str) -> None:
    writer, reader = make_app(), make_app()
    live = cache_of(writer)
    assert live is not None
    failing = FailingCache(redis_url, 60, 1.0, 5.0, prefix)
    writer.extensions["lookout.cache"] = failing  # this process's invalidations fail, nothing else
    user = add_user(writer)
    relay = relay_for(writer, UserCache(redis_url, 60, 1.0, 5.0, prefix))
    old = bearer(user)
    assert reader.test_client().get("/api/v1/users/me", headers=old).status_code == 200  # cached
    password = {"password": "another-password-1", "current_password": PASSWORD}
    changed = writer.test_client().patch(f"/api/v1/users/{user.id}", headers=old, json=password)
    assert changed.status_code == 200
    # The writer could not forget the record: the reader still accepts the old password's token.
    assert reader.test_client().get("/api/v1/users/me", headers=old).status_code == 200
    assert relay.relay_once() == 1  # the user.password_changed event
    assert reader.test_client().get("/api/v1/users/me", headers=old).status_code == 401
    assert relay_metric(relay, "lookout_relay_cache_invalidations_total") == 1
    assert relay_metric(relay, "lookout_relay_cache_owed") == 0


def test_a_failed_relay_invalidation_is_owed_and_retried_without_holding_publishing(
        make_app: Callable[..., Any], relay_for: Callable[..., Any], redis_url: str, prefix: str) -> None:
    writer, reader = make_app(), make_app()
    writer.extensions["lookout.cache"] = FailingCache(redis_url, 60, 1.0, 5.0, prefix)
    admin, user = add_user(writer, Role.ADMIN), add_user(writer)
    path = f"/api/v1/users/{user.id}"
    with BlackHole() as hole:
        dead = UserCache(f"redis://127.0.0.1:{hole.port}/0", 60, 0.1, 60.0, prefix)
        relay = relay_for(writer, dead)
        assert reader.test_client().get(path, headers=bearer(admin)).get_json()["email"] == user.email
        changed = writer.test_client().patch(path, json={"email": "moved@example.com"}, headers=bearer(admin))
        assert changed.status_code == 200  # a user.email_changed event
        started = time.monotonic()
        assert relay.relay_once() == 1  # published although Redis did not answer
        assert time.monotonic() - started < 1.0  # one bounded call: 0.1 s and one retry
        assert relay_metric(relay, "lookout_relay_cache_invalidation_failures_total") == 1
        assert relay_metric(relay, "lookout_relay_cache_owed") == 1
        assert relay.relay_once() == 0
        assert relay_metric(relay, "lookout_relay_cache_invalidation_failures_total") == 1  # waits 60 s
    assert reader.test_client().get(path, headers=bearer(admin)).get_json()["email"] == user.email  # stale
    relay.cache = UserCache(redis_url, 60, 1.0, 5.0, prefix)  # Redis answers the relay again
    relay.cache_retry_at = 0.0  # the retry interval over
    assert relay.relay_once() == 0  # nothing to publish; the owed user is forgotten
    assert relay_metric(relay, "lookout_relay_cache_owed") == 0
    assert relay_metric(relay, "lookout_relay_cache_invalidations_total") == 1
    assert reader.test_client().get(path, headers=bearer(admin)).get_json()["email"] == "moved@example.com"


def test_an_owed_invalidation_is_dropped_once_the_ttl_has_removed_the_record(redis_url: str) -> None:
    from app.relay import Relay

    with BlackHole() as hole:
        dead = UserCache(f"redis://127.0.0.1:{hole.port}/0", 1, 0.05, 0.01, "unused")
        relay = Relay(db_engine_for_sqlite(), "amqp://unused", cache=dead)
        relay.forget([5])
        assert relay.owed and relay_metric(relay, "lookout_relay_cache_owed") == 1
        relay.owed[5] = time.monotonic() - 0.001  # as if CACHE_TTL_SECONDS had passed
        relay.cache_retry_at = 0.0
        relay.forget(())
        assert not relay.owed and relay_metric(relay, "lookout_relay_cache_owed") == 0
        assert relay_metric(relay, "lookout_relay_cache_invalidation_failures_total") == 1


def db_engine_for_sqlite() -> Any:
    from sqlalchemy import create_engine

    return create_engine("sqlite://")

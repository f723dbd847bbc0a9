"""Fixtures: ``database_url`` (SQLite always, PostgreSQL when TEST_DATABASE_URL is set, MariaDB or
MySQL when TEST_MYSQL_URL is set) ->
``app`` -> ``client``; ``make_user`` and ``auth_headers`` for authenticated calls.

Every process the harness (loadtests/harness) starts during the session, in this process or in
one the tests start, is recorded; one still running when the session ends is killed, and the
session fails naming it.

Environment:
    TEST_DATABASE_URL       PostgreSQL server for the PostgreSQL leg (a fresh database is
                            created per session and dropped after)
    TEST_MYSQL_URL          MariaDB/MySQL server (mysql://root@127.0.0.1:3306/test) for the
                            MySQL leg (fresh databases per session, dropped after)
    TEST_AMQP_URL           RabbitMQ (amqp://guest:guest@127.0.0.1:5672/%2F) for the user events
    TEST_REDIS_URL          Redis server for the shared rate-limit storage tests (keys under a
                            prefix of their own)
    LOOKOUT_REQUIRE_SERVICES=1  turn "skip because a service is missing" into a failure (CI)
    HYPOTHESIS_PROFILE=ci   property tests draw the same examples on every run (CI)
"""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis
import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import create_app
from app.auth.passwords import hash_password
from app.auth.tokens import issue_token
from app.extensions import db
from app.models import Role, User
from loadtests import harness

PASSWORD = "correct horse battery"
# Importing locust (the load-test tests do) would monkey-patch this process for gevent; the suite
# needs Locust's classes, not the patching. Load runs start Locust as its own process.
os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
REQUIRE_SERVICES = os.environ.get("LOOKOUT_REQUIRE_SERVICES") == "1"

# Hypothesis' advice for CI: a fixed seed per test, so a red build is caused by the change it
# tests. Laptops keep exploring new examples on every run; a failure prints how to reproduce it,
# and the case then becomes a plain regression test.
hypothesis.settings.register_profile("ci", derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# This session's own record of started processes (a nested session, as in test_ci_gate, gets its
# own), which the processes the tests start inherit and add to.
os.environ[harness.PID_FILE] = tempfile.mkstemp(prefix="lookout-test-pids-")[1]

# A shell without job control starts a background command with SIGINT ignored, and an ignored
# signal stays ignored in every program started after it: the tests that press Ctrl-C on a load
# run would then test nothing. A handler (unlike SIG_IGN) is reset to the default by exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A process started during the session and still running fails the run; where services
    are mandatory (CI), so does a skipped test."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    leftover = harness.reap()
    pid_file = os.environ.pop(harness.PID_FILE, None)
    if pid_file:
        os.unlink(pid_file)
    if leftover:
        lines = "\n".join(f"  {pid}: {what}" for pid, what in leftover)
        message = f"{len(leftover)} processes started by the tests outlived them (now killed):\n{lines}"
        if reporter:
            reporter.write_line(message, red=True)
        else:
            print(message)
        if session.exitstatus == pytest.ExitCode.OK:  # an interrupted or failed run keeps its status
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if REQUIRE_SERVICES and skipped and session.exitstatus == 0:
        reporter.write_line(f"LOOKOUT_REQUIRE_SERVICES=1: {len(skipped)} skipped tests count as failures",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def service_missing(reason: str) -> None:
    """Skip on a laptop without the service; fail where the service is mandatory (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (LOOKOUT_REQUIRE_SERVICES=1 makes this mandatory)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        service_missing("TEST_DATABASE_URL is not set")
    return url


@pytest.fixture(scope="session")
def mysql_server_url() -> str:
    url = os.environ.get("TEST_MYSQL_URL")
    if not url:
        service_missing("TEST_MYSQL_URL is not set")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """TEST_REDIS_URL, checked to answer."""
    import redis

    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        service_missing("TEST_REDIS_URL is not set")
    try:
        redis.Redis.from_url(url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at TEST_REDIS_URL does not answer: {exc}")
    return url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A virtual host of its own on the RabbitMQ at TEST_AMQP_URL, for this session only.

    Queues and exchanges have fixed names (app/platform/messaging.py), so test sessions running
    side by side on one broker would take each other's messages; a fresh vhost per session keeps
    them apart. It is made with rabbitmqctl (on the broker's machine); without it the URL's own
    vhost is used as it is.
    """
    import shutil
    import subprocess
    from urllib.parse import quote, urlsplit, urlunsplit

    import pika
    import pika.exceptions

    url = os.environ.get("TEST_AMQP_URL")
    if not url:
        service_missing("TEST_AMQP_URL is not set")
    params = pika.URLParameters(url)
    params.socket_timeout = params.blocked_connection_timeout = 5
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.AMQPError as exc:
        service_missing(f"RabbitMQ at TEST_AMQP_URL does not answer: {exc!r}")
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        yield url
        return
    vhost = f"lookout-test-{uuid.uuid4().hex[:12]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run([ctl, "set_permissions", "-p", vhost, params.credentials.username, ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    parts = urlsplit(url)
    try:
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh, empty PostgreSQL databases, all dropped at session end."""
    import psycopg

    server = make_url(postgres_server_url).set(drivername="postgresql")
    admin_dsn = server.render_as_string(hide_password=False)
    created: list[str] = []

    def create() -> str:
        name = f"lookout_test_{uuid.uuid4().hex[:12]}"
        try:
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as exc:
            service_missing(f"PostgreSQL at TEST_DATABASE_URL does not answer: {exc}")
        created.append(name)
        return server.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False)

    yield create
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def new_mysql_database(mysql_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh, empty MariaDB/MySQL databases (utf8mb4), all dropped at session end."""
    import pymysql

    server = make_url(mysql_server_url)
    created: list[str] = []

    def admin() -> Any:
        return pymysql.connect(host=server.host or "127.0.0.1", port=server.port or 3306,
                               user=server.username or "root", password=server.password or "",
                               connect_timeout=5, autocommit=True)

    def create() -> str:
        name = f"lookout_test_{uuid.uuid4().hex[:12]}"
        try:
            with admin() as conn, conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        except pymysql.MySQLError as exc:
            service_missing(f"MySQL at TEST_MYSQL_URL does not answer: {exc}")
        created.append(name)
        return server.set(drivername="mysql+pymysql", database=name).render_as_string(hide_password=False)

    yield create
    if created:
        with admin() as conn, conn.cursor() as cursor:
            for name in created:
                cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


# The server databases beside SQLite; each test that uses ``database_url`` runs on every one.
SERVERS = {"postgresql": "new_postgres_database", "mysql": "new_mysql_database"}
SERVER_PARAMS = [pytest.param("postgresql", marks=pytest.mark.postgres),
                 pytest.param("mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=SERVER_PARAMS)
def new_database(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Factory of fresh, empty databases: each test that uses it runs on PostgreSQL and MySQL."""
    return request.getfixturevalue(SERVERS[request.param])


@pytest.fixture(scope="session")
def migrated_urls() -> dict[str, str]:
    """One migrated database per backend per session, created on first use."""
    return {}


def _migrated_url(request: pytest.FixtureRequest, backend: str) -> str:
    """A migrated database per backend per session, created on first use."""
    urls = request.getfixturevalue("migrated_urls")
    if backend not in urls:
        if backend == "sqlite":
            url = f"sqlite:///{request.getfixturevalue('tmp_path_factory').mktemp('db') / 'test.db'}"
        else:
            url = request.getfixturevalue(SERVERS[backend])()
        migrate(url)
        urls[backend] = url
    return urls[backend]


@pytest.fixture(params=["sqlite", *SERVER_PARAMS])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that uses the database runs on SQLite, PostgreSQL and MySQL (MariaDB)."""
    return _migrated_url(request, request.param)


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest) -> str:
    """For tests about processes rather than databases: SQLite only."""
    return _migrated_url(request, "sqlite")


def migrate(url: str) -> None:
    from flask_migrate import upgrade

    with create_app({"DATABASE_URL": url}).app_context():
        upgrade()


def add_admin(url: str, email: str = "admin@example.com") -> None:
    """An admin with PASSWORD in the database at ``url``, for tests that serve it from gunicorn."""
    app = create_app({"DATABASE_URL": url})
    with app.app_context():
        db.session.add(
            User(email=email, name="Admin", role=Role.ADMIN, password_hash=hash_password(PASSWORD))
        )
        db.session.commit()
        db.engine.dispose()


@pytest.fixture
def app(database_url: str) -> Iterator[Any]:
    app = create_app({"DATABASE_URL": database_url})
    with app.app_context():
        yield app
        empty_users()


@pytest.fixture
def outbox(app: Any) -> Iterator[None]:
    """An empty outbox before and after the test (the ``app`` fixture empties only the users)."""
    from sqlalchemy import delete

    from app.models import OutboxEvent

    db.session.execute(delete(OutboxEvent))
    db.session.commit()
    yield
    db.session.rollback()
    db.session.execute(delete(OutboxEvent))
    db.session.commit()


def empty_users() -> None:
    """Remove every user (ids restart on PostgreSQL only) and close the app's connections."""
    db.session.remove()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE users RESTART IDENTITY CASCADE"))
        else:
            conn.execute(text("DELETE FROM users"))
    db.engine.dispose()


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_user(app: Any) -> Callable[..., User]:
    counter = iter(range(1, 10_000))

    def make(role: Role = Role.USER, email: str | None = None, name: str = "Test User",
             password: str = PASSWORD) -> User:
        user = User(email=email or f"user{next(counter)}@example.com", name=name, role=role,
                    password_hash=hash_password(password))
        db.session.add(user)
        db.session.commit()
        return user

    return make


def bearer(user: User) -> dict[str, str]:
    token, _ = issue_token(user.id, user.role.value, user.token_version)
    return {"Authorization": f"Bearer {token}"}


def server_bearer(user: User) -> dict[str, str]:
    """``bearer`` for a server the harness started, which signs with its production secrets."""
    keys = {name: harness.PRODUCTION_SECRETS[name] for name in ("JWT_PRIVATE_KEY", "JWT_KEY_ID")}
    claims = (user.id, user.role.value, user.token_version)  # read in the test's own app context
    with create_app({"DATABASE_URL": "sqlite://", **keys}).app_context():
        token, _ = issue_token(*claims)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_headers(make_user: Callable[..., User]) -> dict[str, str]:
    return bearer(make_user(Role.ADMIN, email="admin@example.com"))


@pytest.fixture
def user_headers(make_user: Callable[..., User]) -> dict[str, str]:
    return bearer(make_user(Role.USER, email="plain@example.com"))


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 problem response with ``status`` and return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"] and body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


@pytest.fixture
def span_exporter() -> Any:
    """An in-memory exporter behind an always-on TracerProvider."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # synchronous: tests read at once
    exporter.provider = provider
    return exporter


@pytest.fixture
def traced_app(database_url: str, span_exporter: Any) -> Iterator[Any]:
    """An app whose spans land in ``span_exporter``."""
    app = create_app({"DATABASE_URL": database_url}, tracer_provider=span_exporter.provider)
    with app.app_context():
        yield app
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(text("DELETE FROM users"))
        db.engine.dispose()


def metric_value(app: Any, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Read one sample from the app's registry (None when absent)."""
    registry = app.extensions["lookout.telemetry"].metrics.registry
    return registry.get_sample_value(name, labels or {})

"""Redis outages under a real gunicorn (two workers sharing rate-limit counts in a Redis server
this test starts): black-holed, then killed. The service keeps answering, each worker keeps
enforcing the limits from its own memory, and it returns to Redis when Redis is back."""

from __future__ import annotations

import time

import pytest
import redis
import requests
from conftest import server_bearer, service_missing
from faults import RedisServer, TCPProxy, redis_server_binary
from prometheus_client.parser import text_string_to_metric_families

from loadtests.harness import GunicornServer, wait_until

pytestmark = pytest.mark.slow
LIMIT = 6
STORAGE_TIMEOUT = 0.5


@pytest.fixture
def database_url(sqlite_url):
    return sqlite_url


@pytest.fixture
def redis_server():
    binary = redis_server_binary()
    if binary is None:
        service_missing("redis-server not found (Debian package redis-server); set REDIS_SERVER")
    with RedisServer(binary) as server:
        yield server


def attempts(url: str, count: int) -> list[tuple[int, float]]:
    """Wrong-password logins on new connections (so both workers take some): (status, seconds)."""
    answers = []
    for _ in range(count):
        started = time.monotonic()
        status = requests.post(
            f"{url}/api/v1/auth/token",
            json={"email": "nobody@example.com", "password": "x"},
            headers={"Connection": "close"},
            timeout=10,
        ).status_code
        answers.append((status, time.monotonic() - started))
    return answers


def counting_alone(url: str) -> float:
    """lookout_rate_limit_fallback summed over the workers (multiprocess livesum)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return next(sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == "lookout_rate_limit_fallback")


def until_redis_counts_again(url: str, storage: redis.Redis) -> None:
    """Poll (one attempt a second) until the service writes its counts to Redis again and no
    worker reports counting alone."""
    storage.flushall()

    def back() -> bool:
        if storage.dbsize() and not counting_alone(url):
            return True
        attempts(url, 1)
        return False

    wait_until(back, "the service to go back to Redis", interval=1)


def test_redis_outages_degrade_to_per_process_limits_and_recover(app, redis_server, make_user):
    user = make_user()  # reads are rate-limited too: they keep answering while Redis is away
    proxy = TCPProxy(redis_server.port)
    env = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8",
        "RATE_LIMIT_STORAGE_URL": f"redis://127.0.0.1:{proxy.port}/0",
        "RATE_LIMIT_STORAGE_TIMEOUT": str(STORAGE_TIMEOUT),
        "RATE_LIMIT_LOGIN": f"{LIMIT} per minute",
        "RATE_LIMIT_LOGIN_FAILURES": "1000 per minute",
        "LOG_LEVEL": "WARNING",
    }
    storage = redis.Redis(port=redis_server.port, socket_timeout=5)
    with proxy, GunicornServer(env, workers=2, threads=4) as server:
        # Redis up: the two workers share one budget.
        statuses = [status for status, _ in attempts(server.url, 2 * LIMIT)]
        assert statuses == [401] * LIMIT + [429] * LIMIT
        assert storage.dbsize() > 0
        assert counting_alone(server.url) == 0

        # Black-holed: nothing answers. Each worker pays the storage timeout once, then falls
        # back to its own memory: at most LIMIT per worker, none of them a server error.
        storage.flushall()
        proxy.cut()
        answers = attempts(server.url, 4 * LIMIT)
        assert all(status in (401, 429) for status, _ in answers), answers
        assert LIMIT <= sum(status == 401 for status, _ in answers) <= 2 * LIMIT
        assert max(seconds for _, seconds in answers) < STORAGE_TIMEOUT * 4 + 1
        assert 1 <= counting_alone(server.url) <= 2  # the workers that took an attempt say so
        read = requests.get(f"{server.url}/api/v1/users/me", headers=server_bearer(user), timeout=10)
        assert read.status_code == 200
        proxy.restore()
        until_redis_counts_again(server.url, storage)

        # Killed: connections are refused; the same degradation, then recovery on restart.
        redis_server.kill()
        answers = attempts(server.url, 4 * LIMIT)
        assert all(status in (401, 429) for status, _ in answers), answers
        assert max(seconds for _, seconds in answers) < STORAGE_TIMEOUT * 4 + 1
        assert counting_alone(server.url) >= 1
        redis_server.start()
        until_redis_counts_again(server.url, storage)
        log = server.output()
    assert "falling back to in-memory storage" in log
    assert "Traceback" not in log

"""A login burst against a real Lookout, judged by the generated SLO rules in a real Prometheus.

gunicorn runs with production settings (Argon2id at its real cost, rate limits off so the burst
reaches the hashing); Locust sends a bounded burst of logins on 127.0.0.1 while a thread reads a
user now and then. Prometheus scrapes the app every second and evaluates dashboards/rules/ as
generated. The API latency SLI (logins aside) stays under the fast-burn threshold, while the
old definition, every API request against 0.25 s, evaluated on the same series, would have paged:
the bad case the split exists for. The logins are counted against their own objective.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import PASSWORD, migrate, service_missing
from promserver import PrometheusServer, prometheus_binary

from app import create_app
from app.auth.passwords import hash_password
from app.config import Config
from app.extensions import db
from app.models import Role, User
from dashboards import load_slo, rule_files
from dashboards.generate.rules import bad_and_total, selector
from dashboards.generate.target import TARGET
from loadtests.harness import ROOT, GunicornServer, launch, stop

pytestmark = pytest.mark.slow
EMAIL = "burst@example.com"
# Up to 32 logins a second, more than this machine's 2 cores hash (about 15 a second idle): the
# burst always queues behind the hashing, as a real one does when the pods are sized for the API.
LOGIN_USERS, LOGIN_RATE, BURST_SECONDS = 8, 4.0, 20
LABELS = {"namespace": TARGET.namespace, "pod": "lookout-7d4b9c-burst", "container": TARGET.container}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('burst') / 'lookout.db'}"
    migrate(url)
    defaults = Config.model_fields  # production's Argon2id cost, which each login then pays
    app = create_app({"DATABASE_URL": url,
                      "PASSWORD_HASH_TIME_COST": defaults["PASSWORD_HASH_TIME_COST"].default,
                      "PASSWORD_HASH_MEMORY_KIB": defaults["PASSWORD_HASH_MEMORY_KIB"].default})
    with app.app_context():
        db.session.add(User(email=EMAIL, name="Burst", role=Role.USER, password_hash=hash_password(PASSWORD)))
        db.session.commit()
    env = {"DATABASE_URL": url, "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING"}
    with GunicornServer(env, workers=1, threads=8, metrics_port=True) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(service: GunicornServer) -> Iterator[PrometheusServer]:
    if not prometheus_binary():
        service_missing("prometheus is not installed (Debian package prometheus)")
    scrape = [{"job_name": TARGET.job, "static_configs": [
        {"targets": [f"127.0.0.1:{service.metrics_port}"], "labels": LABELS}]}]
    with PrometheusServer(scrape, rule_files()) as prom:
        prom.wait_for(lambda: prom.query(f'up{{job="{TARGET.job}"}} == 1'), "a first scrape")
        yield prom


def login_burst(url: str, out: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"}
    env |= {"LOCUST_PATH": "/api/v1/auth/token", "LOCUST_RATE": str(LOGIN_RATE), "LOCUST_EMAIL": EMAIL,
            "LOCUST_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "steady_load.py"), "--headless",
               "-u", str(LOGIN_USERS), "-r", str(LOGIN_USERS), "-t", f"{BURST_SECONDS}s", "--host", url,
               "--csv", str(out / "burst"), "--only-summary", "--loglevel", "WARNING"]
    with (out / "locust.log").open("wb") as log:
        return launch(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def value(prometheus: PrometheusServer, expr: str) -> float:
    (sample,) = prometheus.query(expr)
    return float(sample["value"][1])


def test_a_login_burst_burns_the_login_budget_not_the_api_latency_budget(
        service: GunicornServer, prometheus: PrometheusServer, tmp_path: Path):
    slo = load_slo()
    reads, stopped = [0], threading.Event()

    def read() -> None:
        while not stopped.wait(0.2):
            requests.get(f"{service.url}/api/v1/users/1", timeout=10)
            reads[0] += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    burst = login_burst(service.url, tmp_path)
    try:
        assert burst.wait(timeout=BURST_SECONDS + 60) == 0, (tmp_path / "locust.log").read_text()
    finally:
        stop(burst)
        stopped.set()
        reader.join(15)
    logins = f'http_server_request_duration_seconds_count{{{selector(slo, "login")}}}'
    sent = sum(int(row.split(",")[2]) for row in (tmp_path / "burst_stats.csv").read_text().splitlines()[1:]
               if ",Aggregated," in row)
    # Every login Locust saw answered, and a recording after it: the ratios cover the whole burst.
    prometheus.wait_for(lambda: prometheus.query(f"sum({logins}) >= {sent}"), "the burst scraped")
    prometheus.wait_for(lambda: prometheus.query(
        f'lookout:sli_error:ratio_rate5m{{slo="login"}} and on() (sum({logins}) >= {sent})'),
        "the rules evaluated after the burst")
    fast_burn = max(a.burn_rate for a in slo.burn_rate_alerts) * slo.error_budget("latency")

    bad, total = bad_and_total(slo, "latency", "5m")
    old_bad, old_total = (e.replace(f', route!="{slo.login_route}"', "") for e in (bad, total))
    assert old_bad != bad, "the old definition counts every API request"
    old = value(prometheus, f"({old_bad}) / {old_total}")
    new = value(prometheus, 'lookout:sli_error:ratio_rate5m{slo="latency"}')
    login = value(prometheus, 'lookout:sli_error:ratio_rate5m{slo="login"}')
    slow_logins = value(prometheus, f'1 - sum(rate(http_server_request_duration_seconds_bucket{{'
                                    f'{selector(slo, "login")}, le="0.25"}}[5m])) / sum(rate({logins}[5m]))')
    print(f"login burst: {sent} logins, {reads[0]} reads; latency SLI error ratio {new:.3f} "
          f"(old definition {old:.3f}), login {login:.3f}, logins over 0.25 s {slow_logins:.3f}; "
          f"the fast burn pages above {fast_burn:.3f}")
    assert sent >= 2 * LOGIN_USERS and reads[0] >= 20
    assert old > fast_burn, "the burst was too light to have paged under the old definition"
    assert new < fast_burn, "the API latency budget burns for logins"
    assert value(prometheus, 'lookout:sli_requests:rate5m{slo="login"}') > 0

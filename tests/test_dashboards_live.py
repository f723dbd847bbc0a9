"""Rules and dashboards against the real app and a real Prometheus.

One gunicorn (production process model: one worker, /metrics on its own port, every request
sampled so exemplars exist) serves steady API traffic on a migrated SQLite file; beside it the
notifier's event handling emails a user event to a real SMTP server each round, its metrics served
as the consumer serves them (the notifier objective's series). First the
contract: every selector in every rule and panel names a metric its /metrics exposes (or an
allow-listed Kubernetes one). Then a Prometheus scraping it every second with the real rule files:
every panel query runs, the app's panels return data, every recording rule produces series and no
alert is pending or firing; last, injected 5xx answers make the fast-burn alert pending.

The rules keep their real windows: with seconds of data, a 1h or 3d rate covers exactly the
samples there are, so the expressions evaluate as they would in production; only `for:` (2m and
more) cannot elapse here, hence "pending". Which windows fire for which burn is the job of the
promtool tests, which replay hours and days of series (tests/test_rules.py).
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import PASSWORD, add_admin, migrate, service_missing
from notifier_support import SmtpServer, free_port, make_event
from promql_contract import GRAFANA_VARIABLES, KUBERNETES, Catalogue, grafana_to_promql, problems, selectors
from promserver import PrometheusError, PrometheusServer, prometheus_binary

from app import create_app
from dashboards import PanelQuery, dashboard_queries, rule_files, rule_groups
from dashboards.generate.boards import RATE
from dashboards.generate.dependencies import DELEGATED_PREFIXES
from dashboards.generate.rules import messaging_alerts
from dashboards.generate.target import TARGET
from loadtests.harness import GunicornServer

pytestmark = pytest.mark.slow
FAULTS = "/api/v1/_faults/500"
FAST_BURN = "LookoutAvailabilityBurn1h"
# Alerts on the relay, the broker and the consumer process: no relay or broker is scraped here
# (LookoutRelayDown's expression is true), tests/test_messaging_live.py runs them over the real ones.
MESSAGING_ALERTS = frozenset(a.name for a in messaging_alerts())
# The labels the Prometheus Operator gives a pod scraped through the lookout-metrics Service.
K8S_TARGET_LABELS = {"namespace": TARGET.namespace, "pod": "lookout-7d4b9c-x2x8q",
                     "container": TARGET.container, "service": TARGET.job, "endpoint": "metrics"}


class NotifierFeed:
    """The notifier's handling of one user event per call (real SMTP server, SQLite database),
    its registry served on a port of its own as the consumer process serves it."""

    def __init__(self, tmp: Any) -> None:
        from flask_migrate import upgrade
        from prometheus_client import start_http_server

        from app.notifier import create_app as create_notifier
        from app.notifier.extensions import MIGRATIONS
        from app.notifier.handling import Handler

        self.smtp = SmtpServer()
        self.smtp.start()
        self.app = create_notifier({"DATABASE_URL": f"sqlite:///{tmp / 'notifier.db'}",
                                    "SMTP_URL": self.smtp.url})
        with self.app.app_context():
            upgrade(directory=MIGRATIONS)
        self.metrics = self.app.extensions["lookout.telemetry"].metrics
        self.handler = Handler(self.app, self.metrics)
        self.port = free_port()
        self.server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.metrics.registry)

    def one(self) -> None:
        event = make_event("user.created")
        with self.app.app_context():
            assert self.handler.handle(json.dumps(event).encode(), event["id"], {}, 1).action == "ack"

    def exposition(self) -> str:
        return notifier_only(requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text)

    def close(self) -> None:
        self.server.shutdown()
        self.smtp.stop()


def notifier_only(exposition: str) -> str:
    """The notifier's own families (its HTTP and database ones are the platform's, as the users
    service's: the users service's exposition speaks for those)."""
    return "".join(line + "\n" for line in exposition.splitlines()
                   if re.match(r"(# (HELP|TYPE) )?lookout_notifier_", line))


def fresh_notifier_exposition() -> str:
    """A notifier that has handled nothing yet: its fixed-label series exist at zero."""
    from app.notifier import create_app as create_notifier

    return notifier_only(create_notifier({}).test_client().get("/metrics").get_data(as_text=True))


class Traffic:
    """Steady API traffic in a background thread; ``faults`` adds injected 5xx answers."""

    def __init__(self, url: str, notifier: NotifierFeed | None = None) -> None:
        self.url, self.faults, self.sent = url, 0, 0
        self.notifier = notifier
        self.stopped = threading.Event()
        self.session = requests.Session()
        token = self.session.post(f"{url}/api/v1/auth/token", timeout=10,
                                  json={"email": "admin@example.com", "password": PASSWORD}).json()
        self.auth = {"Authorization": f"Bearer {token['access_token']}"}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def one_round(self) -> None:
        """Every kind of request the dashboards show: reads, misses, writes, refusals, probes."""
        s, url = self.session, self.url
        s.get(f"{url}/api/v1/users", headers=self.auth, timeout=10)
        s.get(f"{url}/api/v1/users/1", headers=self.auth, timeout=10)
        s.get(f"{url}/api/v1/users/999999", headers=self.auth, timeout=10)  # 404: client error, no SLO error
        s.get(f"{url}/api/v1/users/1", timeout=10)  # anonymous: 401, an auth failure, not an SLO error
        s.post(f"{url}/api/v1/auth/token", timeout=10,
               json={"email": "admin@example.com", "password": "wrong"})
        s.get(f"{url}/readyz", timeout=10)
        s.get(f"{url}/livez", timeout=10)
        if self.sent % 20 == 0:
            s.post(f"{url}/api/v1/users", headers=self.auth, timeout=10,
                   json={"email": f"u{self.sent}@example.com", "name": "U", "password": "long enough pw"})
        for _ in range(self.faults):
            s.get(f"{url}{FAULTS}", timeout=10)
        if self.notifier is not None:
            self.notifier.one()
        self.sent += 1

    def _run(self) -> None:
        while not self.stopped.wait(0.05):
            self.one_round()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.ident is not None:  # started (the Prometheus tests may have been skipped)
            self.thread.join(15)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('live') / 'lookout.db'}"
    migrate(url)
    add_admin(url)
    return url


@pytest.fixture(scope="module")
def service(database: str, redis_url: str) -> Iterator[tuple[GunicornServer, str]]:
    """Gunicorn with /metrics on a port of its own, as in Kubernetes, fault injection on, and the
    read cache in Redis as deployed (its panels need its traffic)."""
    env = {"LOOKOUT_ENV": "testing", "DATABASE_URL": database, "FAULT_INJECTION": "true",
           "OTEL_TRACES_SAMPLER": "always_on", "LOG_LEVEL": "WARNING", "CACHE_URL": redis_url,
           "CACHE_KEY_PREFIX": f"lookout-dashboards-{uuid.uuid4().hex[:8]}"}
    with GunicornServer(env, workers=1, threads=4, metrics_port=True) as server:
        yield server, f"127.0.0.1:{server.metrics_port}"


@pytest.fixture(scope="module")
def notifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifierFeed]:
    feed = NotifierFeed(tmp_path_factory.mktemp("notifier"))
    yield feed
    feed.close()


@pytest.fixture(scope="module")
def traffic(service: tuple[GunicornServer, str], notifier: NotifierFeed) -> Iterator[Traffic]:
    traffic = Traffic(service[0].url, notifier)
    for _ in range(3):  # warm up before Prometheus's first scrape, so start-up cost is not counted
        traffic.one_round()
    yield traffic
    traffic.stop()


@pytest.fixture(scope="module")
def exposition(service: tuple[GunicornServer, str], traffic: Traffic) -> str:
    """The app's /metrics after every kind of request, read from the metrics port."""
    return requests.get(f"http://{service[1]}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def catalogue(exposition: str, notifier: NotifierFeed) -> Catalogue:
    return (Catalogue(delegated=DELEGATED_PREFIXES).add_exposition(exposition)
            .add_exposition(notifier.exposition()).add_rules(rule_groups()))


def every_expression() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule and every panel target."""
    found = [(f"{path.name}: {rule.get('record') or rule.get('alert')}", rule["expr"])
             for path in rule_files() for group in rule_groups([path]) for rule in group["rules"]]
    found += [(f"{q.dashboard}: {q.panel} [{q.ref_id}]", q.expr) for q in dashboard_queries()]
    return found


# --- the contract ---------------------------------------------------------------------------------


def test_every_selector_names_an_exposed_recorded_or_allowed_metric(catalogue: Catalogue):
    expressions = every_expression()
    assert len(expressions) > 50, "the dashboards and rules were not found"
    found = [p for where, expr in expressions for p in problems(where, expr, catalogue)]
    assert found == []


def test_renaming_a_metric_in_the_app_breaks_the_contract(database: str, monkeypatch: pytest.MonkeyPatch):
    """The app itself renames its request counter; the contract names what now points nowhere."""
    import prometheus_client

    import app.platform.metrics as metrics_module

    class RenamedCounter(prometheus_client.Counter):
        def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
            name = "http_server_responses" if name == "http_server_requests" else name
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(metrics_module, "Counter", RenamedCounter)
    renamed = create_app({"DATABASE_URL": database})
    client = renamed.test_client()
    client.get("/api/v1/users")
    exposition = client.get("/metrics").get_data(as_text=True)
    assert "http_server_responses_total{" in exposition and "http_server_requests_total" not in exposition
    catalogue = Catalogue(delegated=DELEGATED_PREFIXES).add_exposition(exposition).add_rules(rule_groups())
    found = [p for where, expr in every_expression() for p in problems(where, expr, catalogue)]
    assert any("lookout-overview: Request rate per route" in p and "http_server_requests_total" in p
               for p in found)
    assert any("slo.yaml: lookout:sli_error:ratio_rate1h" in p for p in found)
    assert any("operational.yaml: LookoutNoTraffic" in p for p in found)


# Families labelled by each request (method, route, status): their series are born with the
# traffic, so a fresh app declares them without samples. Every other family has series at start.
BORN_WITH_TRAFFIC = ("http_server_requests", "http_server_request_duration_seconds")


def fresh_problems(exposition: str) -> list[str]:
    """What the rules and panels query that a fresh app's /metrics has no series of."""
    catalogue = (Catalogue(delegated=DELEGATED_PREFIXES)
                 .add_exposition(exposition, declared=BORN_WITH_TRAFFIC)
                 .add_exposition(fresh_notifier_exposition(), declared=()).add_rules(rule_groups()))
    return [p for where, expr in every_expression() for p in problems(where, expr, catalogue)]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "multiprocess"])
def test_a_freshly_started_app_has_every_series_the_dashboards_query(database: str, workers: int):
    """No traffic yet (only the harness's /livez): what a rule or panel over a counter of a fixed
    label set (database errors by operation, ...) needs is on the first scrape already."""
    env = {"LOOKOUT_ENV": "testing", "DATABASE_URL": database, "LOG_LEVEL": "WARNING"}
    with GunicornServer(env, workers=workers, threads=2, metrics_port=True) as server:
        exposition = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    for operation in ("SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"):
        assert f'db_client_errors_total{{operation="{operation}"}} 0.0' in exposition
    found = fresh_problems(exposition)
    if workers > 1:  # multiprocess mode collects no per-process metrics (app/telemetry/metrics.py)
        found = [p for p in found if not re.search(r": (python_gc|process)_\w+ is neither", p)]
    assert found == []


def test_the_fresh_start_check_sees_a_counter_without_its_zero_series(database: str):
    """The bad case: database errors not created at zero are a family without series, which the
    fresh-start check names (the lenient one, counting declared families, would not)."""
    app = create_app({"DATABASE_URL": database})
    app.extensions["lookout.telemetry"].metrics.db_errors.clear()  # as before: no series until an error
    exposition = app.test_client().get("/metrics").get_data(as_text=True)
    assert "# TYPE db_client_errors_total counter" in exposition
    assert "db_client_errors_total{" not in exposition
    found = fresh_problems(exposition)
    assert found and all("db_client_errors_total" in p for p in found), found
    assert any("lookout-overview" in p for p in found)
    lenient = (Catalogue(delegated=DELEGATED_PREFIXES).add_exposition(exposition)
               .add_exposition(fresh_notifier_exposition()).add_rules(rule_groups()))
    assert not [p for where, expr in every_expression() for p in problems(where, expr, lenient)]


def test_a_label_value_the_app_never_writes_breaks_the_contract(catalogue: Catalogue):
    assert problems("x", 'http_server_request_duration_seconds_bucket{le="0.3"}', catalogue)
    assert problems("x", 'lookout:sli_error:ratio_rate1h{slo="availabilty"}', catalogue)
    assert problems("x", 'kube_pod_info{namespace="lookout"}', catalogue)  # not allow-listed
    assert problems("x", "sum(rate(http_server_requests_total[5m]", catalogue)  # does not parse
    assert not problems("x", 'http_server_request_duration_seconds_bucket{le="0.25"}', catalogue)


def test_the_allow_list_holds_only_what_is_used():
    used = {s.name for _, expr in every_expression() for s in selectors(expr)}
    assert set(KUBERNETES) <= used, f"unused allow-list entries: {sorted(set(KUBERNETES) - used)}"


# --- a real Prometheus ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(service: tuple[GunicornServer, str], traffic: Traffic,
               notifier: NotifierFeed) -> Iterator[PrometheusServer]:
    if not prometheus_binary():
        service_missing("prometheus is not installed (Debian package prometheus)")
    scrape = [{"job_name": TARGET.job,
               "static_configs": [{"targets": [service[1]], "labels": K8S_TARGET_LABELS}]},
              {"job_name": TARGET.notifier_job,
               "static_configs": [{"targets": [f"127.0.0.1:{notifier.port}"]}]}]
    with PrometheusServer(scrape, rule_files()) as prom:
        traffic.thread.start()
        # Every recording rule has a series and every rate window holds a few scrapes.
        records = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
        prom.wait_for(lambda: all(prom.query(name) for name in records), "every recording rule")
        window = GRAFANA_VARIABLES["$__rate_interval"]

        def scrapes() -> float:
            found = prom.query(f'count_over_time(up{{job="{TARGET.job}"}}[{window}])')
            return float(found[0]["value"][1]) if found else 0

        prom.wait_for(lambda: scrapes() >= 4, f"four scrapes in the panels' {window} rate window")
        yield prom


def test_the_rule_files_load_and_every_recording_rule_has_series(prometheus: PrometheusServer):
    groups = prometheus.api("rules")["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in rule_groups())
    assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                labels = ",".join(f'{k}="{v}"' for k, v in (rule.get("labels") or {}).items())
                series = prometheus.query(f"{rule['record']}{{{labels}}}")
                assert series and all(not math.isnan(float(s["value"][1])) for s in series), rule["record"]


def kubernetes_only(expr: str) -> bool:
    """Whether ``expr`` reads series this test has no source of: Kubernetes' or an exporter's."""
    return any((s.name in KUBERNETES and s.name != "up") or s.name.startswith(DELEGATED_PREFIXES)
               for s in selectors(expr))


def panels_without_data(prometheus: PrometheusServer, queries: list[PanelQuery]) -> list[str]:
    """Run every query (an error raises) and name the app panels' targets that returned nothing."""
    empty = []
    for query in queries:
        result = prometheus.query_range(grafana_to_promql(query.expr), seconds=20)
        values = [float(v) for series in result for _, v in series["values"]]
        if not kubernetes_only(query.expr) and all(math.isnan(v) for v in values):
            empty.append(f"{query.dashboard}: {query.panel} [{query.ref_id}]")
    return empty


def test_every_panel_query_runs_and_the_apps_panels_have_data(prometheus: PrometheusServer):
    assert panels_without_data(prometheus, list(dashboard_queries())) == []


def test_the_panel_check_sees_an_empty_panel_and_a_broken_query(prometheus: PrometheusServer):
    empty = PanelQuery("x", "Renamed", "A", f"sum(rate(http_server_responses_total[{RATE}]))", False)
    assert panels_without_data(prometheus, [empty]) == ["x: Renamed [A]"]
    broken = PanelQuery("x", "Broken", "A", "sum(rate(http_server_requests_total[5m])", False)
    with pytest.raises(PrometheusError, match="bad_data"):
        panels_without_data(prometheus, [broken])


def test_the_kubernetes_panels_run_but_stay_empty_here(prometheus: PrometheusServer):
    """No kube-state-metrics or cAdvisor in a test: their panels run and return nothing, not errors."""
    kube = [q for q in dashboard_queries() if kubernetes_only(q.expr)]
    assert len(kube) >= 5
    for query in kube:
        assert prometheus.query_range(grafana_to_promql(query.expr), seconds=20) == []


def test_the_latency_panel_carries_exemplars_with_trace_ids(prometheus: PrometheusServer):
    (query,) = [q for q in dashboard_queries() if q.exemplar]
    exemplars = prometheus.exemplars(grafana_to_promql(query.expr), seconds=60)
    trace_ids = [e["labels"].get("trace_id") for series in exemplars for e in series["exemplars"]]
    assert trace_ids and all(len(t or "") == 32 for t in trace_ids)


def test_healthy_traffic_raises_no_alert(prometheus: PrometheusServer):
    assert [a for a in prometheus.alerts() if a["labels"]["alertname"] not in MESSAGING_ALERTS] == []
    # Stronger than "nothing fires yet" (every `for:` here outlasts the test): no alert expression
    # is true at all.
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" in rule and rule["alert"] not in MESSAGING_ALERTS:
                assert prometheus.query(rule["expr"]) == [], rule["alert"]
    ratio = prometheus.query('lookout:sli_error:ratio_rate5m{slo="availability"}')
    assert float(ratio[0]["value"][1]) == 0


def test_injected_server_errors_make_the_fast_burn_alert_pending(prometheus: PrometheusServer,
                                                                  traffic: Traffic):
    """Runs last in this module: it spends the error budget the tests above needed intact."""
    traffic.faults = 2  # with 4 API requests a round, a third of the API answers are 5xx

    def pending() -> list[dict[str, Any]]:
        return [a for a in prometheus.alerts() if a["labels"]["alertname"] == FAST_BURN]

    (alert,) = prometheus.wait_for(pending, f"{FAST_BURN} pending")
    assert alert["state"] == "pending"  # `for: 2m` has not elapsed
    assert alert["labels"]["severity"] == "page"
    assert float(alert["value"]) > 14.4 * 0.001
    raised = {a["labels"]["alertname"] for a in prometheus.alerts()}
    assert not {name for name in raised if name.startswith("LookoutLatency")}, raised  # fast errors

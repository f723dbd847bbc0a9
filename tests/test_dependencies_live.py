"""The dependencies' contract, against the real exporters, and the outside-in probe against a real Lookout.

Debian's prometheus-postgres-exporter and prometheus-redis-exporter run against this machine's
PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL); every selector of the dependencies
board, of its rules and of the SLO board's probe panels must name a metric on their /metrics or on
the blackbox exporter's /probe answer, with label values they write (tests/promql_contract.py, the
same check the app's contract uses). The images the cluster runs are the same releases as these
Debian packages (postgres_exporter 0.11, redis_exporter 1.45; infra/components/exporters.py), so
the names checked here are the names deployed.

prometheus-blackbox-exporter runs on the module configuration the Pulumi program renders
(infra.components.probe.blackbox_config) and probes a real gunicorn's /readyz: success while it
serves, failure once it is stopped, and failure of the TLS module against plain HTTP.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from conftest import migrate, service_missing
from prometheus_client.parser import text_string_to_metric_families
from promql_contract import KUBERNETES, Catalogue, problems, selectors

from dashboards import HERE, dashboard_queries, rule_groups
from dashboards.generate.dependencies import EXPORTER_PREFIXES
from infra.components.probe import blackbox_config, module_for
from loadtests.harness import GunicornServer, free_port, launch, stop, wait_until

pytestmark = pytest.mark.slow
EXPORTERS = {name: f"prometheus-{name}-exporter" for name in ("postgres", "redis", "blackbox")}


def binary(name: str) -> str:
    path = shutil.which(EXPORTERS[name])
    if path is None:
        service_missing(f"{EXPORTERS[name]} is not installed (Debian package {EXPORTERS[name]})")
    return str(path)


def metrics_answer(url: str) -> str:
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:
        return ""
    return response.text if response.ok else ""


@pytest.fixture(scope="module")
def postgres_exposition(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = urlsplit(postgres_server_url)
    dsn = postgres_server_url + ("&" if url.query else "?") + "sslmode=disable"
    port = free_port()
    log = tmp_path_factory.mktemp("pgexporter") / "log"
    with log.open("w") as out:
        process = launch([binary("postgres"), f"--web.listen-address=127.0.0.1:{port}"],
                         env={"DATA_SOURCE_NAME": dsn}, stdout=out, stderr=out)
    try:
        # pg_up 1: the exporter reached the server (it answers /metrics with pg_up 0 otherwise).
        text = wait_until(lambda: (t := metrics_answer(f"http://127.0.0.1:{port}/metrics"))
                          and "\npg_up 1" in t and t, "postgres_exporter reaching PostgreSQL")
        yield text
    finally:
        stop(process)


@pytest.fixture(scope="module")
def redis_exposition(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("redisexporter") / "log"
    with log.open("w") as out:
        process = launch([binary("redis"), "-web.listen-address", f"127.0.0.1:{port}",
                          "-redis.addr", redis_url], stdout=out, stderr=out)
    try:
        text = wait_until(lambda: (t := metrics_answer(f"http://127.0.0.1:{port}/metrics"))
                          and "\nredis_up 1" in t and t, "redis_exporter reaching Redis")
        yield text
    finally:
        stop(process)


@pytest.fixture(scope="module")
def blackbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The exporter on the program's modules; its address."""
    folder = tmp_path_factory.mktemp("blackbox")
    config = folder / "blackbox.yml"
    config.write_text(yaml.safe_dump(blackbox_config()))
    port = free_port()
    with (folder / "log").open("w") as out:
        process = launch([binary("blackbox"), f"--config.file={config}",
                          f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=out)
    try:
        wait_until(lambda: metrics_answer(f"http://127.0.0.1:{port}/-/healthy") or None,
                   "blackbox exporter healthy")
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def lookout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('probed') / 'lookout.db'}"
    migrate(url)
    with GunicornServer({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}, workers=1, threads=2) as server:
        yield server


def probe(blackbox: str, target: str) -> dict[str, float]:
    """One probe through the exporter, as Prometheus asks for it: the unlabelled samples by name."""
    module = module_for(target)
    text = requests.get(f"http://{blackbox}/probe", params={"target": target, "module": module},
                        timeout=30).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def probe_exposition(blackbox: str, target: str) -> str:
    return requests.get(f"http://{blackbox}/probe", params={"target": target, "module": module_for(target)},
                        timeout=30).text


def dependency_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and panel that reads an exporter's metric."""
    found = [(f"{rule.get('alert') or rule.get('record')}", rule["expr"])
             for group in rule_groups() for rule in group["rules"]]
    found += [(f"{q.dashboard}: {q.panel} [{q.ref_id}]", q.expr) for q in dashboard_queries()]
    return [(where, expr) for where, expr in found
            if any(s.name.startswith(EXPORTER_PREFIXES) for s in selectors(expr))]


@pytest.fixture(scope="module")
def catalogue(postgres_exposition: str, redis_exposition: str, blackbox: str,
              lookout: GunicornServer) -> Catalogue:
    catalogue = Catalogue().add_exposition(postgres_exposition).add_exposition(redis_exposition)
    catalogue.add_exposition(probe_exposition(blackbox, f"{lookout.url}/readyz"))
    # `up` is Prometheus's own, per scrape target (allow-listed): the rules read it beside the probe.
    return catalogue.add_rules(rule_groups())


# --- the contract --------------------------------------------------------------------------------------


def test_every_dependency_selector_is_on_the_real_exporters(catalogue: Catalogue):
    expressions = dependency_expressions()
    boards = {where.split(":")[0] for where, _ in expressions}
    assert {"lookout-dependencies", "lookout-slo"} <= boards
    assert len(expressions) >= 20
    assert [p for where, expr in expressions for p in problems(where, expr, catalogue)] == []


def test_a_name_the_exporters_do_not_write_breaks_the_contract(catalogue: Catalogue):
    # Names of other exporter versions or other exporters: pg_stat_activity_max_tx_duration_seconds
    # does not exist in 0.11, nor redis_memory_max in 1.45.
    assert problems("x", 'pg_stat_activity_max_tx_duration_seconds{job="lookout-db-metrics"}', catalogue)
    assert problems("x", "redis_memory_max", catalogue)
    assert problems("x", 'pg_locks_count{mode="nosuchlock"}', catalogue)
    assert problems("x", "probe_http_status", catalogue)
    assert not problems("x", 'pg_locks_count{mode="exclusivelock"}', catalogue)


def test_the_dependency_alerts_read_only_exporters_and_allow_listed_series():
    names = {s.name for _, expr in dependency_expressions() for s in selectors(expr)}
    assert names - {n for n in names if n.startswith(EXPORTER_PREFIXES)} <= set(KUBERNETES)


# --- outside-in -----------------------------------------------------------------------------------------


def test_the_program_renders_a_module_for_each_scheme():
    modules = blackbox_config()["modules"]
    assert module_for("http://lookout.lookout.svc.cluster.local:80/readyz") == "http_ready"
    assert module_for("https://lookout.example.com/readyz") == "https_ready"
    assert modules["https_ready"]["http"]["fail_if_not_ssl"] is True
    assert modules["https_ready"]["http"]["tls_config"]["insecure_skip_verify"] is False
    with pytest.raises(ValueError, match="probeUrl"):
        module_for("tcp://lookout:80")


def test_the_probe_succeeds_against_a_running_lookout_and_fails_once_it_stops(
        blackbox: str, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'lookout.db'}"
    migrate(url)
    server = GunicornServer({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}, workers=1, threads=2).start()
    target = f"{server.url}/readyz"
    try:
        up = probe(blackbox, target)
        assert up["probe_success"] == 1
        assert up["probe_http_status_code"] == 200
        assert 0 < up["probe_duration_seconds"] < 5
    finally:
        server.stop()
    down = probe(blackbox, target)  # the bad case: nothing listens there now
    assert down["probe_success"] == 0


def test_the_tls_module_refuses_a_plain_http_endpoint(blackbox: str, lookout: GunicornServer):
    target = f"{lookout.url}/readyz"
    assert probe(blackbox, target)["probe_success"] == 1
    text = requests.get(f"http://{blackbox}/probe", params={"target": target, "module": "https_ready"},
                        timeout=30).text
    success = [s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "probe_success"]
    assert success == [0]


def test_the_dependencies_board_is_among_the_committed_dashboards():
    assert (HERE / "lookout-dependencies.json").exists()

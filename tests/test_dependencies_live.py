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

The exporters also run as the program configures them: redis_exporter with the sidecar's
arguments and password file against a redis-server on the store's own configuration (refused
without the file), postgres_exporter with the Deployment's DATA_SOURCE_URI and credential files
(the role in the file is the one used). A primary of the test's own with a streaming replica
gives the replication series. Last, a real Prometheus scrapes the exporters and the
probe under the jobs the rules select: every dependency panel has data, no dependency alert
expression is true, and a probe of a URL nothing serves, while the app's target is up, makes
LookoutServiceUnreachable's expression true.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from conftest import migrate, service_missing
from faults import PostgresCluster, postgres_bindir
from prometheus_client.parser import text_string_to_metric_families
from promql_contract import GRAFANA_VARIABLES, KUBERNETES, Catalogue, grafana_to_promql, problems, selectors
from promserver import PrometheusServer, prometheus_binary

from dashboards import HERE, RULES_DIR, dashboard_queries, rule_files, rule_groups
from dashboards.generate.dependencies import DEPS, EXPORTER_PREFIXES
from dashboards.generate.target import TARGET
from infra.components.exporters import postgres_exporter, redis_exporter, redis_password_file
from infra.components.probe import blackbox_config, module_for
from infra.components.ratelimits import server_conf
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
def replicated() -> Iterator[tuple[str, int]]:
    """A primary of our own with one streaming replica (pg_basebackup), and postgres_exporter on the
    primary, where pg_stat_replication has a row per replica: its exposition and its port."""
    bindir = postgres_bindir()
    if bindir is None:
        service_missing("PostgreSQL's initdb and pg_ctl are not installed")
    with PostgresCluster(str(bindir)) as primary:
        standby = PostgresCluster(str(bindir))
        try:
            standby._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                         "-D", str(standby.data), "-R", "-X", "stream")
            standby.start()
            port = free_port()
            process = launch([binary("postgres"), f"--web.listen-address=127.0.0.1:{port}"],
                             env={"DATA_SOURCE_NAME": primary.url() + "?sslmode=disable"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                text = wait_until(lambda: (t := metrics_answer(f"http://127.0.0.1:{port}/metrics"))
                                  and 'state="streaming"' in t and t, "the replica streaming")
                yield text, port
            finally:
                stop(process)
        finally:
            if standby.postmaster_pid is not None:
                standby.stop()
            shutil.rmtree(standby.root, ignore_errors=True)


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
    with GunicornServer({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}, workers=1, threads=2,
                        metrics_port=True) as server:
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
def catalogue(postgres_exposition: str, redis_exposition: str, replicated: tuple[str, int], blackbox: str,
              lookout: GunicornServer) -> Catalogue:
    catalogue = Catalogue().add_exposition(postgres_exposition).add_exposition(redis_exposition)
    catalogue.add_exposition(replicated[0])  # pg_stat_replication_* exist only where replicas do
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


# --- the exporters as the program configures them ----------------------------------------------------


def _listen_on(args: list[str], address: str) -> list[str]:
    """The container's arguments with its listen address moved to ``address`` (127.0.0.1 here)."""
    if "-web.listen-address" in args:
        i = args.index("-web.listen-address")
        return [*args[:i + 1], address, *args[i + 2:]]
    return [f"--web.listen-address={address}" if a.startswith("--web.listen-address=") else a for a in args]


def _metrics_line(port: int, line: str) -> bool:
    return f"\n{line}" in metrics_answer(f"http://127.0.0.1:{port}/metrics")


@pytest.mark.parametrize("password_file", [True, False], ids=["with-password-file", "without"])
def test_the_store_s_exporter_reads_the_password_file_the_program_writes(tmp_path: Path, password_file: bool):
    """Debian's redis-server on the store's own configuration (a password), the sidecar's arguments
    and password file: the exporter gets in; without the file it is refused (redis_up 0)."""
    server_binary = shutil.which("redis-server")
    if server_binary is None:
        service_missing("redis-server is not installed (Debian package redis-server)")
    password, port = "s3cretpassword", free_port()
    (tmp_path / "valkey.conf").write_text(
        server_conf(password, 16, port=port, data_dir=str(tmp_path), bind="127.0.0.1"))
    server = launch([server_binary, str(tmp_path / "valkey.conf")], stdout=subprocess.DEVNULL)
    exporter = None
    try:
        container = redis_exporter(port, str(tmp_path))
        if password_file:
            (tmp_path / "exporter-passwords.json").write_text(redis_password_file(password, port))
        else:
            (tmp_path / "exporter-passwords.json").write_text("{}")
        # localhost is how the sidecar reaches the store in its pod; here it is this machine.
        metrics = free_port()
        exporter = launch([binary("redis"), *_listen_on(container["args"], f"127.0.0.1:{metrics}")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        expected = "redis_up 1" if password_file else "redis_up 0"
        wait_until(lambda: _metrics_line(metrics, expected), f"redis_exporter reporting {expected}")
    finally:
        if exporter is not None:
            stop(exporter)
        stop(server)


@pytest.mark.parametrize("role", ["postgres", "no_such_role"])
def test_the_database_exporter_reads_its_credentials_from_files(postgres_server_url: str, tmp_path: Path,
                                                                role: str):
    """The Deployment's environment (DATA_SOURCE_URI and the *_FILE credentials), pointed at this
    machine's PostgreSQL (no TLS here, so sslmode=disable): the role in the file is the one used."""
    url = urlsplit(postgres_server_url)
    (tmp_path / "username").write_text(role)
    (tmp_path / "password").write_text("unused-with-trust-auth")
    container, _ = postgres_exporter(url.hostname or "127.0.0.1", url.port or 5432, url.path.lstrip("/"),
                                     "unused", sslmode="disable", credentials_dir=str(tmp_path))
    env = {e["name"]: e["value"] for e in container["env"]}
    port = free_port()
    exporter = launch([binary("postgres"), *_listen_on(container["args"], f"127.0.0.1:{port}")],
                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        expected = "pg_up 1" if role == "postgres" else "pg_up 0"
        wait_until(lambda: _metrics_line(port, expected), f"postgres_exporter reporting {expected}")
    finally:
        stop(exporter)


# --- a real Prometheus over the real exporters ---------------------------------------------------------


def _exporter(command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[Any], int]:
    port = free_port()
    process = launch([*command, f"127.0.0.1:{port}"] if command[-1].endswith("listen-address")
                     else [*command, f"--web.listen-address=127.0.0.1:{port}"],
                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port


def _probe_job(blackbox: str, target: str) -> dict[str, Any]:
    """The scrape job the operator makes of the Probe: the target as a parameter, the exporter scraped."""
    return {"job_name": DEPS.probe_job, "metrics_path": "/probe", "params": {"module": [module_for(target)]},
            "static_configs": [{"targets": [target]}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": blackbox}]}


@pytest.fixture(scope="module")
def prometheus(postgres_server_url: str, redis_url: str, blackbox: str, replicated: tuple[str, int],
               lookout: GunicornServer) -> Iterator[PrometheusServer]:
    if not prometheus_binary():
        service_missing("prometheus is not installed (Debian package prometheus)")
    url = urlsplit(postgres_server_url)
    dsn = postgres_server_url + ("&" if url.query else "?") + "sslmode=disable"
    pg, pg_port = _exporter([binary("postgres")], env={"DATA_SOURCE_NAME": dsn})
    redis, redis_port = _exporter([binary("redis"), "-redis.addr", redis_url, "-web.listen-address"])
    try:
        scrape = [
            {"job_name": DEPS.database_job,
             "static_configs": [{"targets": [f"127.0.0.1:{pg_port}", f"127.0.0.1:{replicated[1]}"]}]},
            {"job_name": DEPS.store_job, "static_configs": [{"targets": [f"127.0.0.1:{redis_port}"]}]},
            _probe_job(blackbox, f"{lookout.url}/readyz"),
            # The app's pods as Prometheus sees them (the alert asks whether they are up); the probe
            # of a URL nothing serves stands for a broken way in while the pods are fine.
            {"job_name": TARGET.job, "static_configs": [{"targets": [f"127.0.0.1:{lookout.metrics_port}"]}]},
            {**_probe_job(blackbox, f"http://127.0.0.1:{free_port()}/readyz"), "job_name": "broken-way-in"},
        ]
        with PrometheusServer(scrape, rule_files()) as prom:
            window = GRAFANA_VARIABLES["$__rate_interval"]

            def scrapes(job: str) -> float:
                found = prom.query(f'count_over_time(up{{job="{job}"}}[{window}])')
                return float(found[0]["value"][1]) if found else 0

            jobs = (DEPS.database_job, DEPS.store_job, DEPS.probe_job)
            prom.wait_for(lambda: all(scrapes(j) >= 4 for j in jobs),
                          f"four scrapes of each exporter in the panels' {window} rate window")
            yield prom
    finally:
        stop(pg)
        stop(redis)


def test_every_dependency_panel_has_data_from_the_real_exporters(prometheus: PrometheusServer):
    queries = [q for q in dashboard_queries()
               if any(s.name.startswith(EXPORTER_PREFIXES) for s in selectors(q.expr))]
    assert len(queries) >= 15
    empty = []
    for query in queries:
        result = prometheus.query_range(grafana_to_promql(query.expr), seconds=10)
        if not [v for series in result for _, v in series["values"] if not math.isnan(float(v))]:
            empty.append(f"{query.dashboard}: {query.panel} [{query.ref_id}]")
    assert empty == []
    (reachable,) = prometheus.query(f'min(probe_success{{job="{DEPS.probe_job}"}})')
    assert float(reachable["value"][1]) == 1


def test_healthy_dependencies_raise_no_alert_expression(prometheus: PrometheusServer):
    for group in rule_groups([RULES_DIR / "dependencies.yaml"]):
        for rule in group["rules"]:
            assert prometheus.query(rule["expr"]) == [], rule["alert"]


def test_a_broken_way_in_while_the_pods_are_up_makes_service_unreachable_true(prometheus: PrometheusServer):
    """The alert's expression over the probe of a URL nothing serves (the broken-way-in job stands
    for the Probe): true, naming the URL, while the app's target is up."""
    (rule,) = [r for g in rule_groups([RULES_DIR / "dependencies.yaml"]) for r in g["rules"]
               if r["alert"] == "LookoutServiceUnreachable"]
    broken = rule["expr"].replace(f'job="{DEPS.probe_job}"', 'job="broken-way-in"')
    assert prometheus.query(rule["expr"]) == []  # the real probe succeeds
    found = prometheus.wait_for(lambda: prometheus.query(broken), "the broken probe failing, the app up")
    assert [s["metric"]["instance"].endswith("/readyz") for s in found] == [True]

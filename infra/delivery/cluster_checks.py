"""After a deploy: Prometheus scrapes the app and holds the repo's rules; Grafana has its dashboards.

With ``dependency_jobs`` (e2e.py passes ``DEPENDENCY_JOBS``), Prometheus must also scrape the
database's and the rate-limit store's exporters and the outside-in probe, and the probe of the
service must succeed.

Usage:
    python -m infra.delivery.cluster_checks --prometheus http://127.0.0.1:9090 \
        --grafana http://127.0.0.1:3000 [--job lookout-metrics] [--wait 240]

Grafana's admin password comes from GRAFANA_PASSWORD (user GRAFANA_USER, default admin). The
expected rule groups and dashboard uids are read from dashboards/ through the loader infra uses,
so a rule file or dashboard that never reaches the cluster fails here. Each check polls until it
passes or ``--wait`` runs out: targets appear after a scrape interval, dashboards after the
Grafana sidecar's next sync. ``check_logs`` (the e2e's ``check`` step) asks Loki for the line of
one request it sent with a known trace id, through the structured-metadata filter the Grafana links
use, and fails when the line is absent or when an id became a label; ``check_datasources`` reads
Grafana's Loki and Tempo data sources as Grafana loaded them and fails when either link is missing
or a link variable did not survive provisioning (``$${...}`` must arrive as ``${...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

import dashboards

JOB = "lookout-metrics"  # the ServiceMonitor names the job after the lookout-metrics Service
LOG_SELECTOR = '{service_name="lookout"}'  # the app pods' app.kubernetes.io/name, which the collector copies
ID_FIELDS = ("trace_id", "span_id", "request_id")  # structured metadata, never labels (a stream each)
# The exporters' jobs and the Probe's (dashboards/generate/dependencies.py; a stack with an
# in-cluster database and the shared rate-limit store, as the kind e2e's dev stack, has all three).
PROBE_JOB = "lookout-probe"
DEPENDENCY_JOBS = ("lookout-db-metrics", "lookout-ratelimit-metrics", PROBE_JOB)


def expected_rule_groups(rule_files: Sequence[Path]) -> set[str]:
    return {g["name"] for p in rule_files for g in (yaml.safe_load(p.read_text()) or {}).get("groups") or []}


def expected_dashboards(dashboard_files: Sequence[Path]) -> dict[str, str]:
    """Return uid -> title of every dashboard file (a dashboard without a uid cannot be found again)."""
    found = {}
    for path in dashboard_files:
        board = json.loads(path.read_text())
        found[board.get("uid") or f"<no uid in {path.name}>"] = board.get("title", path.stem)
    return found


def target_problems(targets_api: dict, job: str) -> list[str]:
    """Problems with the active targets of ``job`` in a /api/v1/targets answer."""
    targets = targets_api.get("data", {}).get("activeTargets", [])
    active = [t for t in targets if t.get("labels", {}).get("job") == job]
    if not active:
        jobs = sorted({t.get("labels", {}).get("job", "?") for t in targets})
        return [f"no active target of job {job!r} (jobs: {', '.join(jobs) or 'none'})"]
    return [f"target {t.get('scrapeUrl')} is {t.get('health')}: {t.get('lastError') or 'not scraped yet'}"
            for t in active if t.get("health") != "up"]


def probe_problems(query_api: dict, job: str = PROBE_JOB) -> list[str]:
    """Problems in a /api/v1/query answer for ``probe_success{job=...}``: none, or a failing probe."""
    results = query_api.get("data", {}).get("result", [])
    if not results:
        return [f"no probe_success of job {job!r} yet"]
    return [f"the probe of {r.get('metric', {}).get('instance', '?')} fails (probe_success "
            f"{r['value'][1]})" for r in results if float(r["value"][1]) != 1]


def rule_problems(rules_api: dict, expected: set[str]) -> list[str]:
    loaded = {g.get("name") for g in rules_api.get("data", {}).get("groups", [])}
    return [f"rule group {name!r} is not loaded" for name in sorted(expected - loaded)]


def dashboard_problems(search_api: list, expected: dict[str, str]) -> list[str]:
    present = {d.get("uid") for d in search_api if d.get("type") == "dash-db"}
    return [f"dashboard {title!r} (uid {uid}) is not in Grafana" for uid, title in sorted(expected.items())
            if uid not in present]


def log_query(trace_id: str, selector: str = LOG_SELECTOR) -> str:
    """LogQL for the lines of one trace: trace_id is structured metadata, filtered after the selector
    (a ``|=`` line filter would not see it)."""
    return f'{selector} | trace_id="{trace_id}"'


def log_problems(query_api: dict, labels_api: dict, trace_id: str) -> list[str]:
    """Problems in Loki's answers to ``log_query(trace_id)`` (query_range) and to the labels API."""
    lines = [value for stream in query_api.get("data", {}).get("result", [])
             for value in stream.get("values", [])]
    problems = [] if lines else [f"Loki has no line with trace_id {trace_id} ({log_query(trace_id)})"]
    labels = set(labels_api.get("data") or [])
    problems += [f"Loki has a label {name}: ids must stay structured metadata (one stream per value)"
                 for name in ID_FIELDS if name in labels]
    return problems


def datasource_problems(logs: dict, traces: dict) -> list[str]:
    """Problems of the links between Grafana's Loki (``logs``) and Tempo (``traces``) data sources,
    as /api/datasources/uid/<uid> returns them."""
    problems = []
    fields = (logs.get("jsonData") or {}).get("derivedFields") or []
    link = next((f for f in fields if f.get("matcherRegex") == "trace_id"), None)
    if link is None:
        problems.append("Grafana's Loki data source has no derived field for trace_id")
    else:
        if link.get("datasourceUid") != traces.get("uid"):
            problems.append(f"the trace_id field opens data source {link.get('datasourceUid')!r}, "
                            f"not Tempo ({traces.get('uid')!r})")
        if link.get("url") != "${__value.raw}":
            problems.append(f"the trace_id field's link is {link.get('url')!r}, not '${{__value.raw}}' "
                            "(the provisioning file's $$ escaping)")
    to_logs = (traces.get("jsonData") or {}).get("tracesToLogsV2") or {}
    if to_logs.get("datasourceUid") != logs.get("uid"):
        problems.append(f"Tempo's trace-to-logs opens {to_logs.get('datasourceUid')!r}, not Loki "
                        f"({logs.get('uid')!r})")
    if '| trace_id="${__trace.traceId}"' not in str(to_logs.get("query")):
        problems.append(f"Tempo's trace-to-logs query {to_logs.get('query')!r} does not filter "
                        'trace_id="${__trace.traceId}"')
    return problems


def check_datasources(grafana: str, auth: tuple[str, str], logs_uid: str = "logs", traces_uid: str = "traces",
                      wait: float = 120.0) -> list[str]:
    """Poll Grafana until its Loki and Tempo data sources are there and link to each other."""
    def get(uid: str) -> Any:
        response = requests.get(f"{grafana}/api/datasources/uid/{uid}", timeout=10, auth=auth)
        response.raise_for_status()
        return response.json()

    return poll("data sources", lambda: datasource_problems(get(logs_uid), get(traces_uid)), wait)


def check_logs(loki: str, trace_id: str, wait: float = 180.0) -> list[str]:
    """Poll Loki until the line of ``trace_id`` is there (the collector batches, Loki flushes)."""
    def get(path: str, **params: str) -> Any:
        response = requests.get(f"{loki}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    problems = poll("logs", lambda: log_problems(
        get("/loki/api/v1/query_range", query=log_query(trace_id), since="1h", limit="10"),
        get("/loki/api/v1/labels", since="1h"), trace_id), wait)
    print(f"cluster checks: Loki asked for trace {trace_id}; {len(problems)} problems", flush=True)
    return problems


def poll(name: str, probe: Callable[[], list[str]], wait: float, interval: float = 5.0) -> list[str]:
    """Run ``probe`` until it reports no problem or ``wait`` runs out; return the last problems."""
    deadline = time.monotonic() + wait
    while True:
        try:
            problems = probe()
        except (requests.RequestException, ValueError) as exc:
            problems = [f"{name}: {exc.__class__.__name__}: {exc}"]
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(interval)


def run(prometheus: str, grafana: str, auth: tuple[str, str], job: str = JOB, wait: float = 240.0,
        rule_files: Sequence[Path] | None = None, dashboard_files: Sequence[Path] | None = None,
        dependency_jobs: Sequence[str] = ()) -> list[str]:
    """Return every problem found (an empty list means Prometheus and Grafana are as the repo says)."""
    rules = expected_rule_groups(dashboards.rule_files() if rule_files is None else rule_files)
    boards = expected_dashboards(dashboards.dashboard_files() if dashboard_files is None else dashboard_files)

    def get(url: str, auth: tuple[str, str] | None = None) -> Any:
        response = requests.get(url, timeout=10, auth=auth)
        response.raise_for_status()
        return response.json()

    problems = poll("targets", lambda: target_problems(get(f"{prometheus}/api/v1/targets?state=active"), job),
                    wait)
    for dependency in dependency_jobs:
        problems += poll(f"targets {dependency}", lambda d=dependency: target_problems(
            get(f"{prometheus}/api/v1/targets?state=active"), d), wait)
    if PROBE_JOB in dependency_jobs:
        problems += poll("probe", lambda: probe_problems(get(
            f"{prometheus}/api/v1/query?query=probe_success%7Bjob%3D%22{PROBE_JOB}%22%7D")), wait)
    problems += poll("rules", lambda: rule_problems(get(f"{prometheus}/api/v1/rules"), rules), wait)
    problems += poll("dashboards", lambda: dashboard_problems(
        get(f"{grafana}/api/search?type=dash-db", auth), boards), wait)
    print(f"cluster checks: job {job} scraped, {len(rules)} rule groups, {len(boards)} dashboards expected; "
          f"{len(problems)} problems", flush=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--grafana", required=True, help="Grafana base URL")
    parser.add_argument("--job", default=JOB, help=f"scrape job of the app (default {JOB})")
    parser.add_argument("--wait", type=float, default=240.0, help="seconds each check may take")
    args = parser.parse_args(argv)
    auth = (os.environ.get("GRAFANA_USER", "admin"), os.environ.get("GRAFANA_PASSWORD", ""))
    problems = run(args.prometheus.rstrip("/"), args.grafana.rstrip("/"), auth, args.job, args.wait)
    for problem in problems:
        print(f"cluster checks: FAIL {problem}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

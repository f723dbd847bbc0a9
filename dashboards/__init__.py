"""Dashboards, rules and SLOs are data; this module is the one loader for infra and tests.

Usage:
    from dashboards import load_slo, dashboard_files, rule_files
    slo = load_slo()                       # dashboards/slo.yaml as a typed SLO
    for path in dashboard_files(): ...     # dashboards/*.json (Grafana dashboards)
    for path in rule_files(): ...          # dashboards/rules/*.yaml (plain Prometheus rule files)
    for query in dashboard_queries(): ...  # every PromQL target of every dashboard panel

It needs only PyYAML: the load-test pods carry this file and slo.yaml alone. What is generated
from the SLO (rules, dashboards) is built by ``python -m dashboards.generate`` (``make dashboards``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SLO_FILE = HERE / "slo.yaml"
RULES_DIR = HERE / "rules"
# The load-test gate checks p99; it equals the latency SLO only when the target is this quantile.
LOADTEST_LATENCY_QUANTILE = 0.99
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@dataclass(frozen=True)
class LoadTestThresholds:
    max_failure_ratio: float
    p95_seconds: float
    p99_seconds: float  # every request but logins
    login_p99_seconds: float = 0.0  # logins (login_route); 0: logins are held to p99_seconds
    login_route: str = ""  # the path (Locust's request name) of logins


@dataclass(frozen=True)
class BurnRateAlert:
    """One long/short window pair of the multi-window, multi-burn-rate policy."""

    long: str
    short: str
    burn_rate: float
    severity: str
    for_: str


@dataclass(frozen=True)
class Service:
    """One service the platform runs (``services`` in slo.yaml): what its dashboard selects."""

    name: str  # the pods' app.kubernetes.io/name, which the log collector makes service_name
    title: str
    dashboard: str  # the dashboard's uid and file name
    job: str  # its metrics job
    deployment: str
    container: str
    hpa: str
    objectives: tuple[str, ...]
    sections: tuple[str, ...]


SECTIONS = frozenset({"objectives", "http", "pods", "users", "outbox", "events", "broker", "logs"})


@dataclass(frozen=True)
class SLO:
    service: str
    window: str
    availability_target: float
    latency_target: float
    latency_threshold_seconds: float
    loadtest: LoadTestThresholds
    login_target: float  # logins (login_route), left out of the latency objective
    login_threshold_seconds: float
    login_route: str
    burn_rate_alerts: tuple[BurnRateAlert, ...] = ()
    runbooks: str = "README.md"  # the page whose sections the alerts' runbook_url point at
    # The notifier: events emailed (commit to SMTP acceptance) within the threshold.
    notifier_target: float = 0.99
    notifier_threshold_seconds: float = 60.0
    services: tuple[Service, ...] = ()

    def runbook_url(self, section: str) -> str:
        """The link to a section of the runbooks page (GitHub's anchor for its heading)."""
        return f"{self.runbooks}#{section}"

    def error_budget(self, objective: str) -> float:
        """Return the share of requests allowed to be bad: 1 - target, without float noise."""
        return round(1 - getattr(self, f"{objective}_target"), 12)


def duration_seconds(text: str) -> float:
    """Parse a Prometheus duration such as ``1h30m`` or ``3d``."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def load_slo(path: Path = SLO_FILE) -> SLO:
    """Read and check the SLO file; derive the load-test thresholds from the objectives."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    objectives = raw["objectives"]
    availability = float(objectives["availability"]["target"])
    latency = float(objectives["latency"]["target"])
    threshold = float(objectives["latency"]["threshold_seconds"])
    login = objectives["login"]
    login_target, login_threshold = float(login["target"]), float(login["threshold_seconds"])
    login_route = str(login["route"])
    notifier = objectives["notifier"]
    notifier_target, notifier_threshold = float(notifier["target"]), float(notifier["threshold_seconds"])
    if not 0 < notifier_target < 1 or notifier_threshold <= 0:
        raise ValueError(f"{path}: notifier.target must be between 0 and 1, its threshold_seconds above 0")
    for name, value in (("availability_target", availability), ("latency_target", latency),
                        ("login_target", login_target)):
        if not 0 < value < 1:
            raise ValueError(f"{path}: {name} must be between 0 and 1")
    if not login_route.startswith("/api/") or not threshold <= login_threshold:
        raise ValueError(f"{path}: login.route must be an API route and login.threshold_seconds at least "
                         "the latency threshold")
    loadtest = dict(raw.get("loadtest") or {})
    derived = {"max_failure_ratio", "p99_seconds"} & set(loadtest)
    if derived:
        raise ValueError(f"{path}: loadtest.{', '.join(sorted(derived))} derive from the objectives; "
                         "remove them")
    if latency != LOADTEST_LATENCY_QUANTILE:
        raise ValueError(f"{path}: the load-test gate holds p99 to the latency threshold, which is the SLO "
                         f"only at a latency target of {LOADTEST_LATENCY_QUANTILE}; change the gate too")
    if login_target != LOADTEST_LATENCY_QUANTILE:
        raise ValueError(f"{path}: the load-test gate holds logins' p99 to the login threshold, which is "
                         f"the objective only at a target of {LOADTEST_LATENCY_QUANTILE}")
    p95 = float(loadtest.pop("p95_seconds"))
    if loadtest:
        raise ValueError(f"{path}: unknown loadtest keys {sorted(loadtest)}")
    if not 0 < p95 <= threshold:
        raise ValueError(f"{path}: loadtest.p95_seconds must be above 0 and at most the latency threshold")
    alerts = tuple(_burn_rate_alert(path, a) for a in raw.get("burn_rate_alerts") or ())
    slo = SLO(
        service=raw["service"],
        window=raw["window"],
        availability_target=availability,
        latency_target=latency,
        latency_threshold_seconds=threshold,
        loadtest=LoadTestThresholds(max_failure_ratio=round(1 - availability, 12), p95_seconds=p95,
                                    p99_seconds=threshold, login_p99_seconds=login_threshold,
                                    login_route=login_route),
        login_target=login_target,
        login_threshold_seconds=login_threshold,
        login_route=login_route,
        burn_rate_alerts=alerts,
        runbooks=raw["runbooks"],
        notifier_target=notifier_target,
        notifier_threshold_seconds=notifier_threshold,
        services=tuple(_service(path, s, set(objectives)) for s in raw.get("services") or ()),
    )
    duration_seconds(slo.window)
    return slo


def _burn_rate_alert(path: Path, raw: dict[str, Any]) -> BurnRateAlert:
    alert = BurnRateAlert(long=raw["long"], short=raw["short"], burn_rate=float(raw["burn_rate"]),
                          severity=raw["severity"], for_=raw["for"])
    if not duration_seconds(alert.short) < duration_seconds(alert.long):
        raise ValueError(f"{path}: burn-rate window {alert.long}/{alert.short}: short must be below long")
    duration_seconds(alert.for_)
    if alert.severity not in {"page", "ticket"}:
        raise ValueError(f"{path}: severity {alert.severity!r} is neither page nor ticket")
    return alert


def _service(path: Path, raw: dict[str, Any], objectives: set[str]) -> Service:
    service = Service(name=str(raw["name"]), title=str(raw["title"]), dashboard=str(raw["dashboard"]),
                      job=str(raw["job"]), deployment=str(raw["deployment"]),
                      container=str(raw["container"]), hpa=str(raw.get("hpa", raw["deployment"])),
                      objectives=tuple(raw.get("objectives") or ()), sections=tuple(raw["sections"]))
    unknown = (set(service.objectives) - objectives) | (set(service.sections) - SECTIONS)
    if unknown:
        raise ValueError(f"{path}: service {service.name} names unknown objectives or sections "
                         f"{sorted(unknown)} (sections: {sorted(SECTIONS)})")
    return service


def dashboard_files() -> list[Path]:
    return sorted(HERE.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def rule_groups(paths: list[Path] | None = None) -> list[dict[str, Any]]:
    """Return the groups of the rule files, in file order."""
    return [g for p in (rule_files() if paths is None else paths)
            for g in (yaml.safe_load(p.read_text()) or {}).get("groups") or []]


def alert_names(paths: list[Path] | None = None) -> list[str]:
    """Return the name of every alerting rule of the rule files, in file order."""
    return [rule["alert"] for group in rule_groups(paths) for rule in group["rules"] if "alert" in rule]


@dataclass(frozen=True)
class PanelQuery:
    """One PromQL target of a dashboard panel."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    exemplar: bool


def dashboard_queries(paths: list[Path] | None = None) -> Iterator[PanelQuery]:
    """Yield every Prometheus target of every panel, rows' panels included (Loki's LogQL targets,
    ``datasource.type`` loki, are not PromQL: ``log_queries`` yields those)."""
    for path in dashboard_files() if paths is None else paths:
        board = json.loads(path.read_text())
        for panel in _panels(board.get("panels") or []):
            for target in panel.get("targets") or []:
                if "expr" in target and not _is_loki(target, panel):
                    yield PanelQuery(board["uid"], panel.get("title", ""), target.get("refId", ""),
                                     target["expr"], bool(target.get("exemplar")))


def log_queries(paths: list[Path] | None = None) -> Iterator[PanelQuery]:
    """Yield every Loki (LogQL) target of every panel."""
    for path in dashboard_files() if paths is None else paths:
        board = json.loads(path.read_text())
        for panel in _panels(board.get("panels") or []):
            for target in panel.get("targets") or []:
                if "expr" in target and _is_loki(target, panel):
                    yield PanelQuery(board["uid"], panel.get("title", ""), target.get("refId", ""),
                                     target["expr"], False)


def _is_loki(target: dict[str, Any], panel: dict[str, Any]) -> bool:
    source = target.get("datasource") or panel.get("datasource") or {}
    return source.get("type") == "loki"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # collapsed rows hold their panels

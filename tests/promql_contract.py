"""The metrics contract: every selector in the rules and dashboards names a metric that exists.

A metric exists when the running app exposes it on /metrics, when a rule file records it, or when
it is on KUBERNETES below (series the monitoring stack itself produces). An exporter's metrics are
checked the same way against that exporter's real /metrics (``Catalogue.delegated``). Equality matchers on the
app's own labels must name values the app really writes (``le="0.25"``, ``route="/readyz"``).
Expressions are parsed with promql-parser (the Rust PromQL parser's Python binding), never with
regular expressions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import promql_parser
from prometheus_client.parser import text_string_to_metric_families

# Series that come from the monitoring stack, not from the app: they cannot be scraped in a test,
# so each is listed with its source. Names checked against kube-state-metrics' docs
# (docs/metrics/workload/*.md) and the kubelet's cAdvisor endpoint as kube-prometheus-stack
# scrapes it. A test fails if an entry is no longer used.
KUBERNETES: dict[str, str] = {
    "up": "Prometheus, one per scrape target (1 when the scrape succeeded)",
    "kube_pod_container_status_ready": "kube-state-metrics, 1 per container passing readiness",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics, HPA status",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics, HPA spec",
    "kube_horizontalpodautoscaler_spec_min_replicas": "kube-state-metrics, HPA spec",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics, HPA status",
    "kube_pod_container_status_restarts_total": "kube-state-metrics, container restarts",
    "kube_pod_container_status_waiting_reason": "kube-state-metrics, e.g. reason=CrashLoopBackOff",
    "container_cpu_usage_seconds_total": "cAdvisor (kubelet), CPU seconds per container",
    "container_memory_working_set_bytes": "cAdvisor (kubelet), working set per container",
}
# Labels the scrape adds (Prometheus and the operator's ServiceMonitor), not the app.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "endpoint"})
# Sample names each metric type writes in the text format (a family without samples yet, such as a
# labelled counter nothing has incremented, still declares its type).
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "untyped": ("",),
            "unknown": ("",), "stateset": ("",), "gaugehistogram": ("_bucket", "_gcount", "_gsum")}
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__interval": "1s", "$__range": "1m"}


@dataclass(frozen=True)
class Selector:
    name: str
    equal: tuple[tuple[str, str], ...]  # label=value matchers other than the name


@dataclass
class Catalogue:
    """What exists: sample names with the label values seen, recorded names with their labels."""

    samples: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    recorded: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    # Name prefixes another test checks against the exporters that write them (the app's contract
    # leaves pg_, redis_ and probe_ to tests/test_dependencies_live.py).
    delegated: tuple[str, ...] = ()

    def add_exposition(self, text: str, declared: Iterable[str] | None = None) -> Catalogue:
        """Add what ``text`` exposes. A family the exposition declares without samples (a labelled
        counter nothing has touched) counts when it is in ``declared`` (None: every family); it
        has no series in Prometheus, so a fresh app's check names the few born with traffic."""
        # The names as exposed, which Prometheus stores unchanged. prometheus_client's parser adds
        # `_total` to a counter's samples that lack it (exporters' pg_stat_database_xact_commit),
        # so its sample names are mapped back to these.
        exposed = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()
                   if line and not line.startswith("#")}
        born = None if declared is None else set(declared)
        for family in text_string_to_metric_families(text):
            if (not family.samples) if born is None else (family.name in born):
                for suffix in SUFFIXES.get(family.type, ("",)):
                    self.samples.setdefault(family.name + suffix, {})
                if born is not None:  # label values come with the traffic: none to compare yet
                    continue
            for sample in family.samples:
                name = sample.name
                if name not in exposed and name.endswith("_total") and name[:-6] in exposed:
                    name = name[:-6]
                labels = self.samples.setdefault(name, {})
                for key, value in sample.labels.items():
                    labels.setdefault(key, set()).add(value)
        return self

    def add_rules(self, groups: Iterable[dict[str, Any]]) -> Catalogue:
        for group in groups:
            for rule in group["rules"]:
                if "record" in rule:
                    labels = self.recorded.setdefault(rule["record"], defaultdict(set))
                    for key, value in (rule.get("labels") or {}).items():
                        labels[key].add(value)
        return self


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's interval variables with durations, as Grafana does before querying."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def selectors(expr: str) -> list[Selector]:
    """Return every vector selector in ``expr`` (inside range selectors and subqueries too)."""
    found: list[Selector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = list(node.matchers.matchers)
            name = node.name or next((m.value for m in matchers if m.name == "__name__"), "")
            equal = tuple((m.name, m.value) for m in matchers
                          if m.op == promql_parser.MatchOp.Equal and m.name != "__name__")
            found.append(Selector(name, equal))

    promql_parser.walk(promql_parser.parse(grafana_to_promql(expr)), visit)
    return found


def problems(where: str, expr: str, catalogue: Catalogue) -> list[str]:
    """Return what in ``expr`` does not exist, as messages naming ``where``."""
    try:
        found = selectors(expr)
    except Exception as exc:  # promql-parser raises its own ValueError subclasses
        return [f"{where}: does not parse: {exc}"]
    messages = []
    for selector in found:
        if not selector.name:
            messages.append(f"{where}: a selector without a metric name")
            continue
        if selector.name.startswith(catalogue.delegated):
            continue
        known = catalogue.samples.get(selector.name, catalogue.recorded.get(selector.name))
        if known is None:
            if selector.name not in KUBERNETES:
                messages.append(f"{where}: {selector.name} is neither exposed by the app, recorded by a "
                                "rule, nor on the Kubernetes allow-list")
            continue
        for label, value in selector.equal:
            # A family without samples yet has no label values to compare with.
            if label not in TARGET_LABELS and known and value not in known.get(label, set()):
                messages.append(f'{where}: {selector.name}{{{label}="{value}"}} matches nothing the '
                                f"app writes (seen: {sorted(known.get(label, set()))[:8]})")
    return messages

"""Progressive delivery: the Argo Rollouts controller, and the canary a Rollout releases with.

``ProgressiveDelivery`` installs the controller from its official chart (pinned, ``ROLLOUTS_CHART``).
``Canary`` is what ObservableService needs to put a Rollout where its Deployment was: the canary
steps of the Rollout, and the ``AnalysisTemplate`` that judges the canary while it runs.

The analysis asks the stack's Prometheus the SLO's own questions: the 5-minute error ratios of
the recording rules in dashboards/rules/slo.yaml (availability and latency, read from the rule
file, one source), restricted to the canary's pods by the ``rollouts_pod_template_hash`` label
(the ServiceMonitor copies the pod label onto every series). A ratio above the fastest page's
burn rate times the error budget (dashboards/slo.yaml: 14.4 x 0.1% for availability) fails a
measurement; ``failure_limit`` + 1 failures abort the rollout, and the controller scales the
canary away. No data (no traffic reached the canary yet) is inconclusive, neither pass nor fail.

Traffic is split by replicas: the Service selects stable and canary pods alike, so a step's weight
is the share of pods. With a Gateway API edge, the Rollout takes ``trafficRouting.plugins``
(argoproj-labs/gatewayAPI) naming the HTTPRoute, and weights become exact (infra/README.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

import dashboards
from infra.components.charts import pinned_release
from infra.components.pods import namespace_meta
from infra.helm import without_nulls

ROLLOUTS_CHART = ("argo-rollouts", "2.41.0", "https://argoproj.github.io/argo-helm")
RELEASE = "argo-rollouts"
HASH_LABEL = "rollouts-pod-template-hash"  # the controller labels each ReplicaSet's pods with it
HASH_SERIES_LABEL = "rollouts_pod_template_hash"  # the same label on the scraped series
CANARY_HASH_ARG = "canary-hash"
SLI_RECORD = "lookout:sli_error:ratio_rate5m"  # the burn-rate alerts' short window, per SLO
# The objectives a canary is judged by. Not logins: a canary's share of a few minutes holds too few
# of them to judge (none gives no ratio, an inconclusive analysis that pauses the release); their
# own burn-rate alerts watch them.
CANARY_OBJECTIVES = ("availability", "latency")
_SELECTOR = re.compile(r"(?<![\w:{])([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


@dataclass(frozen=True)
class SloQuery:
    """One SLO's canary question: its error ratio for the canary's pods, and the most it may be."""

    slo: str
    query: str
    max_error_ratio: float


def canary_selector(expr: str, placeholder: str = f"{{{{args.{CANARY_HASH_ARG}}}}}") -> str:
    """Restrict every selector of ``expr`` to the canary's series (the label the ServiceMonitor copies)."""
    restricted, count = _SELECTOR.subn(lambda m: f'{m.group(1)}{{{HASH_SERIES_LABEL}="{placeholder}", ', expr)
    if not count:
        raise ValueError(f"no selector with labels in {expr!r}")
    return restricted


def slo_queries(rule_files: Sequence[Any] | None = None) -> list[SloQuery]:
    """The canary's questions, from the rule files' SLI recording rules and the SLO's fastest burn rate."""
    slo = dashboards.load_slo()
    fastest = max(slo.burn_rate_alerts, key=lambda a: a.burn_rate)
    records = [rule for group in dashboards.rule_groups(list(rule_files) if rule_files else None)
               for rule in group["rules"] if rule.get("record") == SLI_RECORD
               and rule["labels"]["slo"] in CANARY_OBJECTIVES]
    if not records:
        raise ValueError(f"the rule files record no {SLI_RECORD}: run make dashboards")
    return [SloQuery(rule["labels"]["slo"], canary_selector(rule["expr"]),
                     round(fastest.burn_rate * slo.error_budget(rule["labels"]["slo"]), 12))
            for rule in records]


@dataclass(frozen=True)
class Canary:
    """The Rollout's canary: pod shares per step, the pause after each, and how the analysis judges."""

    prometheus_url: str
    weights: Sequence[int] = (20, 50)
    pause: str = "2m"
    analysis_interval: str = "1m"
    failure_limit: int = 1
    depends_on: Sequence[pulumi.Resource] = ()  # the controller's release, which brings the CRDs

    def strategy(self, template_name: str) -> dict[str, Any]:
        """The Rollout's ``spec.strategy``: canary steps with the SLO analysis in the background."""
        steps: list[dict[str, Any]] = []
        for weight in self.weights:
            steps += [{"setWeight": weight}, {"pause": {"duration": self.pause}}]
        return {"canary": {
            "maxSurge": "25%", "maxUnavailable": 0, "steps": steps,
            # From the first step on, until the Rollout is promoted: a failure aborts it at any step.
            "analysis": {"templates": [{"templateName": template_name}], "startingStep": 1,
                         "args": [{"name": CANARY_HASH_ARG,
                                   "valueFrom": {"podTemplateHashValue": "Latest"}}]},
        }}

    def analysis_spec(self, queries: Sequence[SloQuery]) -> dict[str, Any]:
        """The AnalysisTemplate's spec: one metric per SLO, on the stack's Prometheus."""
        metrics = []
        for q in queries:
            known = "len(result) > 0 && !isNaN(result[0])"  # no traffic yet: inconclusive
            metrics.append({
                "name": f"{q.slo}-burn", "interval": self.analysis_interval,
                "failureLimit": self.failure_limit,
                "successCondition": f"{known} && result[0] <= {q.max_error_ratio}",
                "failureCondition": f"{known} && result[0] > {q.max_error_ratio}",
                "provider": {"prometheus": {"address": self.prometheus_url, "query": q.query}},
            })
        return {"args": [{"name": CANARY_HASH_ARG}], "metrics": metrics}


@dataclass(frozen=True)
class ProgressiveDeliveryArgs:
    namespace: str = "argo-rollouts"


class ProgressiveDelivery(pulumi.ComponentResource):
    """The Argo Rollouts controller (its CRDs with it), from the official chart."""

    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: ProgressiveDeliveryArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:rollouts:ProgressiveDelivery", name, None, opts)
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace),
                                   opts=pulumi.ResourceOptions(parent=self))
        self.release = pinned_release(
            f"{name}-controller", ROLLOUTS_CHART, release=RELEASE, namespace=args.namespace,
            values=controller_values(), opts=pulumi.ResourceOptions(parent=self, depends_on=[ns]))
        self.register_outputs({})


def controller_values() -> dict[str, Any]:
    """The chart's values: CRDs kept on uninstall (Rollouts must not vanish), one controller, sized."""
    return without_nulls("argo-rollouts", {
        "installCRDs": True, "keepCRDs": True,
        "controller": {"replicas": 1, "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                                    "limits": {"memory": "256Mi"}}},
        "dashboard": {"enabled": False},
    })

"""The stacks and variants the infra tests render, and the synthetic repo files they deploy."""

from __future__ import annotations

from typing import Any

# name -> (stack, config overrides, files: "repo" = the repo's own, "synthetic" = the tmp set)
CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    "dev": ("dev", {}, "repo"),
    "prod": ("prod", {}, "repo"),
    "dev-synthetic-loadtest": ("dev", {"loadtestEnabled": True}, "synthetic"),
    "prod-2-workers-rps-loadtest": (
        "prod",
        {
            "gunicornWorkers": 2,
            "memoryRequest": "2Gi",
            "memoryLimit": "2Gi",
            "targetRequestsPerSecond": 40,
            "grafanaServiceType": "LoadBalancer",
            "loadtestEnabled": True,
            "loadtestRunTime": "5m",
            "loadtestPipPackages": [],
            "image": "ghcr.io/lookout/lookout@sha256:" + "0" * 64,
        },
        "repo+locust",
    ),
}

SYNTHETIC_RULES = {
    "availability.yaml": {
        "groups": [
            {
                "name": "lookout-availability",
                "rules": [
                    {
                        "record": "lookout:request_errors:ratio_rate5m",
                        "expr": 'sum(rate(http_requests_total{status=~"5.."}[5m]))'
                        " / sum(rate(http_requests_total[5m]))",
                    },
                    {
                        "alert": "LookoutErrorBudgetBurn",
                        "expr": "lookout:request_errors:ratio_rate5m > 14.4 * 0.001",
                        "for": "2m",
                        "labels": {"severity": "page"},
                        "annotations": {"summary": "Errors burn the budget"},
                    },
                ],
            }
        ]
    },
    "latency.yaml": {
        "groups": [
            {
                "name": "lookout-latency",
                "interval": "30s",
                "rules": [
                    {
                        "alert": "LookoutSlow",
                        "expr": "histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 0.25",
                        "for": "10m",
                        "labels": {"severity": "ticket"},
                    }
                ],
            }
        ]
    },
}
SYNTHETIC_LOCUST = {
    "loadtests/__init__.py": "",
    "loadtests/locustfile.py": (
        "from dashboards import load_slo\nfrom loadtests.personas import Reader  # noqa: F401\n"
    ),
    "loadtests/personas.py": "class Reader:\n    pass\n",
    "loadtests/shapes/__init__.py": "STAGES = []\n",
}

"""The load-test limits of the SLO: the one place the load tests read ``dashboards/slo.yaml``.

Usage:
    limits = thresholds()   # .max_failure_ratio, .p95_seconds, .p99_seconds
"""

from __future__ import annotations

from dashboards import LoadTestThresholds, load_slo


def thresholds() -> LoadTestThresholds:
    """Return the load-test limits of the SLO file (through ``dashboards.load_slo``)."""
    return load_slo().loadtest

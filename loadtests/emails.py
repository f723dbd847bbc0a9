"""What a load run's writers caused downstream: welcome emails and their event-to-email latency.

The arithmetic is pure and tested: ``histogram`` (cumulative buckets of the notifier's
``lookout_notifier_event_to_email_seconds`` from a /metrics text, summed over its labels),
``quantile`` (as PromQL's ``histogram_quantile``: linear inside the bucket that holds the rank),
``share_within`` (the share at or under a bucket bound, the SLO threshold), ``since`` (what a
scrape holds beyond an earlier one), ``created_users``
(the writers' successful creations, from Locust's stats CSV), ``vector_buckets`` and
``vector_total`` (the same from a Prometheus query's answer, for a run in the cluster, which reads
the notifier's metrics through Prometheus: ``latency_query``, ``welcome_query``) and
``violations`` (the verdict against the notifier SLO).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LATENCY_METRIC = "lookout_notifier_event_to_email_seconds"
CREATE_REQUEST = ("POST", "/api/v1/users")  # the writer persona's creation, as Locust names it
WRITER_USER_PREFIX = "user-"  # the writers' new users' addresses (accounts.new_email("user"))

Buckets = Sequence[tuple[float, float]]  # (upper bound, cumulative count), ascending, +Inf last


@dataclass(frozen=True)
class EmailResult:
    """The emails part of a load run's report."""

    users_created: int  # by the writer persona, as Locust counted its 201s
    emails: int  # welcome emails the SMTP sink received for those users
    count: int  # events the notifier's latency histogram observed (every template)
    p50: float
    p95: float
    p99: float
    within_threshold: float  # share of ``count`` emailed within ``threshold_seconds``
    threshold_seconds: float
    waited_seconds: float  # from the end of the load to the last email (or to giving up)
    target: float = math.nan  # the notifier SLO's share within the threshold; NaN: no verdict
    emails_label: str = "their welcome emails received"  # what ``emails`` counted
    how: str = ""  # how it was measured, when not as ``make loadtest`` does (the section says)


def violations(result: EmailResult) -> list[str]:
    """Every way ``result`` breaks the notifier SLO: writers' users without their welcome email,
    or a share within the threshold below the target; empty: it holds."""
    found = []
    if result.users_created > result.emails:
        found.append(f"{result.users_created - result.emails} of the writers' {result.users_created} users "
                     "have no welcome email")
    if result.count == 0:
        found.append("no email was measured")
    elif result.within_threshold < result.target:
        found.append(f"{result.within_threshold:.2%} emailed within {result.threshold_seconds:g} s, below "
                     f"the SLO's {result.target:.2%}")
    return found


def latency_query(window_seconds: int) -> str:
    """PromQL: the notifier's latency buckets over the last ``window_seconds``, summed over pods and
    templates (``increase`` copes with pods that start, stop or restart in the window)."""
    return f"sum by (le) (increase({LATENCY_METRIC}_bucket[{window_seconds}s]))"


def welcome_query(window_seconds: int) -> str:
    """PromQL: welcome emails the notifier sent over the last ``window_seconds``."""
    return f'sum(increase(lookout_notifier_emails_sent_total{{template="welcome"}}[{window_seconds}s]))'


def vector_buckets(result: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    """Cumulative buckets from the ``data.result`` of an instant query by ``le``, ascending."""
    return sorted((float(series["metric"]["le"]), float(series["value"][1])) for series in result)


def vector_total(result: Sequence[dict[str, Any]]) -> float:
    """The value of a one-series instant query's ``data.result``; 0 when it has none."""
    return float(result[0]["value"][1]) if result else 0.0


def histogram(metrics_text: str, name: str = LATENCY_METRIC) -> list[tuple[float, float]]:
    """Cumulative buckets of histogram ``name`` in a Prometheus text exposition, summed over
    its label sets; empty when it is not there."""
    # Imported here: the in-cluster master (the locust image) has no prometheus_client, and reads
    # Prometheus's answers (vector_buckets) instead.
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                totals[bound] = totals.get(bound, 0.0) + sample.value
    return sorted(totals.items())


def since(after: Buckets, before: Buckets) -> list[tuple[float, float]]:
    """The observations ``after`` holds that ``before`` (an earlier scrape) did not."""
    earlier = dict(before)
    return [(bound, cumulative - earlier.get(bound, 0.0)) for bound, cumulative in after]


def total(buckets: Buckets) -> float:
    return buckets[-1][1] if buckets else 0.0


def quantile(q: float, buckets: Buckets) -> float:
    """The q-quantile as ``histogram_quantile`` computes it: NaN without observations; the
    highest finite bound when the rank falls in the +Inf bucket; otherwise linear within the
    bucket (from 0 for the first)."""
    count = total(buckets)
    if count == 0:
        return math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def share_within(threshold: float, buckets: Buckets) -> float:
    """The share of observations at or under ``threshold``, which must be a bucket bound (the
    SLO's threshold is one, dashboards/slo.yaml says so); NaN without observations."""
    count = total(buckets)
    if count == 0:
        return math.nan
    for bound, cumulative in buckets:
        if bound == threshold:
            return cumulative / count
    raise ValueError(f"{threshold} s is not a bucket bound of {LATENCY_METRIC}")


def created_users(stats_csv: Path) -> int:
    """Users the writers created: successful ``POST /api/v1/users`` in Locust's stats CSV (set-up
    requests, such as the seed users and the personas' accounts, are not in its stats)."""
    if not stats_csv.exists():
        return 0
    with stats_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            if (row["Type"], row["Name"]) == CREATE_REQUEST:
                return int(row["Request Count"]) - int(row["Failure Count"])
    return 0


def email_section(result: EmailResult | None, not_measured: str = "") -> list[str]:
    """The event-to-email part of the load-test summary; ``not_measured`` says why it is absent."""
    lines = ["## Event-to-email latency", ""]
    if result is None:
        return [*lines, f"Not measured: {not_measured}", ""]
    missing = result.users_created - result.emails
    lines += ["| | |", "|---|---|",
              f"| users created by the writers | {result.users_created} |",
              f"| {result.emails_label} | {result.emails}"
              f"{f' (**{missing} missing**)' if missing > 0 else ''} |",
              f"| events emailed during the run (latency histogram count) | {result.count} |",
              f"| p50 / p95 / p99 | {result.p50:.2f} s / {result.p95:.2f} s / {result.p99:.2f} s |",
              f"| within the SLO threshold ({result.threshold_seconds:g} s) "
              f"| {result.within_threshold:.2%} |",
              f"| waited after the load for the last email | {result.waited_seconds:.1f} s |",
              *([] if math.isnan(result.target) else [
                  f"| against the notifier SLO ({result.target:.0%} within {result.threshold_seconds:g} s) | "
                  + ("**FAIL**: " + "; ".join(broken) if (broken := violations(result)) else "**PASS**")
                  + " |"]), "",
              result.how or
              "From the change's commit (the event's `occurred_at`) to the SMTP server's acceptance: the "
              "notifier's `lookout_notifier_event_to_email_seconds`, percentiles interpolated within its "
              "buckets as `histogram_quantile` does. It counts every email of the run: the seed users' and "
              "the personas' accounts' too; the bootstrap admin's, written before the relay started, "
              "is left out (the histogram is read once before the load).", ""]
    return lines

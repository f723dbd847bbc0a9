"""The notifier's capacity arithmetic and report: what one consumer process emails per second
within the SLO, and the KEDA ScaledObject numbers (messages per replica, min and max replicas)
that follow. Pure and tested; ``notifier_capacity.py`` measures, this judges and sizes.

The sizing (infra/README.md, "Scaling behaviour", says the same):

    rate        = emails per second one consumer process sends with a backlog (the burst phase)
    value       = floor(rate x (threshold - polling - start) x utilisation)   messages per replica
    minReplicas = max(1, availability floor)          never 0: waking from zero costs polling + start
    maxReplicas = ceil(peak events/s / (rate x utilisation))

KEDA's queue-length trigger keeps about ``value`` messages waiting per replica, so the last of
them waits ``value / rate`` seconds; the budget for that wait is the SLO threshold less what a
scale-up takes (KEDA's polling interval and a new pod's start), during which the replicas already
running keep emailing. ``utilisation`` keeps the same headroom as the API's 70 % CPU target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

UTILISATION = 0.7  # the share of a replica's rate the sizing plans on (the API's HPA CPU target)
# The ScaledObject's pollingInterval (infra/components/keda.py; a test holds them equal).
KEDA_POLLING_SECONDS = 15
# Scheduling, image (cached) and the consumer's start: an estimate, not yet measured on a cluster.
POD_START_SECONDS = 15


@dataclass(frozen=True)
class Phase:
    """One measured phase: events published at ``offered`` per second (``math.inf``: at once)."""

    name: str
    offered: float
    published: int
    latencies: tuple[float, ...]  # event-to-email seconds of each email received, any order
    seconds: float  # from the first publish to the last email (or to giving up)
    rate: float  # emails per second, first to last email
    consumer_cores: float  # CPU the consumer process used on average over ``seconds``
    # Held to the SLO's latency: the hold is; the burst measures the rate, and its backlog is
    # whatever --messages says (every email must still arrive).
    held_to_slo: bool = True

    @property
    def emailed(self) -> int:
        return len(self.latencies)

    @property
    def missing(self) -> int:
        return self.published - self.emailed

    def quantile(self, q: float) -> float:
        return quantile(q, self.latencies)

    def within(self, threshold: float) -> float:
        """The share of the published events emailed within ``threshold`` (a missing one is not)."""
        if not self.published:
            return math.nan
        return sum(1 for latency in self.latencies if latency <= threshold) / self.published

    @property
    def cpu_ms_per_message(self) -> float:
        return 1000 * self.consumer_cores / self.rate if self.rate else math.nan


def quantile(q: float, values: Sequence[float]) -> float:
    """The q-quantile by nearest rank (the value at or above a share q of the sample); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rate_of(received: Sequence[float]) -> float:
    """Emails per second from the first to the last acceptance time (NaN with fewer than two)."""
    if len(received) < 2:
        return math.nan
    span = max(received) - min(received)
    return (len(received) - 1) / span if span > 0 else math.inf


def violations(phase: Phase, threshold: float, target: float) -> list[str]:
    """Every way ``phase`` breaks the notifier SLO (``target`` of events within ``threshold``)."""
    found = []
    if phase.missing:
        found.append(f"{phase.missing} of {phase.published} events were not emailed in time")
    share = phase.within(threshold)
    if phase.held_to_slo and phase.published and share < target:
        found.append(f"{share:.2%} of events emailed within {threshold:g} s, below the SLO's {target:.2%}")
    return found


@dataclass(frozen=True)
class ScalingAdvice:
    rate: float  # emails per second per replica (one consumer process)
    value: int  # the ScaledObject trigger's messages per replica
    min_replicas: int
    max_replicas: int
    wait_at_target: float  # seconds the last of ``value`` messages waits at ``rate``
    budget: float  # seconds of the threshold left for that wait


def advise(rate: float, threshold: float, peak_events: float, availability_floor: int = 1,
           utilisation: float = UTILISATION, polling: float = KEDA_POLLING_SECONDS,
           start: float = POD_START_SECONDS) -> ScalingAdvice:
    """Return the ScaledObject's numbers for replicas that each email ``rate`` per second."""
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"a consumer's rate must be a positive number of emails per second, not {rate}")
    budget = threshold - polling - start
    if budget <= 0:
        raise ValueError(f"the SLO threshold {threshold:g} s leaves no time once KEDA's polling "
                         f"({polling:g} s) "
                         f"and a pod's start ({start:g} s) are taken: lower them")
    value = max(1, math.floor(rate * budget * utilisation))
    return ScalingAdvice(rate=rate, value=value, min_replicas=max(1, availability_floor),
                         max_replicas=max(max(1, availability_floor),
                                          math.ceil(peak_events / (rate * utilisation))),
                         wait_at_target=value / rate, budget=budget)


def _seconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f} s"


def markdown(phases: Sequence[Phase], advice: ScalingAdvice | None, threshold: float, target: float,
             peak_events: float, about: dict[str, str], setup: dict[str, str]) -> str:
    """The notifier's section of the capacity report."""
    lines = ["# Notifier capacity: emails per second per consumer process within the SLO", "",
             "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in about.items()), "",
             *(f"- **{k}**: {v}" for k, v in setup.items()), "",
             f"The SLO: {target:.0%} of user events emailed within {threshold:g} s of the change's commit "
             "(dashboards/slo.yaml, `notifier`); latency is the SMTP server's acceptance less the event's "
             "`occurred_at`.", "",
             "| phase | offered/s | published | emailed | emails/s | p50 | p95 | p99 | within threshold "
             "| consumer CPU | ms CPU/email | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for phase in phases:
        broken = violations(phase, threshold, target)
        offered = "burst" if math.isinf(phase.offered) else f"{phase.offered:.1f}"
        lines.append(
            f"| {phase.name} | {offered} | {phase.published} | {phase.emailed} | {phase.rate:.1f} | "
            f"{_seconds(phase.quantile(0.5))} | {_seconds(phase.quantile(0.95))} | "
            f"{_seconds(phase.quantile(0.99))} | {phase.within(threshold):.2%} | "
            f"{phase.consumer_cores:.2f} cores | {phase.cpu_ms_per_message:.2f} | "
            f"{'FAIL: ' + '; '.join(broken) if broken else 'PASS' if phase.held_to_slo else 'all emailed'} |")
    lines.append("")
    if advice is None:
        lines.append("**No rate within the SLO**: nothing to size the ScaledObject from.")
        return "\n".join(lines) + "\n"
    lines += [
        f"**Capacity: {advice.rate:.1f} emails/s per consumer process** (one per notifier pod).", "",
        "## The ScaledObject", "",
        "| setting | value | from |", "|---|---:|---|",
        f"| trigger `value` (messages per replica) | **{advice.value}** | {advice.rate:.1f}/s x "
        f"({threshold:g} s - {KEDA_POLLING_SECONDS} s polling - {POD_START_SECONDS} s pod start) x "
        f"{UTILISATION:.0%}: the last of them waits {advice.wait_at_target:.1f} s of a "
        f"{advice.budget:g} s budget |",
        f"| `minReplicaCount` | **{advice.min_replicas}** | never 0: waking from zero costs the polling "
        "interval and a pod's start, most of the threshold |",
        f"| `maxReplicaCount` | **{advice.max_replicas}** | ceil({peak_events:g} events/s peak / "
        f"({advice.rate:.1f}/s x {UTILISATION:.0%})) |", ""]
    return "\n".join(lines) + "\n"

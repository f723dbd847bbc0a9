"""Prometheus rule files from the SLO: SLI recording rules, burn-rate alerts and operational alerts.

Written by hand rather than with an SLO generator: sloth and pyrra, the well-kept ones, are Go
programs that no package registry reachable here ships, and the rules are a few templates. Every
expression is parsed by a real PromQL parser, checked by promtool and run by Prometheus in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashboards import SLO, BurnRateAlert, duration_seconds

from .target import TARGET, Target, le, number

OBJECTIVES = ("availability", "latency", "login", "notifier")
REQUESTS = "http_server_requests_total"
DURATION = "http_server_request_duration_seconds"
EVENT_TO_EMAIL = "lookout_notifier_event_to_email_seconds"  # app/notifier/metrics.py
DEAD_LETTERS = "lookout_notifier_dead_letters_total"
OUTBOX_AGE = "lookout_outbox_oldest_unpublished_age_seconds"  # app/relay.py
# LookoutOutboxBacklogStale: the oldest unpublished event older than this (seconds). Five times the
# notifier's 60 s objective: every event behind it is already late, and a relay that restarts or
# retries a broker outage of a minute or two stays under it.
OUTBOX_MAX_AGE_SECONDS = 300
DEAD_LETTERS_WINDOW = "15m"  # LookoutNotifierDeadLettersGrowing: new dead letters within it


def ratio(objective: str, window: str) -> str:
    """Name of the recorded error ratio of an objective over a window (labelled slo=<objective>)."""
    return f'lookout:sli_error:ratio_rate{window}{{slo="{objective}"}}'


def windows(slo: SLO) -> list[str]:
    """Every window a burn-rate alert reads, shortest first."""
    found = {w for a in slo.burn_rate_alerts for w in (a.long, a.short)} | {"5m"}
    return sorted(found, key=duration_seconds)


def selector(slo: SLO, objective: str, t: Target = TARGET) -> str:
    """The requests an objective counts: API requests; for latency without logins, which the login
    objective counts (dashboards/slo.yaml says why)."""
    if objective == "latency":
        return f'{t.api}, route!="{slo.login_route}"'
    if objective == "login":
        return f'{t.app}, route="{slo.login_route}"'
    if objective == "notifier":
        return t.notifier
    return t.api


def threshold_seconds(slo: SLO, objective: str) -> float:
    if objective == "notifier":
        return slo.notifier_threshold_seconds
    return slo.login_threshold_seconds if objective == "login" else slo.latency_threshold_seconds


def bad_and_total(slo: SLO, objective: str, window: str, t: Target = TARGET) -> tuple[str, str]:
    """PromQL for the rate of bad requests and of all requests an objective counts over ``window``."""
    sel = selector(slo, objective, t)
    if objective == "notifier":
        # Events emailed plus events dead-lettered (never emailed: bad); the good ones are the
        # emails accepted within the threshold.
        total = (f"(sum(rate({EVENT_TO_EMAIL}_count{{{sel}}}[{window}]))"
                 f" + sum(rate({DEAD_LETTERS}{{{sel}}}[{window}])))")
        fast = (f'sum(rate({EVENT_TO_EMAIL}_bucket{{{sel}, le="{le(threshold_seconds(slo, objective))}"}}'
                f"[{window}]))")
        return f"{total} - {fast}", total
    if objective == "availability":
        total = f"sum(rate({REQUESTS}{{{sel}}}[{window}]))"
        # With no 5xx yet there is no 5xx series at all: zero, but only while there is traffic.
        return f'sum(rate({REQUESTS}{{{sel}, status=~"5.."}}[{window}])) or 0 * {total}', total
    total = f"sum(rate({DURATION}_count{{{sel}}}[{window}]))"
    fast = f'sum(rate({DURATION}_bucket{{{sel}, le="{le(threshold_seconds(slo, objective))}"}}[{window}]))'
    return f"{total} - {fast}", total


def sli_recordings(slo: SLO, t: Target = TARGET) -> list[dict[str, Any]]:
    """Error ratios over every alert window, and the SLO window's ratio for the dashboard."""
    rules: list[dict[str, Any]] = []
    for objective in OBJECTIVES:
        labels = {"slo": objective}
        for window in windows(slo):
            bad, total = bad_and_total(slo, objective, window, t)
            rules.append({"record": f"lookout:sli_error:ratio_rate{window}",
                          "expr": f"({bad}) / {total}", "labels": labels})
        bad, total = bad_and_total(slo, objective, "5m", t)
        rules += [{"record": "lookout:sli_errors:rate5m", "expr": bad, "labels": labels},
                  {"record": "lookout:sli_requests:rate5m", "expr": total, "labels": labels}]
        # Over the SLO window, from the 5-minute rates rather than the raw counters: a 30-day rate
        # over raw samples would read every sample of every series each evaluation. Summing rates
        # (not averaging ratios) weighs each moment by its traffic.
        sel = f'{{slo="{objective}"}}'
        rules.append({"record": f"lookout:sli_error:ratio_rate{slo.window}",
                      "expr": f"sum_over_time(lookout:sli_errors:rate5m{sel}[{slo.window}])"
                              f" / sum_over_time(lookout:sli_requests:rate5m{sel}[{slo.window}])",
                      "labels": labels})
    return rules


def alert_name(objective: str, alert: BurnRateAlert) -> str:
    return f"Lookout{objective.capitalize()}Burn{alert.long}"


def burn_rate_alerts(slo: SLO) -> list[dict[str, Any]]:
    """One alert per objective and window pair, firing when both windows burn too fast."""
    rules: list[dict[str, Any]] = []
    for objective in OBJECTIVES:
        budget = slo.error_budget(objective)
        for alert in slo.burn_rate_alerts:
            threshold = number(alert.burn_rate * budget)
            spent = number(100 * alert.burn_rate * duration_seconds(alert.long)
                           / duration_seconds(slo.window))
            rules.append({
                "alert": alert_name(objective, alert),
                "expr": f"{ratio(objective, alert.long)} > {threshold}\n"
                        f"and\n{ratio(objective, alert.short)} > {threshold}",
                "for": alert.for_,
                "labels": {"severity": alert.severity, "slo": objective,
                           "long_window": alert.long, "short_window": alert.short},
                "annotations": {
                    "summary": f"Lookout burns its {objective} error budget {number(alert.burn_rate)}x "
                               f"too fast over {alert.long} and {alert.short}",
                    "description": (
                        f"{{{{ $value | humanizePercentage }}}} of {WHAT[objective]} were {BAD[objective]} "
                        f"over the last {alert.long} (and over {alert.short}); the objective allows "
                        f"{number(100 * budget)}%. At {number(alert.burn_rate)}x, {spent}% of the "
                        f"{slo.window} budget goes in {alert.long}."),
                    "runbook": RUNBOOKS[objective],
                    "runbook_url": slo.runbook_url(f"{objective}-burn-rate-alerts"),
                },
            })
    return rules


BAD = {"availability": "answered with a server error (5xx)",
       "latency": "slower than the latency threshold",
       "login": "slower than the login threshold",
       "notifier": "emailed later than the threshold or dead-lettered"}
WHAT = {"availability": "API requests", "latency": "API requests (logins aside)", "login": "logins",
        "notifier": "user events"}
RUNBOOKS = {
    "availability": (
        "Check the SLO dashboard (which windows burn) and the overview's error ratio per route; "
        "the app's log lines with status >= 500 and their tracebacks "
        "(kubectl -n lookout logs deploy/lookout); /readyz and the database. "
        "Do: roll back a release that started it (redeploy the previous image); restore the database "
        "if it is failing; the alert clears once the short window is clean."),
    "latency": (
        "Check the overview: p99 per route, the exemplars' traces of slow requests, database latency "
        "against request latency, in-flight against the concurrency limit, CPU against the limit and "
        "the HPA against its maximum. "
        "Do: when saturated, raise maxReplicas or the pods' CPU; roll back a release that slowed it; "
        "fix slow statements the traces show."),
    "login": (
        "Check the overview: p99 of POST /api/v1/auth/token against the other routes, CPU per pod "
        "against its limit and request (every login hashes a password with Argon2id), the login rate "
        "(a credential-stuffing wave shows as many refused logins and 429s) and the HPA against its "
        "maximum. "
        "Do: when saturated by real logins, raise maxReplicas or the pods' CPU; tighten "
        "RATE_LIMIT_LOGIN against an attack; roll back a release that raised the hash cost."),
    "notifier": (
        "Check the SLO dashboard's notifier rows, the consumer lag (lookout_notifier_consumer_lag), "
        "temporary SMTP failures by template (lookout_notifier_emails_failed_total), dead letters "
        "by reason, the users service's outbox backlog and its relay, and the consumer's log lines "
        "(kubectl -n lookout logs deploy/lookout-notifier-consumer). "
        "Do: restore the SMTP server or its credentials (retries then drain the backlog); restart a "
        "stuck consumer; replay the dead-letter queue once the cause is fixed; add consumers when "
        "the lag grows under real load."),
}


@dataclass(frozen=True)
class Operational:
    """An alert about the service's machinery rather than its objectives."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str

    def rule(self, slo: SLO) -> dict[str, Any]:
        return {"alert": self.name, "expr": self.expr, "for": self.for_,
                "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary, "description": self.description,
                                "runbook": self.runbook, "runbook_url": slo.runbook_url(self.name.lower())}}


def operational_alerts(t: Target = TARGET) -> list[Operational]:
    """Target down, no traffic, readiness, saturation, crash loops, the HPA's ceiling and rate
    limits counted per pod."""
    hpa = f'namespace="{t.namespace}", horizontalpodautoscaler="{t.hpa}"'
    on_hpa = "on (namespace, horizontalpodautoscaler)"
    by_container = "max by (namespace, pod, container)"
    return [
        Operational(
            "LookoutTargetDown", f"up{{{t.app}}} == 0", "5m", "ticket",
            "A Lookout pod's metrics cannot be scraped",
            "Prometheus has failed to scrape {{ $labels.instance }} ({{ $labels.pod }}) for 5 minutes.",
            "Check the pod (kubectl -n lookout get pods; describe it), its /metrics on port 9100 and the "
            "NetworkPolicy admitting the monitoring namespace. Do: delete a wedged pod; fix the policy."),
        Operational(
            "LookoutNoTargetUp", f"absent(up{{{t.app}}} == 1)", "5m", "page",
            "No Lookout pod is up, or none is discovered",
            "No scrape target of job lookout-metrics has been up for 5 minutes: the service is down or "
            "Prometheus lost it, and the SLO alerts cannot see anything meanwhile.",
            "Check the Deployment and its pods (kubectl -n lookout get deploy,pods), the events, the "
            "ServiceMonitor and the lookout-metrics Service. Do: roll back a release that does not start; "
            "restore the ServiceMonitor's release label if Prometheus lost the target."),
        Operational(
            "LookoutNoTraffic",
            f"(sum(rate({REQUESTS}{{{t.api}}}[15m])) or 0 * sum(lookout_build_info{{{t.app}}})) == 0",
            "5m", "ticket",
            "Lookout is up but has served no API request for 20 minutes",
            "The pods are scraped, yet no API request reached them: the load balancer, DNS or clients "
            "are not sending any.",
            "Check the load balancer Service and its endpoints (kubectl -n lookout get svc,endpoints), "
            "readiness, and the clients. Do: restore the route to the pods. A stack without clients "
            "mutes it (alertsMuted)."),
        Operational(
            "LookoutReadinessFailing",
            f'sum by (namespace, pod) (rate({REQUESTS}{{{t.app}, route="/readyz", status!~"2.."}}[5m]))\n'
            f'/ sum by (namespace, pod) (rate({REQUESTS}{{{t.app}, route="/readyz"}}[5m])) > 0.5',
            "5m", "ticket",
            "A Lookout pod fails most readiness probes",
            "{{ $labels.pod }} failed {{ $value | humanizePercentage }} of its readiness probes over 5 "
            "minutes, so it is out of the load balancer.",
            "Check /readyz on the pod: it names the problem (database unreachable, schema not migrated). "
            "Do: run the migrations (the release's Job); restore the database or its NetworkPolicy."),
        Operational(
            "LookoutSaturated",
            f"sum(avg_over_time(http_server_requests_in_flight{{{t.app}}}[5m]))\n"
            f"/ sum(http_server_concurrency_limit{{{t.app}}}) > 0.8",
            "10m", "ticket",
            "Lookout uses over 80% of its request concurrency",
            "On average {{ $value | humanizePercentage }} of the pods' request slots were busy over 5 "
            "minutes; requests queue beyond it.",
            "Check the overview: in-flight, CPU against the limit, the HPA against its maximum, and "
            "database latency (slow statements hold slots). Do: raise maxReplicas or the pods' CPU; fix "
            "slow statements."),
        Operational(
            "LookoutPodCrashLooping",
            f'{by_container} (max_over_time(kube_pod_container_status_waiting_reason{{{t.containers}, '
            f'reason="CrashLoopBackOff"}}[5m])) >= 1\n'
            f"or {by_container} "
            f"(increase(kube_pod_container_status_restarts_total{{{t.containers}}}[15m])) >= 3",
            "10m", "ticket",
            "A Lookout pod keeps restarting",
            "{{ $labels.pod }} is in CrashLoopBackOff or restarted 3 times in 15 minutes.",
            "Check the previous container's log (kubectl -n lookout logs POD --previous) for a settings "
            "error or an out-of-memory kill (describe the pod). Do: fix the setting or secret; raise the "
            "memory limit if it was OOM-killed; roll back a bad release."),
        Operational(
            "LookoutHPAMaxedOut",
            f"kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}}\n"
            f">= {on_hpa} kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}}\n"
            f"and {on_hpa} kube_horizontalpodautoscaler_spec_min_replicas{{{hpa}}}\n"
            f"< {on_hpa} kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}}",
            "30m", "ticket",
            "Lookout's autoscaler has been at its maximum for 30 minutes",
            "The HPA runs {{ $value }} pods, its maximum; more load cannot be absorbed.",
            "Check the overview: is the load real (request rate) or are pods slow (CPU per pod, database "
            "latency)? Do: raise maxReplicas if the cluster has room; otherwise find what makes pods "
            "slow."),
        Operational(
            "LookoutRateLimitFallback",
            f"count(lookout_rate_limit_fallback{{{t.app}}} > 0) > 0",
            "10m", "ticket",
            "Lookout pods count rate limits alone: the rate-limit store fails them",
            "Lookout pods counting rate limits in their own memory for 10 minutes: {{ $value }}. Each "
            "grants the full limits by itself, so N pods allow N times the login and write budgets.",
            "Check the store (kubectl -n lookout-ratelimit get pods; logs deploy/lookout-ratelimit), the "
            "app's log line \"Rate limit storage unreachable\", the NetworkPolicies of both namespaces "
            "and the RATE_LIMIT_STORAGE_URL secret. Do: restore the store or its policy (a new store pod "
            "starts with empty counts); each pod returns to it on a write within a minute of it "
            "answering."),
        *messaging_alerts(t),
    ]


def messaging_alerts(t: Target = TARGET) -> list[Operational]:
    """The events' way from the outbox to an email: the relay, the broker's queue, the consumer and
    the dead letters."""
    growing = f"sum(increase({DEAD_LETTERS}{{{t.notifier}}}[{DEAD_LETTERS_WINDOW}])) > 0"
    ready = f"sum(rabbitmq_queue_messages_ready{{{t.queue(t.notifier_queue)}}})"
    consumers = f"sum(rabbitmq_queue_consumers{{{t.queue(t.notifier_queue)}}})"
    minutes = number(OUTBOX_MAX_AGE_SECONDS / 60)
    return [
        Operational(
            "LookoutOutboxBacklogStale",
            f"max({OUTBOX_AGE}{{{t.relay}}}) > {OUTBOX_MAX_AGE_SECONDS}",
            "5m", "page",
            f"User events have waited in the outbox over {minutes} minutes",
            f"The oldest unpublished user event is {{{{ $value | humanizeDuration }}}} old (over "
            f"{minutes} minutes for 5 minutes): the relay does not publish, so no email goes out and "
            "the notifier's SLO cannot see it (it counts only events it receives).",
            "Check the relay's log lines (kubectl -n lookout logs deploy/lookout-relay) and "
            "lookout_outbox_publish_failures_total by reason on the users service's dashboard (Outbox "
            "row), whether it holds a broker connection (lookout_relay_broker_connected), the broker "
            "(kubectl -n lookout get rabbitmqcluster,pods) and its alarms (a disk or memory alarm "
            "blocks publishers). Do: restore the broker or the relay's credentials or NetworkPolicy; "
            "restart a wedged relay; the backlog then drains in order, oldest first."),
        Operational(
            "LookoutRelayDown", f"absent(up{{{t.relay}}} == 1)", "5m", "page",
            "No outbox relay is up, or none is discovered",
            f"No scrape target of job {t.relay_job} has been up for 5 minutes: user events stay in "
            "the outbox unpublished, and the outbox age (LookoutOutboxBacklogStale) cannot be read.",
            "Check the relay's Deployment and pods (kubectl -n lookout get deploy,pods -l "
            "app.kubernetes.io/name=lookout-relay), the previous container's log (a refused setting "
            "names itself), its ServiceMonitor and its metrics Service. Do: fix the setting or secret; "
            "roll back a release that does not start; restore the ServiceMonitor's release label."),
        Operational(
            "LookoutBrokerDown",
            f"absent(rabbitmq_queue_messages_ready{{{t.queue(t.notifier_queue)}}})", "5m", "page",
            "The broker's exporter does not show the notifier's queue",
            f"For 5 minutes no series of {t.notifier_queue} has come from job {t.broker_job}: the broker "
            "is down or not scraped, or its per-object metrics are off, and the queue alerts "
            "(LookoutNotifierConsumerDown) are blind meanwhile.",
            "Check the broker's pods (kubectl -n lookout get rabbitmqcluster,pods), its ServiceMonitor "
            "and the NetworkPolicy admitting the monitoring namespace on 15692, and that the scrape "
            "reads per-object metrics (/metrics/per-object, or prometheus.return_per_object_metrics): "
            "the aggregated /metrics has no queue label. Do: restore the broker (the relay and the "
            "consumers reconnect by themselves) or its scrape."),
        Operational(
            "LookoutNotifierConsumerDown",
            f"({consumers} == 0\nor on () absent(up{{{t.notifier}}} == 1))\nand on () {ready} > 0",
            "5m", "page",
            "User events wait in the notifier's queue and no consumer takes them",
            f"{t.notifier_queue} has had messages ready for 5 minutes with no consumer attached (or "
            "no notifier target up): no email is sent until one comes back.",
            "Check the consumer's Deployment, its pods and the ScaledObject (kubectl -n lookout get "
            "deploy,pods,scaledobject), the previous container's log, the broker's connections "
            "(rabbitmqctl list_consumers) and the NetworkPolicy to the broker. Do: fix what stops it "
            "starting (a setting, the database, the broker's credentials); restart a consumer wedged "
            "without a channel; the queue then drains within the notifier's objective."),
        Operational(
            "LookoutNotifierDeadLettersGrowing", growing, "5m", "ticket",
            "User events are being dead-lettered",
            f"{{{{ $value | humanize }}}} events went to {t.dead_letter_queue} in the last "
            f"{DEAD_LETTERS_WINDOW}, still within the last 5 minutes: their emails were not sent (a "
            "permanent SMTP refusal, a poison message, or every retry failed).",
            "Check lookout_notifier_dead_letters_total by reason on the notifier's dashboard, GET "
            "/api/v1/notifications (state dead, last_error) and the consumer's log lines. Do: fix the "
            "cause (the SMTP server or its credentials, a recipient, a publisher's bug) before "
            "replaying; LookoutNotifierDeadLetters follows if they are left waiting."),
        Operational(
            "LookoutNotifierDeadLetters",
            f"max(lookout_notifier_dead_letter_queue_messages{{{t.notifier}}}) > 0\n"
            f"unless on () {growing}",
            "10m", "ticket",
            "User events wait in the notifier's dead-letter queue",
            "{{ $value }} events have sat in notifier.dead-letters for 10 minutes, none added in the "
            f"last {DEAD_LETTERS_WINDOW}: their emails were not sent and wait for a replay or a purge.",
            "Check GET /api/v1/notifications on the notifier (state dead, last_error), "
            "lookout_notifier_dead_letters_total by reason and the consumer's log lines. Do: fix the "
            "cause (the SMTP server or its credentials, a recipient, a publisher's bug), then move the "
            "dead letters back to notifier.user-events (each gets one more attempt); purge what must "
            "not be sent."),
    ]


def rule_files(slo: SLO, t: Target = TARGET) -> dict[str, dict[str, Any]]:
    """Return the rule files by name: the SLO's rules and the operational alerts."""
    return {
        # One group: its rules run in order, so each alert reads the ratios recorded at the same
        # evaluation (across groups Prometheus gives no order, and an alert would lag a step).
        "slo.yaml": {"groups": [
            {"name": "lookout-slo", "rules": sli_recordings(slo, t) + burn_rate_alerts(slo)},
        ]},
        "operational.yaml": {"groups": [
            {"name": "lookout-operational", "rules": [a.rule(slo) for a in operational_alerts(t)]},
        ]},
    }

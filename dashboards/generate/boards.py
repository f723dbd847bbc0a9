"""The Grafana dashboards, built with grafana-foundation-sdk: the service overview and the SLO view.

Every panel reads the data source chosen in the ``datasource`` variable. App panels select the
metrics job, Kubernetes panels the namespace and container (dashboards/generate/target.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import logs, loki, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row, ThresholdsConfig
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
)

from dashboards import SLO, Service

from .rules import (
    BAD,
    DEAD_LETTERS,
    DURATION,
    EVENT_TO_EMAIL,
    OBJECTIVES,
    OUTBOX_AGE,
    OUTBOX_MAX_AGE_SECONDS,
    REQUESTS,
    WHAT,
    selector,
    threshold_seconds,
    windows,
)
from .target import TARGET, Target, number

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Log panels read Loki, provisioned under this uid (infra: LOGS_DATASOURCE_UID); their LogQL selects
# labels only (service_name, level), which the log collector keeps few (infra/README.md, "Logs").
LOGS = DataSourceRef(type_val="loki", uid="logs")
RATE = "$__rate_interval"  # Grafana widens it to at least four scrape intervals
TAGS = ["lookout", "generated"]


def query(expr: str, legend: str, exemplar: bool = False, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)
    if exemplar:
        q = q.exemplar(True)
    return q.instant() if instant else q.range()


def steps(*pairs: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds; the first pair's value is None (the base colour)."""
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in pairs])


def graph(title: str, unit: str, targets: list[prometheus.Dataquery], *, description: str,
          width: int = 12, height: int = 8, thresholds: ThresholdsConfig | None = None,
          minimum: float | None = 0) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .span(width).height(height).line_width(1).fill_opacity(10)
             .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)))
    if minimum is not None:
        panel = panel.min(minimum)
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
    for index, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def single(title: str, unit: str, target: prometheus.Dataquery, *, description: str,
           thresholds: ThresholdsConfig, width: int = 4, height: int = 4,
           decimals: int | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .span(width).height(height).thresholds(thresholds).with_target(target.ref_id("A"))
             .color_mode(common.BigValueColorMode.VALUE).graph_mode(common.BigValueGraphMode.AREA)
             .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    return panel.decimals(decimals) if decimals is not None else panel


def base(uid: str, title: str, description: str) -> Dashboard:
    return (Dashboard(title).uid(uid).description(description).tags(TAGS).editable()
            .time("now-3h", "now").refresh("30s").timezone(common.TimeZoneBrowser)
            .tooltip(DashboardCursorSync.CROSSHAIR)
            .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus")))


def http_section(board: Dashboard, slo: SLO, t: Target) -> Dashboard:
    """Requests now; rate, errors and latency per route; saturation and the database."""
    api, app = t.api, t.app
    by_route = f"sum by (route) (rate({REQUESTS}{{{api}}}[{RATE}]))"
    errors_by_route = (f'(sum by (route) (rate({REQUESTS}{{{api}, status=~"5.."}}[{RATE}]))'
                       f" or 0 * {by_route}) / {by_route}")
    all_api = f"sum(rate({REQUESTS}{{{api}}}[{RATE}]))"
    budget = slo.error_budget("availability")
    threshold = slo.latency_threshold_seconds

    def quantile(q: float, by: str = "route") -> str:
        return (f"histogram_quantile({q}, sum by (le, {by}) "
                f"(rate({DURATION}_bucket{{{api}}}[{RATE}])))")

    return (
        board.with_row(Row("Now"))
        .with_panel(single("API requests", "reqps", query(all_api, "requests/s"), width=8,
                           description="API requests per second, all pods.",
                           thresholds=steps((None, "blue"))))
        .with_panel(single("API error ratio", "percentunit", query(
            f'(sum(rate({REQUESTS}{{{api}, status=~"5.."}}[{RATE}])) or 0 * {all_api}) / {all_api}', "5xx"),
            width=8, decimals=2, description="Share of API requests answered with a 5xx.",
            thresholds=steps((None, "green"), (budget, "orange"), (10 * budget, "red"))))
        .with_panel(single("API p99 latency", "s", query(
            f"histogram_quantile(0.99, sum by (le) (rate({DURATION}_bucket{{{selector(slo, 'latency', t)}}}"
            f"[{RATE}])))", "p99"),
            width=8, description="99th percentile of API request duration, every route but logins (the "
                                 "latency objective's requests).",
            thresholds=steps((None, "green"), (threshold, "red"))))
        .with_row(Row("Traffic and errors"))
        .with_panel(graph("Request rate per route", "reqps", [query(by_route, "{{route}}")],
                          description="API requests per second by route template."))
        .with_panel(graph("Error ratio per route (5xx)", "percentunit", [query(errors_by_route, "{{route}}")],
                          description="Share of each route's requests answered with a 5xx; the line "
                                      "is the availability objective's error budget.",
                          thresholds=steps((None, "green"), (budget, "red"))))
        .with_panel(graph("Responses by status", "reqps", [query(
            f"sum by (status) (rate({REQUESTS}{{{app}}}[{RATE}]))", "{{status}}")], width=24, height=7,
            description="Every answered request (probes included) by status code."))
        .with_row(Row("Latency"))
        .with_panel(graph("Request latency per route (p50, p95, p99)", "s", [
            query(quantile(0.5), "p50 {{route}}"),
            query(quantile(0.95), "p95 {{route}}"),
            query(quantile(0.99), "p99 {{route}}", exemplar=True)],
            width=16, height=9,
            description="Quantiles from the request histogram. Exemplars (dots) are sampled requests; "
                        "their trace_id opens the trace. The line is the latency objective's threshold "
                        f"(logins, {slo.login_route}, have their own: "
                        f"{number(slo.login_threshold_seconds)} s).",
            thresholds=steps((None, "green"), (threshold, "red"))))
        .with_panel(graph("Database statement latency (p95, p99)", "s", [
            query(f"histogram_quantile(0.95, sum by (le, operation) "
                  f"(rate(db_client_operation_duration_seconds_bucket{{{app}}}[{RATE}])))",
                  "p95 {{operation}}"),
            query(f"histogram_quantile(0.99, sum by (le, operation) "
                  f"(rate(db_client_operation_duration_seconds_bucket{{{app}}}[{RATE}])))",
                  "p99 {{operation}}")],
            width=8, height=9, description="Time per database statement, by SQL operation."))
        .with_row(Row("Saturation and the database"))
        .with_panel(graph("Requests in flight", "short", [
            query(f"sum(http_server_requests_in_flight{{{app}}})", "in flight"),
            query(f"sum(http_server_concurrency_limit{{{app}}})", "concurrency limit")], width=8,
            description="Requests being handled now against what the pods can handle at once; "
                        "LookoutSaturated fires above 80%."))
        .with_panel(graph("Database connections", "short", [
            query(f"sum(db_client_connections_in_use{{{app}}})", "in use"),
            query(f"sum(db_client_connections_max{{{app}}})", "pool maximum")], width=8,
            description="Pool connections checked out against the pools' size plus overflow."))
        .with_panel(graph("Database statements and errors", "ops", [
            query(f"sum by (operation) (rate(db_client_operation_duration_seconds_count{{{app}}}[{RATE}]))",
                  "{{operation}}"),
            query(f"sum by (operation) (rate(db_client_errors_total{{{app}}}[{RATE}])) or 0 * sum by "
                  f"(operation) (rate(db_client_operation_duration_seconds_count{{{app}}}[{RATE}]))",
                  "errors {{operation}}")], width=8,
            description="Statements per second by operation, and those that raised."))
    )


def pods_section(board: Dashboard, slo: SLO, t: Target) -> Dashboard:
    """Pods up and versions, ready against the autoscaler, CPU, memory and garbage collections."""
    app, pods = t.app, t.pods
    hpa = f'namespace="{t.namespace}", horizontalpodautoscaler="{t.hpa}"'
    return (
        board.with_row(Row("Pods"))
        .with_panel(single("Pods up", "none", query(f"sum(up{{{app}}})", "up"), width=12,
                           description="Scrape targets of the service that answer.",
                           thresholds=steps((None, "red"), (1, "green"))))
        .with_panel(single("Version", "none", query(
            f"count by (version, commit) (lookout_build_info{{{app}}})",
                                                    "{{version}} ({{commit}})", instant=True),
                           width=12, description="Versions running now, with the pods running each.",
                           thresholds=steps((None, "text"))))
        .with_panel(graph("Pods: ready, desired, autoscaler maximum", "short", [
            query(f"sum(kube_pod_container_status_ready{{{pods}}})", "ready"),
            query(f"sum(kube_horizontalpodautoscaler_status_desired_replicas{{{hpa}}})", "desired"),
            query(f"sum(kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}})", "HPA maximum")], width=8,
            description="Ready app containers against what the HPA wants, and its ceiling "
                        "(kube-state-metrics). Read from pods and the HPA, not the workload, so the "
                        "panel is the same whether a Deployment or an Argo Rollout runs the pods."))
        .with_panel(graph("CPU per pod", "short", [query(
            f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{pods}}}[{RATE}]))", "{{pod}}")],
            width=8, description="CPU cores used by each pod's app container (cAdvisor)."))
        .with_panel(graph("Memory per pod", "bytes", [query(
            f"sum by (pod) (container_memory_working_set_bytes{{{pods}}})", "{{pod}}")], width=8,
            description="Working set of each pod's app container (cAdvisor); the kernel kills at the "
                        "limit."))
        .with_panel(graph("Garbage collections per pod", "ops", [query(
            f"sum by (pod, generation) (rate(python_gc_collections_total{{{app}}}[{RATE}]))",
            "{{pod}} generation {{generation}}")], width=24, height=6,
            description="Python garbage collections per second by generation. A full collection "
                        "(generation 2) pauses all the work in flight on that pod; the web workers "
                        "freeze their start-up heap (GUNICORN_GC_FREEZE) so these stay rare and short."))
    )


def users_section(board: Dashboard, slo: SLO, t: Target) -> Dashboard:
    """Users created, authentication refused, rate limits and the read cache."""
    app = t.app
    return (
        board
        .with_row(Row("Users and authentication"))
        .with_panel(graph("Users created", "ops", [
            query(f"sum(rate(lookout_users_created_total{{{app}}}[{RATE}]))", "users created")],
            width=8, height=7, description="Users created through the API, per second."))
        .with_panel(graph("Auth failures", "ops", [
            query(f"sum by (reason) (rate(lookout_auth_failures_total{{{app}}}[{RATE}]))",
                  "refused: {{reason}}"),
            query(f'sum by (status) (rate(http_server_requests_total{{{app}, route=~"/api/.*", '
                  f'status=~"401|403"}}[{RATE}]))', "answered {{status}}")],
            width=8, height=7,
            description="Refused authentications per second by reason (lookout_auth_failures_total): wrong "
                        "passwords (credentials), missing or refused bearer tokens, as of anonymous reads "
                        "(token), refused roles (forbidden); and the API's 401 and 403 answers. They are "
                        "4xx, the caller's, so no SLO counts them; a burst of refusals may be an attack."))
        .with_panel(graph("Rate limits", "short", [
            query(f"sum by (limit) (rate(lookout_rate_limited_total{{{app}}}[{RATE}]))", "429/s: {{limit}}"),
            query(f"sum(lookout_rate_limit_fallback{{{app}}})", "processes counting alone")],
            width=8, height=7,
            description="Requests refused with 429 per second, by limit; and processes counting limits "
                        "in their own memory because the rate-limit store fails them (each then grants "
                        "the full limits alone; LookoutRateLimitFallback fires after 10 minutes)."))
        .with_row(Row("Read cache"))
        .with_panel(graph("Read cache hit ratio", "percentunit", [query(
            f"sum by (cache) (rate(lookout_cache_hits_total{{{app}}}[{RATE}])) / (sum by (cache) "
            f"(rate(lookout_cache_hits_total{{{app}}}[{RATE}])) + sum by (cache) "
            f"(rate(lookout_cache_misses_total{{{app}}}[{RATE}])))", "{{cache}}")],
            width=12, height=7,
            description="Share of user-record reads (the token check's re-read of the caller, one user by "
                        "id) answered from Redis, by cache. Empty when CACHE_URL is not set. A fall after "
                        "a deploy is expected (cold cache); a fall to 0 with traffic is the bypass beside."))
        .with_panel(graph("Read cache errors, invalidations and bypass", "short", [
            query(f"sum by (cache) (rate(lookout_cache_errors_total{{{app}}}[{RATE}]))",
                  "errors/s: {{cache}}"),
            query(f"sum by (cache) (rate(lookout_cache_invalidations_total{{{app}}}[{RATE}]))",
                  "invalidations/s: {{cache}}"),
            query(f"sum by (cache) (lookout_cache_bypassed{{{app}}})", "processes bypassing: {{cache}}")],
            width=12, height=7,
            description="Failed or timed-out Redis calls per second (each request then reads the database), "
                        "records removed after writes, and processes reading past Redis now "
                        "(lookout_cache_bypassed, 1 per process for CACHE_RETRY_SECONDS after a failure): "
                        "alert on it staying above 0. Requests are answered either way."))
    )


def log_panels(board: Dashboard, t: Target) -> Dashboard:
    """The service's warnings and errors, and its lines per second by level (Loki)."""
    problems = f'{{{t.logs}, level=~"WARNING|ERROR|CRITICAL"}}'
    volume = (loki.Dataquery().expr(f"sum by (level) (count_over_time({{{t.logs}}}[$__interval]))")
              .legend_format("{{level}}").datasource(LOGS).range(True).ref_id("A"))
    return (
        board.with_row(Row("Logs"))
        .with_panel(graph("Log lines by level", "short", [], width=8, height=9,
                          description="Lines per interval the service wrote, by level (Loki). A step in "
                                      "WARNING or ERROR is where to look in the panel beside it.")
                    .datasource(LOGS).with_target(volume))
        .with_panel(logs.Panel().title("Warnings and errors").unit("none").datasource(LOGS).span(16).height(9)
                    .description("The service's WARNING, ERROR and CRITICAL lines, newest first. Open a "
                                 "line: its trace_id field links to the trace in Tempo.")
                    .show_time(True).wrap_log_message(True).enable_log_details(True)
                    .sort_order(common.LogsSortOrder.DESCENDING)
                    .with_target(loki.Dataquery().expr(problems).datasource(LOGS).range(True).ref_id("A")))
    )


def slo_board(slo: SLO) -> Dashboard:
    """Per objective: the SLI now and over the window, the budget left, and burn rate per alert window."""
    board = base("lookout-slo", "Lookout / SLOs",
                 f"Service level objectives over {slo.window}, error budgets and burn rates "
                 "(dashboards/slo.yaml).")
    for objective in OBJECTIVES:
        target = getattr(slo, f"{objective}_target")
        budget = slo.error_budget(objective)
        sel = f'{{slo="{objective}"}}'
        fastest = max(a.burn_rate for a in slo.burn_rate_alerts)
        what = ("answered without a server error" if objective == "availability"
                else f"{'emailed' if objective == 'notifier' else 'answered'} within "
                     f"{number(threshold_seconds(slo, objective))} s")
        counted = WHAT[objective]
        board = (
            board.with_row(Row(f"{objective.capitalize()}: {number(100 * target)}% of {counted} {what}, "
                               f"over {slo.window}"))
            .with_panel(single(f"{objective.capitalize()} SLI, last 5 minutes", "percentunit",
                               query(f"1 - lookout:sli_error:ratio_rate5m{sel}", "SLI"), width=6, decimals=3,
                               description=f"Share of {counted} {what} over the last 5 minutes.",
                               thresholds=steps((None, "red"), (target, "green"))))
            .with_panel(single(f"{objective.capitalize()} SLI over {slo.window}", "percentunit",
                               query(f"1 - lookout:sli_error:ratio_rate{slo.window}{sel}", "SLI"), width=6,
                               decimals=3,
                               description=f"Share of {counted} {what} over the SLO window (or the "
                                           "Prometheus retention, if shorter).",
                               thresholds=steps((None, "red"), (target, "green"))))
            .with_panel(single("Error budget remaining", "percentunit", query(
                f"1 - lookout:sli_error:ratio_rate{slo.window}{sel} / {number(budget)}", "remaining"),
                width=6, decimals=1,
                description=f"Share of the {slo.window} error budget ({number(100 * budget)}% of requests) "
                            "not yet spent; below zero the objective is missed.",
                thresholds=steps((None, "red"), (0, "orange"), (0.25, "green"))))
            .with_panel(single("Burn rate, last hour", "x", query(
                f"lookout:sli_error:ratio_rate1h{sel} / {number(budget)}", "1h"), width=6, decimals=1,
                description="How many times faster than sustainable the budget burns (1 = exactly spent "
                            f"by the end of {slo.window}).",
                thresholds=steps((None, "green"), (1, "orange"), (fastest, "red"))))
        )
        for severity in ("page", "ticket"):
            policy = [a for a in slo.burn_rate_alerts if a.severity == severity]
            shown = [w for w in windows(slo) if any(w in (a.long, a.short) for a in policy)]
            rates = ", ".join(f"{number(a.burn_rate)}x over {a.long} and {a.short}" for a in policy)
            board = board.with_panel(graph(
                f"{objective.capitalize()} burn rate, {severity} windows", "x",
                [query(f"lookout:sli_error:ratio_rate{w}{sel} / {number(budget)}", w) for w in shown],
                description=f"Burn rate over each window of the {severity} alerts, which fire at {rates}.",
                thresholds=steps((None, "green"), *sorted((a.burn_rate, "red") for a in policy))))
    return board


def objectives_section(board: Dashboard, slo: SLO, t: Target, service: Service) -> Dashboard:
    """Per objective the service owns: the SLI now, the budget left and the burn rate of the last hour
    (the SLO dashboard has the windows)."""
    for objective in service.objectives:
        sel = f'{{slo="{objective}"}}'
        target, budget = getattr(slo, f"{objective}_target"), slo.error_budget(objective)
        fastest = max(a.burn_rate for a in slo.burn_rate_alerts)
        board = (
            board.with_row(Row(f"Objective: {objective}, {number(100 * target)}% of {WHAT[objective]}"))
            .with_panel(single(f"{objective.capitalize()} SLI, last 5 minutes", "percentunit",
                               query(f"1 - lookout:sli_error:ratio_rate5m{sel}", "SLI"), width=8, decimals=3,
                               description=f"Share of {WHAT[objective]} not {BAD[objective]} over the last "
                                           "5 minutes.",
                               thresholds=steps((None, "red"), (target, "green"))))
            .with_panel(single("Error budget remaining", "percentunit", query(
                f"1 - lookout:sli_error:ratio_rate{slo.window}{sel} / {number(budget)}", "remaining"),
                width=8, decimals=1, description=f"Share of the {slo.window} error budget not yet spent.",
                thresholds=steps((None, "red"), (0, "orange"), (0.25, "green"))))
            .with_panel(single("Burn rate, last hour", "x", query(
                f"lookout:sli_error:ratio_rate1h{sel} / {number(budget)}", "1h"), width=8, decimals=1,
                description="How many times faster than sustainable the budget burns; the burn-rate "
                            "alerts and every window are on the SLO dashboard (lookout-slo).",
                thresholds=steps((None, "green"), (1, "orange"), (fastest, "red"))))
        )
    return board


def events_section(board: Dashboard, slo: SLO, t: Target) -> Dashboard:
    """The notifier consumer: emails sent and failed, event-to-email latency, dead letters, its lag."""
    app, threshold = t.app, slo.notifier_threshold_seconds

    def quantile(q: float) -> str:
        return (f"histogram_quantile({q}, sum by (le) "
                f"(rate({EVENT_TO_EMAIL}_bucket{{{app}}}[{RATE}])))")

    return (
        board.with_row(Row("Events and emails"))
        .with_panel(graph("Emails sent and failed", "ops", [
            query(f"sum by (template) (rate(lookout_notifier_emails_sent_total{{{app}}}[{RATE}]))",
                  "sent {{template}}"),
            query(f"sum by (kind) (rate(lookout_notifier_emails_failed_total{{{app}}}[{RATE}]))",
                  "failed: {{kind}}")],
            description="Emails the SMTP server accepted per second by template, and failed attempts "
                        "by kind (temporary ones are retried through the retry queues)."))
        .with_panel(graph("Event-to-email latency (p50, p95, p99)", "s", [
            query(quantile(0.5), "p50"), query(quantile(0.95), "p95"), query(quantile(0.99), "p99")],
            description="From the change's commit to the SMTP server's acceptance. The line is the "
                        f"notifier objective's threshold ({number(threshold)} s).",
            thresholds=steps((None, "green"), (threshold, "red"))))
        .with_panel(graph("Dead letters and duplicates", "ops", [
            query(f"sum by (reason) (rate({DEAD_LETTERS}{{{app}}}[{RATE}]))", "dead-lettered: {{reason}}"),
            query(f"sum(rate(lookout_notifier_duplicates_total{{{app}}}[{RATE}]))", "duplicates")],
            description="Events sent to the dead-letter queue per second, by reason (poison, permanent, "
                        "attempts; LookoutNotifierDeadLettersGrowing), and redelivered events "
                        "acknowledged without a second email."))
        .with_panel(graph("Consumer lag and connection", "short", [
            query(f"max(lookout_notifier_consumer_lag{{{app}}})", "events waiting"),
            query(f"max(lookout_notifier_dead_letter_queue_messages{{{app}}})", "dead letters waiting"),
            query(f"sum(lookout_notifier_broker_connected{{{app}}})", "consumers connected")],
            description="What the consumers read from the broker every 5 s: events ready in their queue "
                        "and in the dead letters, and how many consumers hold a connection."))
    )


def broker_section(board: Dashboard, slo: SLO, t: Target) -> Dashboard:
    """The broker as RabbitMQ's own exporter sees it: the notifier's queues, and messages in and out."""
    events, dead = t.queue(t.notifier_queue), t.queue(t.dead_letter_queue)
    return (
        board.with_row(Row("Broker (RabbitMQ)"))
        .with_panel(graph("Queue depth", "short", [
            query(f"sum(rabbitmq_queue_messages_ready{{{events}}})", "ready"),
            query(f"sum(rabbitmq_queue_messages_unacked{{{events}}})", "unacknowledged")],
            description=f"Messages in {t.notifier_queue}: ready for a consumer (what KEDA scales the "
                        "consumers on), and delivered but not yet acknowledged (at most PREFETCH_COUNT "
                        "per consumer)."))
        .with_panel(graph("Consumers and dead-letter queue", "short", [
            query(f"sum(rabbitmq_queue_consumers{{{events}}})", "consumers"),
            query(f"sum(rabbitmq_queue_messages{{{dead}}})", "dead letters")],
            description=f"Consumers attached to {t.notifier_queue} (0 with messages ready is "
                        f"LookoutNotifierConsumerDown), and messages in {t.dead_letter_queue}."))
        .with_panel(graph("Published and delivered", "ops", [
            query(f"sum(rate(rabbitmq_global_messages_received_total{{{t.broker}}}[{RATE}]))", "published"),
            query(f"sum(rate(rabbitmq_global_messages_delivered_total{{{t.broker}}}[{RATE}]))", "delivered"),
            query(f"sum(rate(rabbitmq_global_messages_acknowledged_total{{{t.broker}}}[{RATE}]))",
                  "acknowledged"),
            query(f"sum(rate(rabbitmq_global_messages_dead_lettered_expired_total{{{t.broker}}}[{RATE}]))",
                  "retried (retry queue expired)")],
            width=24, height=7,
            description="Messages per second the broker received from publishers (the relay, the "
                        "consumers' retries), delivered to consumers and had acknowledged; and retry "
                        "messages whose delay expired, dead-lettered back to the notifier's queue."))
    )


def outbox_section(board: Dashboard, slo: SLO, t: Target) -> Dashboard:
    """The outbox relay: rows waiting, the oldest one's age, publishes and failures, its connection."""
    relay = t.relay
    return (
        board.with_row(Row("Outbox and relay"))
        .with_panel(graph("Outbox backlog", "short", [
            query(f"max(lookout_outbox_backlog{{{relay}}})", "rows waiting")], width=8,
            description="Outbox rows (user events) committed and not yet published."))
        .with_panel(graph("Oldest unpublished event", "s", [
            query(f"max({OUTBOX_AGE}{{{relay}}})", "age")], width=8,
            description="Age of the oldest outbox row not yet published; LookoutOutboxBacklogStale fires "
                        "above the line for 5 minutes.",
            thresholds=steps((None, "green"), (OUTBOX_MAX_AGE_SECONDS, "red"))))
        .with_panel(graph("Published, failed, relay connected", "short", [
            query(f"sum by (type) (rate(lookout_outbox_published_total{{{relay}}}[{RATE}]))",
                  "published/s: {{type}}"),
            # The failures' series are born with the first failure: until then, a zero line.
            query(f"sum by (reason) (rate(lookout_outbox_publish_failures_total{{{relay}}}[{RATE}]))"
                  f" or 0 * sum(rate(lookout_outbox_published_total{{{relay}}}[{RATE}]))",
                  "failed/s: {{reason}}"),
            query(f"sum(lookout_relay_broker_connected{{{relay}}})", "relays connected")], width=8,
            description="Events the broker confirmed per second by type, failed publishes by reason, "
                        "and relays holding a broker connection."))
    )


SECTIONS: dict[str, Callable[[Dashboard, SLO, Target, Service], Dashboard]] = {
    "objectives": objectives_section,
    "http": lambda b, slo, t, s: http_section(b, slo, t),
    "pods": lambda b, slo, t, s: pods_section(b, slo, t),
    "users": lambda b, slo, t, s: users_section(b, slo, t),
    "outbox": lambda b, slo, t, s: outbox_section(b, slo, t),
    "events": lambda b, slo, t, s: events_section(b, slo, t),
    "broker": lambda b, slo, t, s: broker_section(b, slo, t),
    "logs": lambda b, slo, t, s: log_panels(b, t),
}


def service_target(service: Service) -> Target:
    """What a service's series carry: its job, its Kubernetes objects and its log streams."""
    return replace(TARGET, job=service.job, deployment=service.deployment, hpa=service.hpa,
                   container=service.container, service=service.name)


def service_board(slo: SLO, service: Service) -> Dashboard:
    """A service's dashboard: its ``sections`` of slo.yaml, in order, over its own series."""
    t = service_target(service)
    board = base(service.dashboard, f"Lookout / {service.title}",
                 f"{service.title}: " + ", ".join(service.sections) + " (dashboards/slo.yaml, services).")
    for section in service.sections:
        board = SECTIONS[section](board, slo, t, service)
    return board


def dashboards(slo: SLO) -> dict[str, Any]:
    """Return the dashboards by file name, as JSON-ready models."""
    from .dependencies import dependencies_board, probe_panels  # it builds on this module's helpers

    models = {f"{service.dashboard}.json": service_board(slo, service).build() for service in slo.services}
    models |= {"lookout-slo.json": probe_panels(slo_board(slo)).build(),
               "lookout-dependencies.json": dependencies_board().build()}
    for model in models.values():
        for number_, panel in enumerate(model.panels or [], start=1):
            panel.id_val = number_  # Grafana links panels by id (viewPanel=): unique and stable
    return models

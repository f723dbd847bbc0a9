"""What the service depends on, and how clients see it: the dependencies board, its alerts, the probe.

The database and the rate-limit store report through their exporters (postgres_exporter beside the
database, redis_exporter beside the store, infra/components/exporters.py); the service's public
address is probed from inside the cluster by the blackbox exporter (infra/components/probe.py).
Every selector here names a metric the real exporters expose: tests/test_dependencies_live.py
runs Debian's exporters against a real PostgreSQL, Redis and Lookout and checks them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from dashboards import SLO

from .boards import RATE, base, graph, query, single, steps
from .rules import Operational
from .target import TARGET, Target


@dataclass(frozen=True)
class Dependencies:
    """The scrape jobs of the exporters and the probe: each ServiceMonitor (or the Probe's jobName)
    names its job; tests/infrastructure/test_infra_exporters.py renders the stacks against these."""

    database_job: str = "lookout-db-metrics"  # postgres_exporter's Service in the database namespace
    store_job: str = "lookout-ratelimit-metrics"  # redis_exporter's Service beside the store
    probe_job: str = "lookout-probe"  # the Probe's jobName
    certificates_job: str = "cert-manager"  # cert-manager's Service, which its chart's ServiceMonitor scrapes
    certificate_days: int = 14  # LookoutCertificateExpiringSoon: renewal (30 days before) has failed for 16
    connections_ratio: float = 0.8  # of max_connections, for LookoutDatabaseConnectionsNearMax

    @property
    def cluster_only_jobs(self) -> frozenset[str]:
        """Jobs that exist only in a cluster: compose serves plain HTTP on loopback, with no
        certificate to manage, so its Prometheus has no cert-manager to scrape."""
        return frozenset({self.certificates_job})

    @property
    def database(self) -> str:
        return f'job="{self.database_job}"'

    @property
    def store(self) -> str:
        return f'job="{self.store_job}"'

    @property
    def probe(self) -> str:
        return f'job="{self.probe_job}"'

    @property
    def certificates(self) -> str:
        return f'job="{self.certificates_job}"'


DEPS = Dependencies()
# Metric name prefixes of the exporters: the app's contract test leaves these to the exporters' test.
EXPORTER_PREFIXES = ("pg_", "redis_", "probe_")
# Metrics of cert-manager itself (no Debian package runs it here): their names and labels are those
# of its pkg/metrics at the pinned tag; tests/promtool/dependencies_test.yaml drives the alert.
# The outbox relay's and the broker's metrics: tests/test_messaging_live.py checks them against the
# real relay and RabbitMQ's exporter.
MESSAGING_PREFIXES = ("lookout_outbox_", "lookout_relay_", "rabbitmq_")
DELEGATED_PREFIXES = (*EXPORTER_PREFIXES, "certmanager_", *MESSAGING_PREFIXES)


def connections_used(d: Dependencies = DEPS) -> str:
    """Share of the server's connections in use (client backends over max_connections)."""
    return (f"sum by (job) (pg_stat_database_numbackends{{{d.database}}})\n"
            f"/ max by (job) (pg_settings_max_connections{{{d.database}}})")


def dependency_alerts(d: Dependencies = DEPS) -> list[Operational]:
    """The database near its connection limit; the rate-limit store evicting or refusing."""
    return [
        Operational(
            "LookoutDatabaseConnectionsNearMax", f"{connections_used(d)} > {d.connections_ratio}", "5m",
            "ticket",
            "PostgreSQL has used over 80% of max_connections for 5 minutes",
            "{{ $value | humanizePercentage }} of the database server's connections are open; past "
            "max_connections (less the superuser reserve) new connections are refused and requests "
            "fail with 503.",
            "Check the dependencies dashboard (connections, longest transactions, locks) and who holds "
            "them: SELECT usename, application_name, state, count(*) FROM pg_stat_activity GROUP BY 1, 2, "
            "3. Every pod opens up to DATABASE_POOL_SIZE + overflow per worker, so pods x workers x pool "
            "must stay below the limit. Do: end idle-in-transaction sessions; lower the pool size or "
            "maxReplicas; raise max_connections (the Cluster's postgresql.parameters) if the server has "
            "the memory."),
        Operational(
            "LookoutRateLimitStoreEvicting", f"rate(redis_evicted_keys_total{{{d.store}}}[5m]) > 0", "10m",
            "ticket",
            "The rate-limit store evicts counters: it is full",
            "The store evicted {{ $value | humanize }} keys per second for 10 minutes: it reached "
            "maxmemory and drops the least recently used counters, so some clients' limits restart "
            "from zero.",
            "Check the dependencies dashboard (memory used against the maximum, keys evicted) and what "
            "fills it: redis-cli --bigkeys, INFO keyspace; a burst of distinct clients or accounts "
            "creates one counter each. Do: raise rateLimitStoreMaxMemoryMib (and the pod's memory "
            "limit with it); shorten the limits' windows if counters outlive their use."),
        Operational(
            "LookoutRateLimitStoreRefusing",
            f"increase(redis_rejected_connections_total{{{d.store}}}[5m]) > 0", "5m", "ticket",
            "The rate-limit store refuses connections",
            "The store refused {{ $value | humanize }} connections over 5 minutes (maxclients reached); "
            "the refused pods count rate limits alone until it answers.",
            "Check connected clients against maxclients on the dependencies dashboard, the pods' "
            "connection pools (each worker keeps its own), and LookoutRateLimitFallback. Do: raise "
            "maxclients in the store's configuration; find and stop a client leaking connections."),
    ]


def outside_in_alerts(d: Dependencies = DEPS, t: Target = TARGET) -> list[Operational]:
    """The public endpoint fails its probe while the pods answer Prometheus."""
    return [
        Operational(
            "LookoutServiceUnreachable",
            f"max by (instance) (probe_success{{{d.probe}}}) == 0\nand on () sum(up{{{t.app}}}) > 0",
            "3m", "page",
            "Clients cannot reach Lookout, though its pods are up",
            "The probe of {{ $labels.instance }} has failed for 3 minutes while Prometheus still "
            "scrapes the pods: the way in (load balancer, Service, NetworkPolicy, TLS) is broken, "
            "not the pods.",
            "Check the probe's reason on the SLO dashboard (status code, duration) and from inside "
            "the cluster: kubectl -n lookout get svc,endpoints lookout; curl the probed URL's /readyz "
            "from a pod in the monitoring namespace; the NetworkPolicy's client port; the certificate "
            "when the edge serves TLS. Do: restore the Service's endpoints or the policy; renew the "
            "certificate; roll back a release that changed the Service."),
    ]


def certificate_alerts(d: Dependencies = DEPS) -> list[Operational]:
    """The edge's certificate close to expiry: cert-manager renews 30 days ahead, so this means renewal
    has been failing for over two weeks (a certificate not issued yet reports 0 and is left out)."""
    return [
        Operational(
            "LookoutCertificateExpiringSoon",
            f"(certmanager_certificate_expiration_timestamp_seconds{{{d.certificates}}} > 0) - time()\n"
            f"< {d.certificate_days} * 86400", "1h", "ticket",
            f"A certificate expires in under {d.certificate_days} days",
            "Certificate {{ $labels.exported_namespace }}/{{ $labels.name }} expires in "
            "{{ $value | humanizeDuration }}; cert-manager renews 30 days ahead, so renewal has been "
            "failing. When it expires, clients refuse the HTTPS endpoint.",
            "Check kubectl -n lookout describe certificate lookout-edge, its CertificateRequest, Order and "
            "Challenge (kubectl get certificaterequest,order,challenge -n lookout), cert-manager's logs, "
            "that the hostname still resolves to the gateway and port 80 reaches it (HTTP-01), or the DNS "
            "token (DNS-01). Do: fix what the Challenge reports; then kubectl cert-manager renew, or "
            "delete the CertificateRequest so cert-manager retries at once."),
    ]


def rule_files(slo: SLO, d: Dependencies = DEPS) -> dict[str, dict[str, Any]]:
    """The dependencies' rule file: its alerts, the outside-in probe's and the certificate's."""
    return {"dependencies.yaml": {"groups": [
        {"name": "lookout-dependencies", "rules": [a.rule(slo) for a in dependency_alerts(d)]},
        {"name": "lookout-outside-in", "rules": [a.rule(slo) for a in outside_in_alerts(d)]},
        {"name": "lookout-edge", "rules": [a.rule(slo) for a in certificate_alerts(d)]},
    ]}}


def dependencies_board(d: Dependencies = DEPS) -> Dashboard:
    """PostgreSQL: connections, transactions, locks, long transactions; the store: memory, evictions,
    refusals, operations."""
    db, store = d.database, d.store
    board = base("lookout-dependencies", "Lookout / Dependencies",
                 "The service's PostgreSQL (postgres_exporter) and its rate-limit store (redis_exporter).")
    return (
        board.with_row(Row("PostgreSQL"))
        .with_panel(single("Database exporter reaches the server", "none",
                           query(f"min(pg_up{{{db}}})", "up"), width=4, height=8,
                           description="1 when postgres_exporter's last scrape reached the database.",
                           thresholds=steps((None, "red"), (1, "green"))))
        .with_panel(graph("Connections in use against the maximum", "short", [
            query(f"sum(pg_stat_database_numbackends{{{db}}})", "in use"),
            query(f"max(pg_settings_max_connections{{{db}}})", "max_connections")], width=10,
            description="Client backends open on the server (every database) against max_connections; "
                        "LookoutDatabaseConnectionsNearMax fires above 80% for 5 minutes."))
        .with_panel(graph("Transactions", "ops", [
            query(f"sum(rate(pg_stat_database_xact_commit{{{db}}}[{RATE}]))", "commits"),
            query(f"sum(rate(pg_stat_database_xact_rollback{{{db}}}[{RATE}]))", "rollbacks")], width=10,
            description="Transactions committed and rolled back per second, every database."))
        .with_panel(graph("Locks held by mode", "short", [
            query(f"sum by (mode) (pg_locks_count{{{db}}})", "{{mode}}")], width=8,
            description="Locks held now by mode (pg_locks). Exclusive locks that stay up while the "
                        "longest transaction grows mean others wait behind them."))
        .with_panel(graph("Longest transaction by state", "s", [
            query(f"max by (state) (pg_stat_activity_max_tx_duration{{{db}}})", "{{state}}")], width=8,
            description="Age of the oldest open transaction per connection state (pg_stat_activity): "
                        "a long 'active' one is a slow query, a long 'idle in transaction' one holds "
                        "its locks and a connection for nothing."))
        .with_panel(graph("Deadlocks and conflicts", "ops", [
            query(f"sum(rate(pg_stat_database_deadlocks{{{db}}}[{RATE}]))", "deadlocks"),
            query(f"sum(rate(pg_stat_database_conflicts{{{db}}}[{RATE}]))", "recovery conflicts")],
            width=8,
            description="Deadlocks PostgreSQL broke (one transaction aborted each), and queries "
                        "cancelled on a replica by recovery conflicts."))
        .with_panel(graph("Replication lag", "bytes", [
            query(f"max by (application_name, client_addr) (pg_stat_replication_pg_wal_lsn_diff{{{db}}})",
                  "{{application_name}} {{client_addr}}")], width=24, height=6,
            description="How far each streaming replica is behind the primary, in bytes of WAL not yet "
                        "replayed (pg_stat_replication, read on the primary). Empty without replicas "
                        "(databaseInstances 1)."))
        .with_row(Row("Rate-limit store"))
        .with_panel(single("Store exporter reaches the store", "none",
                           query(f"min(redis_up{{{store}}})", "up"), width=4, height=8,
                           description="1 when redis_exporter's last scrape reached the store.",
                           thresholds=steps((None, "red"), (1, "green"))))
        .with_panel(graph("Memory used against maxmemory", "bytes", [
            query(f"max(redis_memory_used_bytes{{{store}}})", "used"),
            query(f"max(redis_memory_max_bytes{{{store}}})", "maxmemory")], width=10,
            description="Memory the store uses against its maxmemory; at the maximum it evicts the "
                        "least recently used counters."))
        .with_panel(graph("Evictions and refused connections", "ops", [
            query(f"sum(rate(redis_evicted_keys_total{{{store}}}[{RATE}]))", "keys evicted"),
            query(f"sum(rate(redis_rejected_connections_total{{{store}}}[{RATE}]))",
                  "connections refused")], width=10,
            description="Counters evicted for memory (LookoutRateLimitStoreEvicting) and connections "
                        "refused at maxclients (LookoutRateLimitStoreRefusing), per second."))
        .with_panel(graph("Operations", "ops", [
            query(f"sum(rate(redis_commands_processed_total{{{store}}}[{RATE}]))", "commands")], width=12,
            description="Commands the store processed per second: every rate-limited request costs a "
                        "few."))
        .with_panel(graph("Clients against maxclients", "short", [
            query(f"sum(redis_connected_clients{{{store}}})", "connected"),
            query(f"max(redis_config_maxclients{{{store}}})", "maxclients")], width=12,
            description="Client connections open now against the store's maxclients."))
    )


def probe_panels(board: Dashboard, d: Dependencies = DEPS) -> Dashboard:
    """The outside-in row of the SLO board: is the public endpoint answering, and how fast."""
    probe = d.probe
    return (
        board.with_row(Row("From a client's side: the public endpoint, probed from inside the cluster"))
        .with_panel(single("Reachable", "none", query(f"min(probe_success{{{probe}}})", "success"),
                           width=6, height=8,
                           description="1 when the last probe of the public endpoint's /readyz "
                                       "succeeded (blackbox exporter); LookoutServiceUnreachable pages "
                                       "after 3 minutes at 0 while the pods are up.",
                           thresholds=steps((None, "red"), (1, "green"))))
        .with_panel(graph("Probe success over time", "percentunit", [
            query(f"avg by (instance) (avg_over_time(probe_success{{{probe}}}[{RATE}]))", "{{instance}}")],
            width=9, description="Share of probes that succeeded, per probed URL.",
            thresholds=steps((None, "red"), (1, "green"))))
        .with_panel(graph("Probe duration", "s", [
            query(f"max by (instance) (probe_duration_seconds{{{probe}}})", "total {{instance}}"),
            query(f"max by (phase) (probe_http_duration_seconds{{{probe}}})", "{{phase}}")],
            width=9, description="How long a client's request to the public endpoint takes, in total "
                                 "and by phase (resolve, connect, tls, processing, transfer)."))
    )

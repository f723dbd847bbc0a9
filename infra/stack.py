"""The whole deployment: settings in, one component per settings group, stack outputs out.

Monitoring comes first (the services need the collector's address), then the database, the
rate-limit store, the users API, the edge in front of both APIs (its cert-manager also serves the
broker's operator), KEDA and the broker, then the services that use the broker (the users API's
outbox relay and the notifier: like the API, instances of one component, ``ObservableService``),
the mail catcher where the stack has one, the queue-depth scaler of the notifier's consumer, and
the optional load generator. The app is known here by its image,
environments (``app_environment``, ``notifier_environment``), secrets and commands only;
tests/infrastructure/test_infra_app_contract.py feeds what each stack gives each process to the
app's own settings loaders.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pulumi

import dashboards
from infra.components import (
    Database,
    ExternalScaler,
    Fixed,
    LoadGenerator,
    MetricsAdapter,
    MetricsAdapterArgs,
    Monitoring,
    ObservableService,
    Peer,
    Process,
    RateLimitStore,
    Resources,
    Scaling,
    ScrapeTarget,
    ServiceArgs,
    Shutdown,
    WritableDir,
)
from infra.components.broker import Broker, BrokerArgs, BrokerClient, broker_management, broker_target
from infra.components.edge import Edge, EdgeArgs, EdgeTimeouts, Route, proxy_labels
from infra.components.keda import Keda, QueueScaler
from infra.components.loadgen import LoadGeneratorArgs
from infra.components.mail import MailCatcher, MailCatcherArgs
from infra.components.monitoring_values import PROMETHEUS_POD_LABELS, PROMETHEUS_SERVICE, RELEASE
from infra.components.network import namespace_selector
from infra.components.pods import selector
from infra.components.probe import BLACKBOX, OutsideInArgs, OutsideInProbe
from infra.components.rollouts import HASH_LABEL, ProgressiveDelivery
from infra.components.service import scrape_target
from infra.config import ConfigError, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "lookout"
SERVER = selector(APP, "server")  # the service's pods
METRICS_DIR = "/var/lib/lookout/metrics"
MIGRATION_COMMAND = ("flask", "--app", "app", "db", "upgrade")  # the image's, run before a rollout
# After the migrations, in the same Job: the first admin, from BOOTSTRAP_ADMIN (files only it mounts).
BOOTSTRAP_COMMAND = ("flask", "--app", "app", "users", "bootstrap-admin")
BOOTSTRAP_EMAIL, BOOTSTRAP_PASSWORD = "LOOKOUT_BOOTSTRAP_ADMIN_EMAIL", "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD"
PROBE_JOB = "lookout-probe"  # the job the probe panels and LookoutServiceUnreachable select
EDGE = f"{APP}-edge"  # the Gateway, its routes, certificate and Envoy Service
BROKER = f"{APP}-broker"  # the RabbitMqCluster, its Services and its credentials' Secret
BROKER_NAMESPACE = BrokerArgs.__dataclass_fields__["namespace"].default
GATEWAY_NAMESPACE = EdgeArgs.__dataclass_fields__["gateway_namespace"].default
LOADTEST_NAMESPACE = LoadGeneratorArgs.__dataclass_fields__["namespace"].default
GUNICORN_KEEPALIVE = 75  # seconds an idle kept-alive connection to gunicorn stays open
GUNICORN_TIMEOUT = 30  # gunicorn's worker heartbeat; the edge's request timeout matches it
# The edge's numbers (infra/README.md, "The edge"): Envoy drops an idle upstream connection 15 s
# before gunicorn would, so it never reuses one gunicorn is closing (sporadic 502/503 otherwise);
# a request may take as long as gunicorn lets a worker, above the app's own bounds on database
# waits (tests/infrastructure/test_infra_edge.py adds them up); a body the app would refuse with
# 413 is refused at the edge (the app's default MAX_CONTENT_LENGTH, 1 MiB).
EDGE_TIMEOUTS = EdgeTimeouts(upstream_idle_seconds=60, request_seconds=GUNICORN_TIMEOUT,
                             body_bytes=1024 * 1024)

# The outbox relay: a worker beside the API (same image, database and secrets); its metrics on
# RELAY_METRICS_PORT make the job lookout-relay-metrics (dashboards/generate/target.py).
RELAY = f"{APP}-relay"
RELAY_COMMAND = ("flask", "--app", "app", "events", "relay")
RELAY_METRICS_PORT = 9102
RELAY_RESOURCES = Resources("50m", "250m", "256Mi", "256Mi")
# The notifier (app/notifier): its API under gunicorn, its consumer, its own database and
# migrations; one scrape job over both, lookout-notifier-metrics (the rules' notifier job).
NOTIFIER = f"{APP}-notifier"
NOTIFIER_DATABASE = "notifier"  # its database and the role that owns it
NOTIFIER_PORT = 8001
NOTIFIER_SERVER_COMMAND = ("gunicorn", "-c", "python:app.notifier.gunicorn_conf", "app.notifier.wsgi:app")
NOTIFIER_CONSUMER_COMMAND = ("flask", "--app", "app.notifier:create_app", "notifier", "consume")
NOTIFIER_MIGRATION_COMMAND = ("flask", "--app", "app.notifier:create_app", "db", "upgrade")
NOTIFIER_CONSUMER_METRICS_PORT = 9102
NOTIFICATIONS_PATH = "/api/v1/notifications"  # the notifier's API, routed by the edge
MAIL_CATCHER = f"{APP}-mail"


@dataclass(frozen=True)
class RepoFiles:
    """The repo's data the deployment carries: dashboards, rule files and the locust files."""

    dashboards: tuple[Path, ...]
    rules: tuple[Path, ...]
    loadtests: Mapping[str, str] = field(default_factory=dict)  # repo-relative path -> text


def repo_files(root: Path = REPO_ROOT) -> RepoFiles:
    """Collect the data files through the one loader that tests use too."""
    locust = sorted(p for p in (root / "loadtests").rglob("*.py") if "__pycache__" not in p.parts)
    # The locustfile imports `from dashboards import load_slo`, which reads slo.yaml beside it.
    locust += [root / "dashboards" / "__init__.py", root / "dashboards" / "slo.yaml"]
    return RepoFiles(dashboards=tuple(dashboards.dashboard_files()), rules=tuple(dashboards.rule_files()),
                     loadtests={p.relative_to(root).as_posix(): p.read_text() for p in locust if p.exists()})


def locked_requirements(names: Sequence[str], lock: Path = REPO_ROOT / "uv.lock") -> str:
    """Return a requirements file for ``names`` at the versions ``lock`` pins, each with every
    distribution's hash, for ``pip install --require-hashes`` (uv can export a whole project this
    way, but not a few packages of it without their project's other dependencies)."""
    packages = {p["name"]: p for p in tomllib.loads(lock.read_text())["package"]} if names else {}
    lines = []
    for name in names:
        package = packages.get(canonical := re.sub(r"[-_.]+", "-", name).lower())
        if package is None:
            raise ConfigError(f"loadtestPipPackages: {name!r} is not in uv.lock (add it to pyproject.toml, "
                              "then make lock)")
        hashes = [d["hash"] for d in [package.get("sdist"), *package.get("wheels", [])] if d]
        lines.append(" ".join([f"{canonical}=={package['version']}", *(f"--hash={h}" for h in hashes)]))
    return "".join(f"{line}\n" for line in lines)


def app_environment(s: Settings, collector_endpoint: str) -> dict[str, str]:
    """Return the non-secret environment of the app (its ConfigMap)."""
    env = {
        "LOOKOUT_ENV": "production",  # refuses to start without real secrets
        "GUNICORN_WORKERS": str(s.service.gunicorn_workers),
        "GUNICORN_THREADS": str(s.service.gunicorn_threads),
        "GUNICORN_WORKER_CLASS": "gthread",
        "GUNICORN_TIMEOUT": str(GUNICORN_TIMEOUT),
        "GUNICORN_KEEPALIVE": str(GUNICORN_KEEPALIVE),  # longer than the edge's upstream idle timeout
        "GUNICORN_WORKER_TMP_DIR": "/tmp",  # noqa: S108 - a memory-backed emptyDir: heartbeats stay off disk
        "OTEL_SERVICE_NAME": APP,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": s.service.otel_traces_sampler_ratio,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment={s.stack}",
        "RATE_LIMIT_LOGIN": s.rate_limits.login,
        "RATE_LIMIT_LOGIN_FAILURES": s.rate_limits.login_failures,
        "RATE_LIMIT_WRITES": s.rate_limits.writes,
        "JWT_KEY_ID": s.service.jwt_key_id,
        # Behind the gateway: its Envoy appends the client's address to X-Forwarded-For and sets
        # X-Forwarded-Proto; only its pods reach the app's port (NetworkPolicy), so one hop is trusted.
        "PROXY_TRUSTED_HOPS": "1",
        "PUBLIC_URL": s.edge.public_url,  # links in responses are https:// under the public name
        "MAX_CONTENT_LENGTH": str(EDGE_TIMEOUTS.body_bytes),
    }
    if s.service.gunicorn_workers > 1:  # one worker keeps plain metrics, and with them exemplars
        env["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR
    return env


def notifier_environment(s: Settings, collector_endpoint: str, smtp_url: str) -> dict[str, str]:
    """Return the notifier's non-secret environment (both processes')."""
    catcher = s.notifier.mail_server == "catcher"
    return {
        # A mail catcher speaks plain SMTP, which the production settings refuse: those stacks run
        # the development settings, without Flask's debug mode.
        "LOOKOUT_ENV": "development" if catcher else "production",
        **({"DEBUG": "false"} if catcher else {}),
        "SMTP_URL": smtp_url,
        "MAIL_FROM": f"Lookout <no-reply@{s.edge.hostname}>",
        # Tokens are the users API's: its public keys, through its ClusterIP Service.
        "JWKS_URL": f"http://{APP}.{s.service.namespace}.svc.cluster.local:80/.well-known/jwks.json",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "4",
        "OTEL_SERVICE_NAME": NOTIFIER,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": s.service.otel_traces_sampler_ratio,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment={s.stack}",
    }


def notifier_args(s: Settings, monitoring: Monitoring, database: Database, broker_url: pulumi.Input[str],
                  broker_peer: Peer, mail: MailCatcher | None = None) -> ServiceArgs:
    """Return the notifier's Args: its API (behind the edge, on CPU) and its consumer (scaled on the
    queue by KEDA, ``ExternalScaler``); egress to its database, the broker, the SMTP server, the
    collector and the users API's public keys, nothing else."""
    smtp = (mail.peer if mail is not None
            else Peer(port=s.notifier.smtp_port, cidrs=s.notifier.smtp_egress_cidrs))
    secrets: dict[str, pulumi.Input[str]] = {"DATABASE_URL": database.tenant_urls[NOTIFIER_DATABASE],
                                             "BROKER_URL": broker_url}
    if s.notifier.smtp_username is not None and s.notifier.smtp_password is not None:
        secrets |= {"SMTP_USERNAME": s.notifier.smtp_username, "SMTP_PASSWORD": s.notifier.smtp_password}
    shutdown = Shutdown(s.service.pre_stop_seconds, s.service.gunicorn_graceful_timeout,
                        s.service.termination_grace_period_seconds)
    consumer = Process(
        "consumer", NOTIFIER_CONSUMER_COMMAND,
        ExternalScaler(s.notifier.consumer_min_replicas, s.notifier.consumer_max_replicas),
        s.notifier.resources, dataclasses.replace(shutdown, pre_stop_seconds=0),
        metrics_port=NOTIFIER_CONSUMER_METRICS_PORT,
        env={"CONSUMER_METRICS_PORT": str(NOTIFIER_CONSUMER_METRICS_PORT)})
    users_api = Peer(port=8000, namespace=s.service.namespace, pod_labels=SERVER)  # its JWKS
    return ServiceArgs(
        namespace=s.service.namespace, create_namespace=False, image=s.service.image,
        image_pull_policy=s.service.image_pull_policy, resources=s.notifier.resources,
        scaling=Scaling(s.notifier.min_replicas, s.notifier.max_replicas, s.service.target_cpu_utilization,
                        s.service.scale_down_stabilization_seconds),
        shutdown=shutdown, command=NOTIFIER_SERVER_COMMAND, port=NOTIFIER_PORT, service_type="ClusterIP",
        settings=notifier_environment(s, monitoring.collector_endpoint,
                                      mail.smtp_url if mail is not None else s.notifier.smtp_url),
        secrets=secrets, scrape_namespace=s.monitoring.namespace,
        egress=(database.peer, broker_peer, smtp, monitoring.collector, users_api),
        ingress_from=(edge_clients(s),), migration_command=NOTIFIER_MIGRATION_COMMAND,
        workers=(consumer,), skips=s.service.image_skips)


def relay_args(s: Settings, monitoring: Monitoring, database: Database, broker_url: pulumi.Input[str],
               broker_peer: Peer) -> ServiceArgs:
    """Return the relay's Args: a worker with the users API's settings and secrets (it loads the
    same app), egress to the users database, the broker and the collector, no Service."""
    # The app's settings a process that serves no requests reads: none of gunicorn's or the proxy's.
    env = {key: value for key, value in app_environment(s, monitoring.collector_endpoint).items()
           if key.startswith("OTEL_") or key in ("LOOKOUT_ENV", "JWT_KEY_ID")}
    return ServiceArgs(
        namespace=s.service.namespace, create_namespace=False, image=s.service.image,
        image_pull_policy=s.service.image_pull_policy, resources=RELAY_RESOURCES,
        scaling=Fixed(s.relay.replicas), component="relay", serves_http=False, command=RELAY_COMMAND,
        # SIGTERM: the relay finishes its round (each broker wait bounded by BROKER_TIMEOUT_SECONDS).
        shutdown=Shutdown(0, 0, 30), metrics_port=RELAY_METRICS_PORT,
        settings={**env, "OTEL_SERVICE_NAME": RELAY, "RELAY_METRICS_PORT": str(RELAY_METRICS_PORT)},
        secrets={"SECRET_KEY": s.service.secret_key, "JWT_PRIVATE_KEY": s.service.jwt_private_key,
                 "DATABASE_URL": database.url, "BROKER_URL": broker_url},
        scrape_namespace=s.monitoring.namespace, egress=(database.peer, broker_peer, monitoring.collector),
        skips=s.service.image_skips)


def bootstrap_admin(s: Settings) -> dict[str, pulumi.Input[str]]:
    """Return the bootstrap admin's credentials, as the variables ``flask users bootstrap-admin`` reads."""
    return {BOOTSTRAP_EMAIL: s.service.bootstrap_admin_email,
            BOOTSTRAP_PASSWORD: s.service.bootstrap_admin_password}


def service_args(s: Settings, monitoring: Monitoring, database: Database,
                 counts: RateLimitStore | None, delivery: ProgressiveDelivery | None = None) -> ServiceArgs:
    """Return the app's Args: its settings, its secrets (files) and the peers it connects to."""
    secrets: dict[str, pulumi.Input[str]] = {
        "SECRET_KEY": s.service.secret_key, "JWT_PRIVATE_KEY": s.service.jwt_private_key,
        "DATABASE_URL": database.url}
    egress = [database.peer, monitoring.collector]
    if counts is not None:
        secrets["RATE_LIMIT_STORAGE_URL"] = counts.url
        egress.append(counts.peer)
    writable = [WritableDir("tmp", "/tmp", "64Mi", in_memory=True)]  # noqa: S108
    if s.service.gunicorn_workers > 1:
        writable.append(WritableDir("metrics", METRICS_DIR, "256Mi"))
    return s.service.args(environment=app_environment(s, monitoring.collector_endpoint), secrets=secrets,
                          egress=egress, scrape_namespace=s.monitoring.namespace, writable_dirs=writable,
                          migration_command=MIGRATION_COMMAND, post_migration_command=BOOTSTRAP_COMMAND,
                          job_secrets=bootstrap_admin(s), ingress_from=app_clients(s),
                          canary=s.delivery.canary(
                              prometheus_url=monitoring.prometheus_url,
                              depends_on=[delivery.release] if delivery else []))


def edge_clients(s: Settings) -> dict[str, object]:
    """The gateway's Envoy pods, as a NetworkPolicy peer."""
    return {"namespaceSelector": namespace_selector(GATEWAY_NAMESPACE),
            "podSelector": {"matchLabels": proxy_labels(EDGE, s.service.namespace)}}


def app_clients(s: Settings) -> list[dict[str, object]]:
    """Who may reach the app's port: the gateway's Envoy pods, the notifier (the public keys it
    verifies tokens with), and the in-cluster load generator."""
    peers: list[dict[str, object]] = [
        edge_clients(s),
        {"namespaceSelector": namespace_selector(s.service.namespace),
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": NOTIFIER}}}]
    if probes_the_app(s):
        peers.append({"namespaceSelector": namespace_selector(s.monitoring.namespace),
                      "podSelector": {"matchLabels": {"app.kubernetes.io/instance": BLACKBOX}}})
    if s.loadtest.enabled:
        peers.append({"namespaceSelector": namespace_selector(LOADTEST_NAMESPACE),
                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": f"{APP}-loadtest"}}})
    return peers


def probes_the_app(s: Settings) -> bool:
    """Whether the probe goes to the app's own Service: on a stack with a CA of its own (dev, kind)
    no client outside trusts the certificate and no public DNS serves the name, so the probe takes
    the inside view there unless the stack names a URL."""
    return not s.monitoring.probe_url and s.edge.issuer == "selfsigned"


def dependency_targets(s: Settings) -> list[ScrapeTarget]:
    """The exporters beside the in-cluster database and the shared rate-limit store. Their Services
    (lookout-db-metrics, lookout-ratelimit-metrics) name the jobs the dependencies' rules select
    (dashboards/generate/dependencies.py; tests/infrastructure/test_infra_exporters.py)."""
    targets = []
    if s.database.mode == "incluster":
        targets.append(ScrapeTarget(f"{APP}-db-metrics", s.database.args().namespace,
                                    selector(f"{APP}-db-exporter", "metrics"), port="metrics"))
    if s.rate_limits.shared:
        targets.append(ScrapeTarget(f"{APP}-ratelimit-metrics", s.rate_limits.store_args("", {}).namespace,
                                    selector(f"{APP}-ratelimit", "metrics"), port="metrics"))
    targets.append(broker_target(BROKER, BROKER_NAMESPACE))  # rabbitmq_prometheus: lookout-broker-metrics
    return targets


def broker_clients(s: Settings) -> list[BrokerClient]:
    """The pods that open AMQP connections to the broker: the notifier's (its consumer, and its API,
    whose readiness asks the broker) and the users service's outbox relay."""
    return [BrokerClient(s.service.namespace, {"app.kubernetes.io/name": name}) for name in (NOTIFIER, RELAY)]


def deploy(s: Settings, files: RepoFiles) -> dict[str, pulumi.Input[str]]:
    """Declare everything for one stack and return its outputs."""
    # The pods' revision label on every series: the canary analysis asks for its own pods' ratios.
    scrape = scrape_target(APP, s.service.namespace, pod_target_labels=(HASH_LABEL,))
    # Each service's job is its metrics Service's name: lookout-notifier-metrics, lookout-relay-metrics.
    services = [scrape_target(name, s.service.namespace) for name in (NOTIFIER, RELAY)]
    monitoring = Monitoring("monitoring", s.logs.args(s.monitoring.args(
        dashboard_files=files.dashboards, rule_files=files.rules, alerting=s.alerting.args(),
        targets=(scrape, *services, *dependency_targets(s)))))
    if s.service.target_requests_per_second:  # the HPA's Pods metric: the app's request rate
        MetricsAdapter("autoscaling", MetricsAdapterArgs(
            namespace=s.monitoring.namespace, prometheus_service=PROMETHEUS_SERVICE,
            prometheus_pod_labels=PROMETHEUS_POD_LABELS, scrape_interval=scrape.interval),
            opts=pulumi.ResourceOptions(depends_on=[monitoring]))
    if s.database.mode == "external" and s.notifier.database_url is None:
        raise ConfigError("notifierDatabaseUrl: with an external database the notifier needs its own "
                          "(pulumi config set --secret notifierDatabaseUrl postgresql://...)")
    database = Database(f"{APP}-db", dataclasses.replace(
        s.database.args(scrape_namespace=s.monitoring.namespace), tenants=(NOTIFIER_DATABASE,),
        external_tenant_urls={NOTIFIER_DATABASE: s.notifier.database_url}
        if s.notifier.database_url is not None else {}))
    counts = (RateLimitStore(f"{APP}-ratelimit", s.rate_limits.store_args(
        s.service.namespace, SERVER, scrape_namespace=s.monitoring.namespace))
              if s.rate_limits.shared else None)
    delivery = ProgressiveDelivery("rollouts", s.delivery.args()) if s.delivery.progressive else None
    service = ObservableService(APP, service_args(s, monitoring, database, counts, delivery))
    release_labels = {"app.kubernetes.io/part-of": "lookout", "release": RELEASE}
    # The notifier's API through the same Gateway as the users API, under its own path (the route
    # names its Service, which follows below: Envoy Gateway resolves it when it appears).
    notifications = Route(NOTIFICATIONS_PATH, NOTIFIER, 80, selector(NOTIFIER, "server"), NOTIFIER_PORT)
    edge = Edge(EDGE, s.edge.args(
        namespace=s.service.namespace, backend_service=APP, backend_port=80, backend_pod_labels=SERVER,
        backend_pod_port=8000, timeouts=EDGE_TIMEOUTS, scrape_namespace=s.monitoring.namespace,
        release_labels=release_labels, service_type=s.service.service_type,
        external_traffic_policy=s.service.external_traffic_policy,
        source_ranges=s.service.load_balancer_source_ranges, depends_on=[service, monitoring],
        routes=[notifications]))
    # The broker's operator gets its webhook's certificate from cert-manager, which the edge installs.
    keda = Keda("keda", sources=[broker_management(BROKER, BROKER_NAMESPACE)])
    broker = Broker(BROKER, s.broker.args(
        scrape_namespace=s.monitoring.namespace, prometheus_pod_labels=PROMETHEUS_POD_LABELS,
        clients=broker_clients(s), management_clients=[keda.client], depends_on=[edge.cert_manager]))
    # Its namespace, its databases, and a broker whose nodes are all ready (the RabbitmqCluster waits).
    after_api = pulumi.ResourceOptions(depends_on=[service, database, broker])
    ObservableService(RELAY, relay_args(s, monitoring, database, broker.url, broker.peer), opts=after_api)
    mail = (MailCatcher(MAIL_CATCHER, MailCatcherArgs(
        namespace=s.service.namespace, client_labels={"app.kubernetes.io/name": NOTIFIER}),
        opts=pulumi.ResourceOptions(depends_on=[service])) if s.notifier.mail_server == "catcher" else None)
    notifier = ObservableService(
        NOTIFIER, notifier_args(s, monitoring, database, broker.url, broker.peer, mail), opts=after_api)
    # The consumer's replicas follow its queue's depth (KEDA); the users API keeps its own HPA.
    QueueScaler(f"{NOTIFIER}-queue", s.queue_scaling.args(
        namespace=s.service.namespace, management_url=broker.management_url,
        deployment=notifier.workloads["consumer"], min_replicas=s.notifier.consumer_min_replicas,
        max_replicas=s.notifier.consumer_max_replicas, depends_on=[notifier, keda.release]))
    # A client's view: the public https:// URL through the gateway, unless the stack names another
    # or has a CA of its own (then the app's /readyz through its Service).
    probe_url = (pulumi.Output.concat(service.url, "/readyz") if probes_the_app(s)
                 else s.monitoring.probe_url or f"{s.edge.public_url}/readyz")
    OutsideInProbe(f"{APP}-probe", OutsideInArgs(
        namespace=s.monitoring.namespace, job=PROBE_JOB, release_labels=release_labels),
        url=probe_url,
        opts=pulumi.ResourceOptions(depends_on=[monitoring, edge]))
    outputs: dict[str, pulumi.Input[str]] = {
        "loadBalancerAddress": edge.address,
        "serviceUrl": edge.url,
        "namespace": service.namespace,
        "grafanaAddress": monitoring.grafana_address,
        "grafanaAdminPassword": monitoring.grafana_admin_password,
        "image": s.service.image,  # what runs now: the release pipeline rolls back to it
        # The canary Rollout the release pipeline waits on ("" with progressiveDelivery off).
        "rollout": APP if s.delivery.progressive else "",
        "notifierUrl": pulumi.Output.concat(edge.url, NOTIFICATIONS_PATH),
        # The notifier's consumer Deployment, which the queue-depth scaler targets.
        "notifierConsumer": notifier.workloads["consumer"],
        # The mail catcher's Service (web UI and API on 8025, through kubectl port-forward); "" without.
        "mailCatcher": MAIL_CATCHER if mail is not None else "",
        "brokerUrl": broker.url,  # amqp://, a secret: the services' BROKER_URL
    }
    if s.loadtest.enabled:
        # The run logs in as the bootstrap admin: it needs an admin to make its accounts and to list.
        admin = bootstrap_admin(s)
        loadgen = LoadGenerator(f"{APP}-loadtest", s.loadtest.args(
            files=files.loadtests, target_url=service.url,
            target=Peer(port=8000, namespace=s.service.namespace, pod_labels=SERVER),
            pip_requirements=locked_requirements(s.loadtest.pip_packages),
            credentials={"LOOKOUT_LOADTEST_ADMIN_EMAIL": admin[BOOTSTRAP_EMAIL],
                         "LOOKOUT_LOADTEST_ADMIN_PASSWORD": admin[BOOTSTRAP_PASSWORD]},
            # The writers' users are emailed: the run reports the notifier's latency from Prometheus.
            prometheus_url=monitoring.prometheus_url,
            prometheus=Peer(port=9090, namespace=s.monitoring.namespace, pod_labels=PROMETHEUS_POD_LABELS)))
        outputs["locustWebUrl"] = loadgen.web_url
        if loadgen.verdict_job:
            outputs["loadtestJob"] = loadgen.verdict_job
    return outputs

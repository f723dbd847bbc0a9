"""ObservableService: one service on Kubernetes, its processes scaled, restricted, migrated before they run.

A service is one image with its settings, secrets, network rules, migrations and scrape job; its
processes are the pods it runs: an HTTP server (probes on its port, a Service, an edge route), or
a worker (a consumer, a relay: probes on its metrics port, no Service for traffic). Each process
is scaled by an HPA (``Scaling``), by another controller (``ExternalScaler``: KEDA's ScaledObject)
or not at all (``Fixed``). The users API, the notifier (its API and its consumer) and the relay are
instances (infra/stack.py); a further service is one more (infra/README.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.monitoring import ScrapeTarget
from infra.components.network import namespace_selector, policy_spec
from infra.components.pods import (
    app_labels,
    container_security,
    namespace_meta,
    pod_security,
    selector,
    skip_annotations,
)
from infra.components.rollouts import HASH_LABEL, slo_queries
from infra.components.service_args import (
    Autoscaling,
    ExternalScaler,
    Fixed,
    Http,
    Process,
    Scaling,
    ServiceArgs,
    Shutdown,
)

__all__ = ["Autoscaling", "ExternalScaler", "Fixed", "Http", "ObservableService", "Process", "Scaling",
           "ServiceArgs", "Shutdown", "scrape_target"]

SECRETS_DIR = "/var/run/secrets/lookout"
JOB_SECRETS_DIR = "/var/run/secrets/lookout-job"  # secrets only the migration Job's last step mounts
SCRAPED = "lookout.dev/metrics"  # on every process's pods: the metrics Service selects them all


class ObservableService(pulumi.ComponentResource):
    """Namespace, settings, secrets, migration Job, and per process a Deployment (the main one
    possibly a Rollout with its AnalysisTemplate), its Service, its scaler and PDB; one metrics
    Service (the scrape job) and one NetworkPolicy for all of them."""

    namespace: pulumi.Output[str]
    workload_kind: tuple[str, str]  # apiVersion and kind of what runs the main process's pods
    workloads: dict[str, str]  # component -> the name of the Deployment (or Rollout) running it
    address: pulumi.Output[str]
    url: pulumi.Output[str]
    pod_labels: dict[str, str]  # the main process's pods

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:service:ObservableService", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        processes = args.processes()
        main = processes[0]
        self.pod_labels = selector(name, main.component)
        in_ns = child
        ns: k8s.core.v1.Namespace | None = None
        if args.create_namespace:
            ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace),
                                       opts=child)
            in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        self._ns_deps: list[pulumi.Resource] = [ns] if ns is not None else []

        account = k8s.core.v1.ServiceAccount(
            f"{name}-serviceaccount", metadata=self._meta("server", name=name),
            automount_service_account_token=False, opts=in_ns)
        server_settings = {"HOST": "0.0.0.0", "PORT": str(args.port),  # noqa: S104 - inside a pod
                           "METRICS_PORT": str(args.metrics_port),
                           "GUNICORN_GRACEFUL_TIMEOUT": str(args.shutdown.graceful_timeout)}
        settings = k8s.core.v1.ConfigMap(  # auto-named: a change rolls the pods
            f"{name}-settings", metadata=self._meta("server"), data={
                **args.settings, **(server_settings if args.serves_http else {})}, opts=in_ns)
        secret = k8s.core.v1.Secret(
            f"{name}-secrets", metadata=self._meta("server"), type="Opaque",
            string_data=dict(args.secrets), opts=in_ns)
        self._env_refs = (settings.metadata.name, secret.metadata.name, account.metadata.name)
        self._job_secret: pulumi.Output[str] | None = None
        if args.job_secrets:
            self._job_secret = k8s.core.v1.Secret(
                f"{name}-job-secrets", metadata=self._meta("migrations"), type="Opaque",
                string_data=dict(args.job_secrets), opts=in_ns).metadata.name

        rollout_deps: list[pulumi.Resource] = []
        if args.migration_command:
            # One Job per image, awaited before the Deployment changes: migrations never run
            # concurrently (Alembic takes no lock) and never on a scale-up, unlike an init container.
            digest = hashlib.sha256(args.image.encode()).hexdigest()[:8]
            job = k8s.batch.v1.Job(f"{name}-migrations", metadata=self._meta(
                "migrations", name=f"{name}-migrate-{digest}", annotations={
                    "pulumi.com/waitFor": "condition=Complete", "pulumi.com/timeoutSeconds": "600",
                    **skip_annotations(self._skips())}),
                spec={
                    # No ttlSecondsAfterFinished: a Job that deletes itself would be re-created
                    # (and re-run) by the next `pulumi up`.
                    "backoffLimit": 4, "activeDeadlineSeconds": 600,
                    "template": self._job_template(),
                }, opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._ns_deps],
                                               delete_before_replace=True))
            rollout_deps.append(job)

        self.workloads = {}
        services: dict[str, k8s.core.v1.Service] = {}
        for process in processes:
            services |= self._process(process, process is main, rollout_deps, in_ns)

        # Metrics get a cluster-internal Service of their own, over every process: one scrape job
        # named after it (<name>-metrics), which the service's rules and dashboards select.
        k8s.core.v1.Service(f"{name}-metrics", metadata=self._meta("metrics", name=f"{name}-metrics"), spec={
            "type": "ClusterIP", "selector": {"app.kubernetes.io/name": name, SCRAPED: "true"},
            "ports": [{"name": "metrics", "port": args.metrics_port, "targetPort": "metrics",
                       "protocol": "TCP"}]}, opts=in_ns)
        http_ports = sorted({p.http.port for p in processes if p.http})
        clients = {"from": [dict(p) for p in args.ingress_from]} if args.ingress_from else {}
        policy = policy_spec(
            {"app.kubernetes.io/name": name},  # every process and the migration Job
            ingress=[
                *([{**clients, "ports": [{"protocol": "TCP", "port": port} for port in http_ports]}]
                  if http_ports else []),  # clients, through the gateway
                {"from": [{"namespaceSelector": namespace_selector(args.scrape_namespace)}],
                 "ports": [{"protocol": "TCP", "port": port}  # Prometheus scrapes /metrics
                           for port in sorted({p.metrics_port for p in processes})]},
            ], egress=args.egress)
        k8s.networking.v1.NetworkPolicy(f"{name}-network", metadata=self._meta("server", name=name),
                                        spec=policy, opts=in_ns)

        self.namespace = pulumi.Output.from_input(args.namespace) if ns is None else ns.metadata.name
        local = f"{name}.{args.namespace}.svc.cluster.local"
        service = services.get(main.component)
        self.url = pulumi.Output.from_input(f"http://{local}:{args.service_port}" if service else "")
        self.address = (service.status.apply(_ingress_address)
                        if service is not None and args.service_type == "LoadBalancer"
                        else pulumi.Output.from_input(local if service else ""))
        self.register_outputs({"namespace": self.namespace, "address": self.address, "url": self.url})

    def _process(self, process: Process, main: bool, rollout_deps: list[pulumi.Resource],
                 in_ns: pulumi.ResourceOptions) -> dict[str, k8s.core.v1.Service]:
        """Declare one process's workload, Service (HTTP only), scaler and PDB."""
        args, name = self._args, self._name
        obj = name if main else f"{name}-{process.component}"  # object names
        res = name if main else f"{name}-{process.component}"  # Pulumi resource names
        labels = selector(name, process.component)
        canary = args.canary if main else None
        workload_spec: dict[str, Any] = {
            # No replicas unless Fixed: an HPA or a ScaledObject owns the count, and a declared one
            # fights it on every `pulumi up` under server-side apply (pulumi-kubernetes#2491).
            **({"replicas": process.scaling.replicas} if isinstance(process.scaling, Fixed) else {}),
            "selector": {"matchLabels": labels},
            "minReadySeconds": 5, "revisionHistoryLimit": 5, "progressDeadlineSeconds": 600,
            "template": self._pod_template(process.component, None, "Always", process, canary is not None),
        }
        workload_meta = self._meta(process.component, name=obj, annotations=skip_annotations(self._skips()))
        deps = [*self._ns_deps, *rollout_deps]
        if canary is None:
            rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
            workload: pulumi.CustomResource = k8s.apps.v1.Deployment(
                f"{res}-deployment", metadata=workload_meta, spec={**workload_spec, "strategy": rolling},
                opts=pulumi.ResourceOptions(parent=self, depends_on=deps))
            kind = ("apps/v1", "Deployment")
        else:
            after_crds = pulumi.ResourceOptions(parent=self, depends_on=[*self._ns_deps, *canary.depends_on])
            template = k8s.apiextensions.CustomResource(
                f"{res}-analysis", api_version="argoproj.io/v1alpha1", kind="AnalysisTemplate",
                metadata=self._meta(process.component, name=f"{obj}-slo-burn"),
                spec=canary.analysis_spec(slo_queries()), opts=after_crds)
            # A Rollout where the Deployment was: the same pods, released as a canary that the
            # analysis above promotes or aborts (an aborted one is scaled away by the controller).
            workload = k8s.apiextensions.CustomResource(
                f"{res}-rollout", api_version="argoproj.io/v1alpha1", kind="Rollout", metadata=workload_meta,
                spec={**workload_spec, "progressDeadlineAbort": True,
                      "strategy": canary.strategy(f"{obj}-slo-burn")},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*deps, template, *canary.depends_on]))
            kind = ("argoproj.io/v1alpha1", "Rollout")
        if main:
            self.workload_kind = kind
        self.workloads[process.component] = obj

        services = {}
        if process.http is not None:
            service_spec: dict[str, Any] = {
                "type": args.service_type if main else "ClusterIP", "selector": labels,
                "ports": [{"name": "http", "port": process.http.service_port, "targetPort": "http",
                           "protocol": "TCP"}]}
            if service_spec["type"] == "LoadBalancer":
                service_spec["externalTrafficPolicy"] = args.external_traffic_policy
                if args.source_ranges:
                    service_spec["loadBalancerSourceRanges"] = list(args.source_ranges)
            services[process.component] = k8s.core.v1.Service(
                f"{res}-service", metadata=self._meta(process.component, name=obj), spec=service_spec,
                opts=in_ns)
        if isinstance(process.scaling, Scaling):
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{res}-hpa", metadata=self._meta(process.component, name=obj),
                spec=self._hpa_spec(process.scaling, kind, workload, canary is not None), opts=in_ns)
        k8s.policy.v1.PodDisruptionBudget(f"{res}-pdb", metadata=self._meta(process.component, name=obj),
                                          spec={"maxUnavailable": 1, "selector": {"matchLabels": labels},
                                                "unhealthyPodEvictionPolicy": "AlwaysAllow"}, opts=in_ns)
        return services

    def _meta(self, component: str, **extra: Any) -> dict[str, Any]:
        return {"namespace": self._args.namespace, "labels": app_labels(self._name, component), **extra}

    def _skips(self) -> dict[str, str]:
        """Return the checkov checks that do not apply here, each with its reason."""
        skips = dict(self._args.skips)
        if self._args.image_pull_policy != "Always":
            skips["CKV_K8S_15"] = "images are loaded into local clusters, where a pull cannot succeed"
        return skips

    def _pod_template(self, component: str, command: list[str] | None, restart: str,
                      process: Process | None = None, canary: bool = False) -> dict[str, Any]:
        """A process's pods (``process``), or the migration Job's (``command``)."""
        args, (settings, secret, account) = self._args, self._env_refs
        shutdown = process.shutdown if process else args.shutdown
        own_env = sorted((process.env if process else {}).items())
        container: dict[str, Any] = {
            "name": "app" if command is None else "migrate", "image": args.image,
            "imagePullPolicy": args.image_pull_policy,
            "envFrom": [{"configMapRef": {"name": settings}}],
            "env": [*({"name": key, "value": value} for key, value in own_env),
                    *({"name": f"{key}_FILE", "value": f"{SECRETS_DIR}/{key}"}
                      for key in sorted(args.secrets))],
            "resources": (process.resources if process else args.resources).spec(),
            "securityContext": container_security(),
            "volumeMounts": [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
                             *(d.mount() for d in args.writable_dirs)],
        }
        labels = app_labels(self._name, component)
        if process is not None:
            labels[SCRAPED] = "true"
            if process.command:
                container["command"] = list(process.command)
            container |= _probes(process)
        else:
            container["command"] = command
        spread = [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                   "labelSelector": {"matchLabels": selector(self._name, component)},
                   # Each revision spreads on its own: a Rollout's pods carry its own hash label.
                   "matchLabelKeys": [HASH_LABEL if canary else "pod-template-hash"]}
                  for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
        return {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": account, "automountServiceAccountToken": False,
                "enableServiceLinks": False, "restartPolicy": restart,
                "securityContext": pod_security(),
                "terminationGracePeriodSeconds": shutdown.termination_grace_period_seconds,
                "containers": [container],
                "volumes": [{"name": "secrets", "secret": {"secretName": secret, "defaultMode": 0o440}},
                            *(d.volume() for d in args.writable_dirs)],
                **({"topologySpreadConstraints": spread} if process is not None else {}),
            },
        }

    def _job_template(self) -> dict[str, Any]:
        """The migrations; then, when there is one, the post-migration step in the same pod."""
        args = self._args
        template = self._pod_template("migrations", list(args.migration_command or ()), "Never")
        if not args.post_migration_command:
            return template
        spec = template["spec"]
        # Init containers run one after another, each to success: the step sees a migrated schema.
        (migrate,) = spec["containers"]
        step = {**migrate, "name": "post-migration", "command": list(args.post_migration_command)}
        if self._job_secret is not None:
            step["env"] = [*migrate["env"], *({"name": f"{key}_FILE", "value": f"{JOB_SECRETS_DIR}/{key}"}
                                              for key in sorted(args.job_secrets))]
            step["volumeMounts"] = [*migrate["volumeMounts"],
                                    {"name": "job-secrets", "mountPath": JOB_SECRETS_DIR, "readOnly": True}]
            spec["volumes"].append({"name": "job-secrets",
                                    "secret": {"secretName": self._job_secret, "defaultMode": 0o440}})
        spec["initContainers"], spec["containers"] = [migrate], [step]
        return template

    def _hpa_spec(self, scaling: Scaling, kind: tuple[str, str], workload: pulumi.CustomResource,
                  custom: bool) -> dict[str, Any]:
        metrics: list[dict[str, Any]] = [{"type": "Resource", "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization}}}]
        if scaling.target_requests_per_second:
            metrics.append({"type": "Pods", "pods": {
                "metric": {"name": scaling.requests_metric},
                "target": {"type": "AverageValue", "averageValue": str(scaling.target_requests_per_second)}}})
        return {
            "scaleTargetRef": {"apiVersion": kind[0], "kind": kind[1],
                               # A custom resource's metadata is a plain mapping, a Deployment's typed.
                               "name": workload.metadata.apply(lambda m: m["name"])
                               if custom else workload.metadata.name},
            "minReplicas": scaling.min_replicas, "maxReplicas": scaling.max_replicas, "metrics": metrics,
            "behavior": {
                # Up fast (double or +4 pods every 15 s), down slowly after a calm window.
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                    {"type": "Percent", "value": 100, "periodSeconds": 15},
                    {"type": "Pods", "value": 4, "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                              "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}]},
            },
        }


def scrape_target(name: str, namespace: str, pod_target_labels: Sequence[str] = ()) -> ScrapeTarget:
    """Return what Prometheus scrapes of the instance ``name``: its metrics Service, over every
    process, whose name (``<name>-metrics``) prometheus-operator makes the job's."""
    return ScrapeTarget(name, namespace, selector(name, "metrics"), port="metrics",
                        pod_target_labels=tuple(pod_target_labels))


def _probes(process: Process) -> dict[str, Any]:
    """Ports and probes of a process: an HTTP server's on its port (startup allows 60 s to boot;
    liveness checks only the process, readiness its dependencies; a preStop pause lets endpoints
    and load balancers drop the pod before SIGTERM); a worker's on its metrics listener, which
    answers while the process lives (it has no endpoints to leave)."""
    ports = [{"name": "metrics", "containerPort": process.metrics_port, "protocol": "TCP"}]
    if process.http is None:
        probe = {"httpGet": {"path": "/metrics", "port": "metrics"}, "timeoutSeconds": 2}
        return {"ports": ports,
                "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
                "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
                "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 2}}
    http = process.http
    on = {"port": "http"}
    return {
        "ports": [{"name": "http", "containerPort": http.port, "protocol": "TCP"}, *ports],
        "startupProbe": {"httpGet": {"path": http.liveness_path, **on}, "periodSeconds": 2,
                         "timeoutSeconds": 2, "failureThreshold": 30},
        "livenessProbe": {"httpGet": {"path": http.liveness_path, **on}, "periodSeconds": 10,
                          "timeoutSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": http.readiness_path, **on}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 2},
        "lifecycle": {"preStop": {"sleep": {"seconds": process.shutdown.pre_stop_seconds}}},
    }


def _ingress_address(status: Any) -> str:
    """Return the load balancer's IP or hostname (some clouds give only a name)."""
    ingress = (status.load_balancer.ingress or []) if status and status.load_balancer else []
    if not ingress:
        return ""
    return ingress[0].ip or ingress[0].hostname or ""

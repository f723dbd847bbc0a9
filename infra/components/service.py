"""ObservableService: one HTTP service on Kubernetes, autoscaled, restricted, migrated before it serves.

A second service is one more instance with its own ``ServiceArgs`` (infra/README.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.autoscaling import REQUESTS_METRIC
from infra.components.network import Peer, namespace_selector, policy_spec
from infra.components.pods import (
    Resources,
    WritableDir,
    app_labels,
    container_security,
    namespace_meta,
    pod_security,
    selector,
    skip_annotations,
)
from infra.components.rollouts import HASH_LABEL, Canary, slo_queries

SECRETS_DIR = "/var/run/secrets/lookout"
JOB_SECRETS_DIR = "/var/run/secrets/lookout-job"  # secrets only the migration Job's last step mounts


@dataclass(frozen=True)
class Scaling:
    min_replicas: int
    max_replicas: int
    target_cpu_utilization: int
    scale_down_stabilization_seconds: int
    target_requests_per_second: int = 0  # 0: CPU only
    requests_metric: str = REQUESTS_METRIC  # served by MetricsAdapter (components/autoscaling.py)


@dataclass(frozen=True)
class Shutdown:
    pre_stop_seconds: int
    graceful_timeout: int  # gunicorn's, handed to the app as GUNICORN_GRACEFUL_TIMEOUT
    termination_grace_period_seconds: int


@dataclass(frozen=True)
class ServiceArgs:
    namespace: str
    image: str
    resources: Resources
    scaling: Scaling
    shutdown: Shutdown
    settings: Mapping[str, pulumi.Input[str]]  # non-secret environment, in a ConfigMap
    secrets: Mapping[str, pulumi.Input[str]]  # mounted as files; the app reads <NAME>_FILE
    scrape_namespace: str  # Prometheus scrapes from there
    egress: Sequence[Peer] = ()  # DNS is always allowed
    # NetworkPolicy peers allowed to the app's port (the gateway's pods); empty: any source.
    ingress_from: Sequence[Mapping[str, Any]] = ()
    image_pull_policy: str = "IfNotPresent"
    port: int = 8000
    metrics_port: int = 9100  # /metrics answers only here (the app's METRICS_PORT), never via the LB
    service_port: int = 80
    service_type: str = "LoadBalancer"
    source_ranges: Sequence[str] = ()
    # Local: the pods see the client's address (per-address rate limits); Cluster: a node's.
    external_traffic_policy: str = "Local"
    writable_dirs: Sequence[WritableDir] = (WritableDir("tmp", "/tmp", "64Mi", in_memory=True),)  # noqa: S108
    migration_command: Sequence[str] | None = None  # run to completion before new pods roll out
    # Run in the same Job after the migrations (the bootstrap admin), with ``job_secrets`` as
    # files (<NAME>_FILE) that no other pod mounts.
    post_migration_command: Sequence[str] | None = None
    job_secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    liveness_path: str = "/livez"
    readiness_path: str = "/readyz"
    skips: Mapping[str, str] = field(default_factory=dict)  # extra checkov skips with their reasons
    canary: Canary | None = None  # a Rollout (Argo Rollouts) released as a canary; None: a Deployment


class ObservableService(pulumi.ComponentResource):
    """Namespace, settings, secrets, migration Job, Deployment (or Rollout and AnalysisTemplate),
    Service, HPA, PDB and NetworkPolicy."""

    namespace: pulumi.Output[str]
    workload_kind: tuple[str, str]  # apiVersion and kind of what runs the pods
    address: pulumi.Output[str]
    url: pulumi.Output[str]
    pod_labels: dict[str, str]

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:service:ObservableService", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        self.pod_labels = selector(name, "server")
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace), opts=child)
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])

        account = k8s.core.v1.ServiceAccount(
            f"{name}-serviceaccount", metadata=self._meta("server", name=name),
            automount_service_account_token=False, opts=in_ns)
        settings = k8s.core.v1.ConfigMap(  # auto-named: a change rolls the pods
            f"{name}-settings", metadata=self._meta("server"), data={
                **args.settings, "HOST": "0.0.0.0", "PORT": str(args.port),  # noqa: S104 - inside a pod
                "METRICS_PORT": str(args.metrics_port),
                "GUNICORN_GRACEFUL_TIMEOUT": str(args.shutdown.graceful_timeout)}, opts=in_ns)
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
                }, opts=pulumi.ResourceOptions(parent=self, depends_on=[ns], delete_before_replace=True))
            rollout_deps.append(job)

        workload_spec: dict[str, Any] = {
            # No replicas: the HPA owns the count, and a declared one fights it on every
            # `pulumi up` under server-side apply (pulumi-kubernetes#2491).
            "selector": {"matchLabels": self.pod_labels},
            "minReadySeconds": 5, "revisionHistoryLimit": 5, "progressDeadlineSeconds": 600,
            "template": self._pod_template("server", None, "Always"),
        }
        workload_meta = self._meta("server", name=name, annotations=skip_annotations(self._skips()))
        if args.canary is None:
            rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
            deployment: pulumi.CustomResource = k8s.apps.v1.Deployment(
                f"{name}-deployment", metadata=workload_meta, spec={**workload_spec, "strategy": rolling},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, *rollout_deps]))
            self.workload_kind = ("apps/v1", "Deployment")
        else:
            after_crds = pulumi.ResourceOptions(parent=self, depends_on=[ns, *args.canary.depends_on])
            template = k8s.apiextensions.CustomResource(
                f"{name}-analysis", api_version="argoproj.io/v1alpha1", kind="AnalysisTemplate",
                metadata=self._meta("server", name=f"{name}-slo-burn"),
                spec=args.canary.analysis_spec(slo_queries()), opts=after_crds)
            # A Rollout where the Deployment was: the same pods, released as a canary that the
            # analysis above promotes or aborts (an aborted one is scaled away by the controller).
            deployment = k8s.apiextensions.CustomResource(
                f"{name}-rollout", api_version="argoproj.io/v1alpha1", kind="Rollout", metadata=workload_meta,
                spec={**workload_spec, "progressDeadlineAbort": True,
                      "strategy": args.canary.strategy(f"{name}-slo-burn")},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[ns, template, *args.canary.depends_on,
                                                                     *rollout_deps]))
            self.workload_kind = ("argoproj.io/v1alpha1", "Rollout")

        service_spec: dict[str, Any] = {
            "type": args.service_type, "selector": self.pod_labels,
            "ports": [{"name": "http", "port": args.service_port, "targetPort": "http", "protocol": "TCP"}]}
        if args.service_type == "LoadBalancer":
            service_spec["externalTrafficPolicy"] = args.external_traffic_policy
            if args.source_ranges:
                service_spec["loadBalancerSourceRanges"] = list(args.source_ranges)
        service = k8s.core.v1.Service(f"{name}-service", metadata=self._meta("server", name=name),
                                      spec=service_spec, opts=in_ns)
        # Metrics get a cluster-internal Service of their own: the public one never carries them.
        k8s.core.v1.Service(f"{name}-metrics", metadata=self._meta("metrics", name=f"{name}-metrics"), spec={
            "type": "ClusterIP", "selector": self.pod_labels,
            "ports": [{"name": "metrics", "port": args.metrics_port, "targetPort": "metrics",
                       "protocol": "TCP"}]}, opts=in_ns)
        k8s.autoscaling.v2.HorizontalPodAutoscaler(f"{name}-hpa", metadata=self._meta("server", name=name),
                                                   spec=self._hpa_spec(deployment), opts=in_ns)
        k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=self._meta("server", name=name), spec={
            "maxUnavailable": 1, "selector": {"matchLabels": self.pod_labels},
            "unhealthyPodEvictionPolicy": "AlwaysAllow"}, opts=in_ns)
        policy = policy_spec(
            {"app.kubernetes.io/name": name},  # the server and the migration Job
            ingress=[
                {**({"from": [dict(p) for p in args.ingress_from]} if args.ingress_from else {}),
                 "ports": [{"protocol": "TCP", "port": args.port}]},  # clients, through the gateway
                {"from": [{"namespaceSelector": namespace_selector(args.scrape_namespace)}],
                 "ports": [{"protocol": "TCP", "port": args.metrics_port}]},  # Prometheus scrapes /metrics
            ], egress=args.egress)
        k8s.networking.v1.NetworkPolicy(f"{name}-network", metadata=self._meta("server", name=name),
                                        spec=policy, opts=in_ns)

        self.namespace = ns.metadata.name
        self.url = pulumi.Output.concat("http://", service.metadata.name, ".", args.namespace,
                                        ".svc.cluster.local:", str(args.service_port))
        local = pulumi.Output.concat(service.metadata.name, ".", args.namespace, ".svc.cluster.local")
        self.address = (service.status.apply(_ingress_address) if args.service_type == "LoadBalancer"
                        else local)
        self.register_outputs({"namespace": self.namespace, "address": self.address, "url": self.url})

    def _meta(self, component: str, **extra: Any) -> dict[str, Any]:
        return {"namespace": self._args.namespace, "labels": app_labels(self._name, component), **extra}

    def _skips(self) -> dict[str, str]:
        """Return the checkov checks that do not apply here, each with its reason."""
        skips = dict(self._args.skips)
        if self._args.image_pull_policy != "Always":
            skips["CKV_K8S_15"] = "images are loaded into local clusters, where a pull cannot succeed"
        return skips

    def _pod_template(self, component: str, command: list[str] | None, restart: str) -> dict[str, Any]:
        args, (settings, secret, account) = self._args, self._env_refs
        container: dict[str, Any] = {
            "name": "app" if command is None else "migrate", "image": args.image,
            "imagePullPolicy": args.image_pull_policy,
            "envFrom": [{"configMapRef": {"name": settings}}],
            "env": [{"name": f"{key}_FILE", "value": f"{SECRETS_DIR}/{key}"} for key in sorted(args.secrets)],
            "resources": args.resources.spec(), "securityContext": container_security(),
            "volumeMounts": [{"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
                             *(d.mount() for d in args.writable_dirs)],
        }
        if command is None:
            probe = {"port": "http"}
            container |= {
                "ports": [{"name": "http", "containerPort": args.port, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": args.metrics_port, "protocol": "TCP"}],
                # Startup allows 60 s to boot; liveness checks only the process, readiness the database.
                "startupProbe": {"httpGet": {"path": args.liveness_path, **probe}, "periodSeconds": 2,
                                 "timeoutSeconds": 2, "failureThreshold": 30},
                "livenessProbe": {"httpGet": {"path": args.liveness_path, **probe}, "periodSeconds": 10,
                                  "timeoutSeconds": 2, "failureThreshold": 3},
                "readinessProbe": {"httpGet": {"path": args.readiness_path, **probe}, "periodSeconds": 5,
                                   "timeoutSeconds": 3, "failureThreshold": 2},
                # Endpoints and load balancers drop the pod while it still serves; then SIGTERM.
                "lifecycle": {"preStop": {"sleep": {"seconds": args.shutdown.pre_stop_seconds}}},
            }
        else:
            container["command"] = command
        spread = [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                   "labelSelector": {"matchLabels": selector(self._name, component)},
                   # Each revision spreads on its own: a Rollout's pods carry its own hash label.
                   "matchLabelKeys": [HASH_LABEL if self._args.canary else "pod-template-hash"]}
                  for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
        return {
            "metadata": {"labels": app_labels(self._name, component)},
            "spec": {
                "serviceAccountName": account, "automountServiceAccountToken": False,
                "enableServiceLinks": False, "restartPolicy": restart,
                "securityContext": pod_security(),
                "terminationGracePeriodSeconds": args.shutdown.termination_grace_period_seconds,
                "containers": [container],
                "volumes": [{"name": "secrets", "secret": {"secretName": secret, "defaultMode": 0o440}},
                            *(d.volume() for d in args.writable_dirs)],
                **({"topologySpreadConstraints": spread} if command is None else {}),
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

    def _hpa_spec(self, deployment: pulumi.CustomResource) -> dict[str, Any]:
        scaling = self._args.scaling
        metrics: list[dict[str, Any]] = [{"type": "Resource", "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization}}}]
        if scaling.target_requests_per_second:
            metrics.append({"type": "Pods", "pods": {
                "metric": {"name": scaling.requests_metric},
                "target": {"type": "AverageValue", "averageValue": str(scaling.target_requests_per_second)}}})
        return {
            "scaleTargetRef": {"apiVersion": self.workload_kind[0], "kind": self.workload_kind[1],
                               # A custom resource's metadata is a plain mapping, a Deployment's typed.
                               "name": deployment.metadata.apply(lambda m: m["name"])
                               if self._args.canary else deployment.metadata.name},
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


def _ingress_address(status: Any) -> str:
    """Return the load balancer's IP or hostname (some clouds give only a name)."""
    ingress = (status.load_balancer.ingress or []) if status and status.load_balancer else []
    if not ingress:
        return ""
    return ingress[0].ip or ingress[0].hostname or ""

"""LoadGenerator: an optional Locust master and N workers in the cluster, aimed at a service.

The locust files travel in a ConfigMap (the repo's ``loadtests/*.py`` plus the SLO loader they
import), mounted with their repo paths under ``/mnt/lookout`` and put on ``PYTHONPATH``, so the
official ``locustio/locust`` image runs them unchanged. Packages the files need beyond the image
(PyYAML, for ``dashboards.load_slo``) are installed by an init container into an emptyDir, from a
requirements file whose every line carries its hashes (``pip --require-hashes``).

Every read of the API needs a token, so the master gets the admin account it logs in as (the
stack's bootstrap admin) from a Secret of its own namespace. With a run time the run is bounded:
master and workers are Jobs, the master starts by itself (``--autostart``), quits when the run is
over (``--autoquit 0``) and exits with the SLO gate's verdict, which is the master Job's result.
Without one they are Deployments that wait for a start from the web UI.

The writers' new users are user events, so the load drives the notifier too: given Prometheus
(``prometheus_url`` and its pods as ``prometheus``, for the egress rule), the master reads the
notifier's metrics when the run ends and logs the event-to-email latency against the notifier
SLO (loadtests/notifier_watch.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.network import Peer, policy_spec
from infra.components.pods import (
    RELEASE_TAG_SKIPS,
    Resources,
    WritableDir,
    app_labels,
    container_security,
    namespace_meta,
    pod_security,
    selector,
    skip_annotations,
)

FILES_DIR, DEPS_DIR, REQUIREMENTS_DIR = "/mnt/lookout", "/opt/deps", "/mnt/requirements"
CREDENTIALS_DIR = "/var/run/secrets/loadtest"
REQUIREMENTS = "requirements.txt"
# A bounded run's Jobs: time for the workers to connect and the set-up (seeding) on top of the run.
WORKERS_WAIT_SECONDS = 300
SETUP_ALLOWANCE_SECONDS = 900
MASTER_PORT, WEB_PORT = 5557, 8089
PROMETHEUS_URL_VAR = "LOOKOUT_LOADTEST_PROMETHEUS_URL"  # loadtests/options.py reads it
CONFIGMAP_LIMIT = 1024 * 1024  # bytes the API server accepts in one ConfigMap
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
_SCRATCH = (WritableDir("tmp", "/tmp", "64Mi"), WritableDir("deps", DEPS_DIR, "128Mi"))  # noqa: S108 - emptyDirs
MASTER_RESOURCES = Resources("250m", "1", "256Mi", "512Mi")
WORKER_RESOURCES = Resources("500m", "1", "256Mi", "512Mi")  # one gevent process: one core
PIP_RESOURCES = Resources("100m", "500m", "128Mi", "256Mi")
WORKER_SKIPS = {
    "CKV_K8S_8": "workers listen on no port; the master drops a worker whose heartbeats stop",
    "CKV_K8S_9": "workers serve no traffic; the master hands them users once they connect",
}


@dataclass(frozen=True)
class LoadGeneratorArgs:
    files: Mapping[str, str]  # repo-relative path -> content
    target_url: pulumi.Input[str]  # the service's in-cluster URL
    target: Peer  # the service's pods, for the egress rule
    locustfile: str = "loadtests/locustfile.py"
    namespace: str = "lookout-loadtest"
    image: str = "locustio/locust:2.43.1"
    workers: int = 2
    users: int = 50
    spawn_rate: int = 10
    run_time: str = ""  # empty: wait for a start from the web UI (Deployments); set: Jobs, bounded
    run_seconds: int = 0  # run_time in seconds, for the Jobs' deadline
    pip_requirements: str = ""  # a requirements file, every line with --hash; empty: install nothing
    # Environment of the master from a Secret: the admin it logs in as (LOOKOUT_LOADTEST_ADMIN_*).
    credentials: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    master_resources: Resources = MASTER_RESOURCES
    worker_resources: Resources = WORKER_RESOURCES
    # Prometheus scraping the notifier; empty: the run reports no event-to-email latency.
    prometheus_url: pulumi.Input[str] = ""
    prometheus: Peer | None = None  # its pods, for the master's egress rule


def configmap_key(path: str) -> str:
    """Return the ConfigMap key for a repo path ("loadtests/locustfile.py" -> "loadtests.locustfile.py")."""
    return path.replace("/", ".")


class LoadGenerator(pulumi.ComponentResource):
    """A Locust master (web UI on 8089) and workers, restricted, in their own namespace."""

    namespace: pulumi.Output[str]
    web_url: pulumi.Output[str]

    def __init__(self, name: str, args: LoadGeneratorArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("lookout:loadtest:LoadGenerator", name, None, opts)
        _check_files(args)
        self._name, self._args = name, args
        ns = k8s.core.v1.Namespace(f"{name}-namespace", metadata=namespace_meta(args.namespace),
                                   opts=pulumi.ResourceOptions(parent=self))
        in_ns = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        files = k8s.core.v1.ConfigMap(  # auto-named: new files roll the pods
            f"{name}-files", metadata=self._meta("files"),
            data={configmap_key(path): text for path, text in sorted(args.files.items())}, opts=in_ns)
        self._files = files.metadata.name
        self._requirements = k8s.core.v1.ConfigMap(
            f"{name}-requirements", metadata=self._meta("master"), data={REQUIREMENTS: args.pip_requirements},
            opts=in_ns).metadata.name if args.pip_requirements else None
        self._credentials = k8s.core.v1.Secret(
            f"{name}-credentials", metadata=self._meta("master"), type="Opaque",
            string_data=dict(args.credentials), opts=in_ns).metadata.name if args.credentials else None

        locustfile = f"{FILES_DIR}/{args.locustfile}"
        master_args = master_command(locustfile, args)
        master: dict[str, Any] = {"ports": [
            {"name": "web", "containerPort": WEB_PORT, "protocol": "TCP"},
            {"name": "master", "containerPort": MASTER_PORT, "protocol": "TCP"}]}
        if not args.run_time:  # a Job's master exits when the run is over: nothing to probe
            probe = {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 10, "timeoutSeconds": 3}
            master |= {"readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6}}
        self._workload("master", 1, master_args, args.master_resources, master, in_ns)
        master_host = f"{name}-master.{args.namespace}.svc.cluster.local"
        worker_args = ["-f", locustfile, "--worker", "--master-host", master_host]
        self._workload("worker", args.workers, worker_args, args.worker_resources, {}, in_ns, WORKER_SKIPS)
        service = k8s.core.v1.Service(
            f"{name}-master", metadata=self._meta("master", name=f"{name}-master"), spec={
                "type": "ClusterIP", "selector": selector(name, "master"), "ports": [
                    {"name": "master", "port": MASTER_PORT, "targetPort": "master", "protocol": "TCP"},
                    {"name": "web", "port": WEB_PORT, "targetPort": "web", "protocol": "TCP"}]},
            opts=in_ns)
        k8s.networking.v1.NetworkPolicy(f"{name}-network", metadata=self._meta("master", name=name),
                                        spec=self._policy(), opts=in_ns)

        self.namespace = ns.metadata.name
        self.web_url = pulumi.Output.concat("http://", service.metadata.name, ".", args.namespace,
                                            f":{WEB_PORT}")
        self.verdict_job = f"{name}-master" if args.run_time else ""  # its result is the SLO gate's
        self.register_outputs({"namespace": self.namespace, "web_url": self.web_url})

    def _meta(self, component: str, **extra: Any) -> dict[str, Any]:
        return {"namespace": self._args.namespace, "labels": app_labels(self._name, component), **extra}

    def _policy(self) -> dict[str, Any]:
        """Workers reach the master, everyone reaches the service (and PyPI, for the init container)."""
        name, args = self._name, self._args
        egress = [Peer(port=MASTER_PORT, pod_labels=selector(name, "master")), args.target]
        if args.prometheus is not None:  # the master reads the notifier's latency there
            egress.append(args.prometheus)
        if args.pip_requirements:
            egress.append(Peer(port=443, cidrs=("0.0.0.0/0",)))
        spec = policy_spec({"app.kubernetes.io/name": name}, ingress=[
            {"from": [{"podSelector": {"matchLabels": selector(name, "worker")}}],
             "ports": [{"protocol": "TCP", "port": MASTER_PORT}]},
            {"ports": [{"protocol": "TCP", "port": WEB_PORT}]},  # the web UI, through kubectl port-forward
        ], egress=egress)
        if args.pip_requirements:  # PyPI is outside the cluster: public addresses only, HTTPS only
            spec["egress"][-1]["to"][0]["ipBlock"]["except"] = PRIVATE_RANGES
        return spec

    def _workload(self, role: str, replicas: int, locust_args: list[Any], resources: Resources,
                  extra: dict[str, Any], opts: pulumi.ResourceOptions,
                  skips: Mapping[str, str] | None = None) -> None:
        """A Deployment (runs started from the web UI), or a Job when the run is bounded."""
        args = self._args
        env: list[dict[str, Any]] = [
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir; the image's home is read-only
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "PYTHONPATH", "value": f"{FILES_DIR}:{DEPS_DIR}"}]
        mounts = [{"name": "files", "mountPath": FILES_DIR, "readOnly": True},
                  *(d.mount() for d in _SCRATCH)]
        secret_volumes = []
        if role == "master" and args.prometheus_url:
            env.append({"name": PROMETHEUS_URL_VAR, "value": args.prometheus_url})
        if role == "master" and self._credentials is not None:  # the master sends options to workers
            # As files (<NAME>_FILE, which loadtests/options.py reads), never as variables.
            env += [{"name": f"{key}_FILE", "value": f"{CREDENTIALS_DIR}/{key}"}
                    for key in sorted(args.credentials)]
            mounts.append({"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True})
            secret_volumes = [{"name": "credentials",
                               "secret": {"secretName": self._credentials, "defaultMode": 0o440}}]
        base = {"image": args.image, "imagePullPolicy": "IfNotPresent",
                "securityContext": container_security()}
        container = {"name": "locust", **base, "args": locust_args, "env": env,
                     "resources": resources.spec(), "volumeMounts": mounts, **extra}
        volumes = [{"name": "files", "configMap": {"name": self._files, "items": [
            {"key": configmap_key(path), "path": path} for path in sorted(args.files)]}},
            *(d.volume() for d in _SCRATCH), *secret_volumes]
        init = []
        if self._requirements is not None:
            pip = ["python", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                   "--require-hashes", "--no-deps", "--only-binary=:all:", "--target", DEPS_DIR,
                   "--requirement", f"{REQUIREMENTS_DIR}/{REQUIREMENTS}"]
            requirements = {"name": "requirements", "mountPath": REQUIREMENTS_DIR, "readOnly": True}
            init = [{"name": "deps", **base, "command": pip, "env": env[:1],
                     "resources": PIP_RESOURCES.spec(), "volumeMounts": [*mounts[1:], requirements]}]
            volumes.append({"name": "requirements", "configMap": {"name": self._requirements}})
        # The probe skips are for Deployments: checkov does not ask a Job's pods for probes.
        annotations = skip_annotations({**(skips or {} if not args.run_time else {}), **RELEASE_TAG_SKIPS})
        pod = {"automountServiceAccountToken": False, "enableServiceLinks": False,
               "securityContext": pod_security(), "initContainers": init, "containers": [container],
               "volumes": volumes}
        template = {"metadata": {"labels": app_labels(self._name, role)}, "spec": pod}
        if not args.run_time:
            k8s.apps.v1.Deployment(f"{self._name}-{role}", metadata=self._meta(
                role, name=f"{self._name}-{role}", annotations=annotations),
                spec={
                    "replicas": replicas,  # fixed: no autoscaler manages a load generator
                    "strategy": {"type": "Recreate"},  # a run cannot survive a new master anyway
                    "selector": {"matchLabels": selector(self._name, role)},
                    "template": template,
                }, opts=opts)
            return
        # A bounded run: the master's exit code is the SLO gate's verdict, so it never restarts (a
        # second run would judge something else); workers exit 0 when the master ends the run.
        pod["restartPolicy"] = "Never" if role == "master" else "OnFailure"
        deadline = args.run_seconds + WORKERS_WAIT_SECONDS + SETUP_ALLOWANCE_SECONDS
        # `pulumi up` does not wait for the run; its verdict is the master Job's condition.
        meta = self._meta(role, name=f"{self._name}-{role}",
                          annotations={**annotations, "pulumi.com/skipAwait": "true"})
        k8s.batch.v1.Job(f"{self._name}-{role}", metadata=meta,
            spec={"backoffLimit": 0 if role == "master" else 6, "parallelism": replicas,
                  "completions": replicas, "activeDeadlineSeconds": deadline, "template": template},
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True)))


def master_command(locustfile: str, args: LoadGeneratorArgs) -> list[pulumi.Input[str]]:
    """Return the master's arguments; a bounded run starts by itself and quits with the gate's verdict."""
    command: list[pulumi.Input[str]] = [
        "-f", locustfile, "--master", "--master-bind-port", str(MASTER_PORT), "--web-port", str(WEB_PORT),
        "--host", args.target_url]
    if args.run_time:
        command += ["--autostart", "--autoquit", "0", "--users", str(args.users),
                    "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time,
                    "--expect-workers", str(args.workers),
                    "--expect-workers-max-wait", str(WORKERS_WAIT_SECONDS)]
    return command


def _check_files(args: LoadGeneratorArgs) -> None:
    if bool(args.prometheus_url) != (args.prometheus is not None):
        raise ValueError("prometheus_url and prometheus go together: the master's egress rule must let it "
                         "reach the Prometheus it reads the notifier's latency from")
    if args.locustfile not in args.files:
        raise ValueError(f"the locust files have no {args.locustfile}: {sorted(args.files) or 'none'}")
    keys = [configmap_key(path) for path in args.files]
    if len(keys) != len(set(keys)):
        raise ValueError(f"two locust files map to one ConfigMap key: {sorted(args.files)}")
    size = sum(len(text.encode()) for text in args.files.values())
    if size > CONFIGMAP_LIMIT:
        raise ValueError(f"the locust files take {size} bytes, more than a ConfigMap holds "
                         f"({CONFIGMAP_LIMIT})")

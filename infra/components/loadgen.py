"""LoadGenerator: an optional Locust master and N workers in the cluster, aimed at a service.

The locust files travel in a ConfigMap (the repo's ``loadtests/*.py`` plus the SLO loader they
import), mounted with their repo paths under ``/mnt/lookout`` and put on ``PYTHONPATH``, so the
official ``locustio/locust`` image runs them unchanged. Packages the files need beyond the image
(PyYAML, for ``dashboards.load_slo``) are installed by an init container into an emptyDir.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

FILES_DIR, DEPS_DIR = "/mnt/lookout", "/opt/deps"
MASTER_PORT, WEB_PORT = 5557, 8089
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
    run_time: str = ""  # empty: wait for a start from the web UI
    pip_packages: Sequence[str] = ()
    master_resources: Resources = MASTER_RESOURCES
    worker_resources: Resources = WORKER_RESOURCES


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

        locustfile = f"{FILES_DIR}/{args.locustfile}"
        master_args = ["-f", locustfile, "--master", "--master-bind-port", str(MASTER_PORT),
                       "--web-port", str(WEB_PORT), "--host", args.target_url]
        if args.run_time:
            master_args += ["--autostart", "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
                            "--run-time", args.run_time]
        probe = {"httpGet": {"path": "/", "port": "web"}, "periodSeconds": 10, "timeoutSeconds": 3}
        master = {"ports": [{"name": "web", "containerPort": WEB_PORT, "protocol": "TCP"},
                            {"name": "master", "containerPort": MASTER_PORT, "protocol": "TCP"}],
                  "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6}}
        self._deployment("master", 1, master_args, args.master_resources, master, in_ns)
        master_host = f"{name}-master.{args.namespace}.svc.cluster.local"
        worker_args = ["-f", locustfile, "--worker", "--master-host", master_host]
        self._deployment("worker", args.workers, worker_args, args.worker_resources, {}, in_ns, WORKER_SKIPS)
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
        self.register_outputs({"namespace": self.namespace, "web_url": self.web_url})

    def _meta(self, component: str, **extra: Any) -> dict[str, Any]:
        return {"namespace": self._args.namespace, "labels": app_labels(self._name, component), **extra}

    def _policy(self) -> dict[str, Any]:
        """Workers reach the master, everyone reaches the service (and PyPI, for the init container)."""
        name, args = self._name, self._args
        egress = [Peer(port=MASTER_PORT, pod_labels=selector(name, "master")), args.target]
        if args.pip_packages:
            egress.append(Peer(port=443, cidrs=("0.0.0.0/0",)))
        spec = policy_spec({"app.kubernetes.io/name": name}, ingress=[
            {"from": [{"podSelector": {"matchLabels": selector(name, "worker")}}],
             "ports": [{"protocol": "TCP", "port": MASTER_PORT}]},
            {"ports": [{"protocol": "TCP", "port": WEB_PORT}]},  # the web UI, through kubectl port-forward
        ], egress=egress)
        if args.pip_packages:  # PyPI is outside the cluster: public addresses only, HTTPS only
            spec["egress"][-1]["to"][0]["ipBlock"]["except"] = PRIVATE_RANGES
        return spec

    def _deployment(self, role: str, replicas: int, locust_args: list[Any], resources: Resources,
                    extra: dict[str, Any], opts: pulumi.ResourceOptions,
                    skips: Mapping[str, str] | None = None) -> None:
        args = self._args
        env = [{"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir; the image's home is read-only
               {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
               {"name": "PYTHONPATH", "value": f"{FILES_DIR}:{DEPS_DIR}"}]
        mounts = [{"name": "files", "mountPath": FILES_DIR, "readOnly": True},
                  *(d.mount() for d in _SCRATCH)]
        base = {"image": args.image, "imagePullPolicy": "IfNotPresent",
                "securityContext": container_security()}
        container = {"name": "locust", **base, "args": locust_args, "env": env,
                     "resources": resources.spec(), "volumeMounts": mounts, **extra}
        pip = ["python", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
               "--target", DEPS_DIR, *args.pip_packages]
        init = [{"name": "deps", **base, "command": pip, "env": env[:1], "resources": PIP_RESOURCES.spec(),
                 "volumeMounts": mounts[1:]}] if args.pip_packages else []
        items = [{"key": configmap_key(path), "path": path} for path in sorted(args.files)]
        annotations = skip_annotations({**(skips or {}), **RELEASE_TAG_SKIPS})
        k8s.apps.v1.Deployment(f"{self._name}-{role}", metadata=self._meta(
            role, name=f"{self._name}-{role}", annotations=annotations),
            spec={
                "replicas": replicas,  # fixed: no autoscaler manages a load generator
                "strategy": {"type": "Recreate"},  # a run cannot survive a new master anyway
                "selector": {"matchLabels": selector(self._name, role)},
                "template": {"metadata": {"labels": app_labels(self._name, role)}, "spec": {
                    "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "securityContext": pod_security(), "initContainers": init, "containers": [container],
                    "volumes": [{"name": "files", "configMap": {"name": self._files, "items": items}},
                                *(d.volume() for d in _SCRATCH)]}},
            }, opts=opts)


def _check_files(args: LoadGeneratorArgs) -> None:
    if args.locustfile not in args.files:
        raise ValueError(f"the locust files have no {args.locustfile}: {sorted(args.files) or 'none'}")
    keys = [configmap_key(path) for path in args.files]
    if len(keys) != len(set(keys)):
        raise ValueError(f"two locust files map to one ConfigMap key: {sorted(args.files)}")
    size = sum(len(text.encode()) for text in args.files.values())
    if size > CONFIGMAP_LIMIT:
        raise ValueError(f"the locust files take {size} bytes, more than a ConfigMap holds "
                         f"({CONFIGMAP_LIMIT})")

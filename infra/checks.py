"""Gates over the rendered objects: each returns a list of problems, empty when the objects pass.

Usage:
    problems = run_all(rendered.objects, dashboard_files, rule_files)

The schema gate uses kubernetes-validate (built-in kinds) and ``infra.crds`` (custom kinds);
the others check what no schema can: that objects which refer to each other agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import yaml

from infra.components.broker import KIND as RABBITMQ_CLUSTER
from infra.components.broker import OPERATOR_PODS, broker_pod_labels
from infra.components.edge import GATEWAY_PODS, proxy_labels
from infra.components.network import RELEASE_PODS
from infra.crds import SCHEMAS, vendored_schemas

Obj = dict[str, Any]
K8S_VERSIONS = ("1.30.0", "1.33.0")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Rollout")
SCALED_KINDS = ("Deployment", "Rollout")  # what an HPA scales here: declaring replicas fights it


# --- helpers -----------------------------------------------------------------------------------

def workloads(objects: Sequence[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """Yield (workload, pod template) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            yield obj, obj["spec"]["template"]


def containers(template: Obj, init: bool = True) -> list[Obj]:
    spec = template["spec"]
    return [*(spec.get("initContainers") or [] if init else []), *spec["containers"]]


def matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Return whether a label selector (matchLabels and matchExpressions) selects ``labels``."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def pods_selected(objects: Sequence[Obj], namespace: str, selector: Obj) -> list[tuple[Obj, Obj]]:
    """Return the workloads in ``namespace`` whose pods a selector (or a plain label map) selects."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    return [(w, t) for w, t in workloads(objects)
            if w["metadata"].get("namespace") == namespace and matches(selector, _labels(t))]


def env_of(objects: Sequence[Obj], namespace: str, container: Obj) -> dict[str, str]:
    """Return a container's environment: ConfigMaps in envFrom first, then env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        for cm in objects:
            meta = cm["metadata"]
            if cm["kind"] == "ConfigMap" and meta["name"] == ref and meta.get("namespace") == namespace:
                env.update(cm.get("data") or {})
    env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
    return env


DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "redis": 6379,
                 "rediss": 6379, "amqp": 5672, "amqps": 5671, "smtps": 465, "smtp": 587, "smtp+plain": 25}


def settings_of(objects: Sequence[Obj], namespace: str, template: Obj, container: Obj) -> dict[str, str]:
    """Return what a container is configured with: its environment, and for each ``<NAME>_FILE``
    that points into a mounted Secret, ``<NAME>`` with the Secret's value (how the app reads secrets)."""
    settings = env_of(objects, namespace, container)
    volumes = {v["name"]: (v.get("secret") or {}).get("secretName")
               for v in template["spec"].get("volumes") or []}
    mounts = {m["mountPath"].rstrip("/"): volumes.get(m["name"]) for m in container.get("volumeMounts") or []}
    for name, path in list(settings.items()):
        directory, _, key = path.rpartition("/")
        if not name.endswith("_FILE") or not mounts.get(directory):
            continue
        for secret in objects:
            meta = secret["metadata"]
            if secret["kind"] == "Secret" and meta.get("name") == mounts[directory] \
                    and meta.get("namespace") == namespace and key in (secret.get("stringData") or {}):
                settings[name.removesuffix("_FILE")] = secret["stringData"][key]
    return settings


def _ref(obj: Obj) -> str:
    namespace = obj["metadata"].get("namespace")
    return f"{obj['kind']} {namespace + '/' if namespace else ''}{obj['metadata']['name']}"


def _labels(obj: Obj) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def _container_port(template: Obj, port: Any) -> bool:
    ports = [p for c in containers(template, init=False) for p in c.get("ports") or []]
    return any(port in (p.get("name"), p["containerPort"]) for p in ports)


# --- gates -------------------------------------------------------------------------------------

def schema_problems(objects: Sequence[Obj], versions: Sequence[str] = K8S_VERSIONS) -> list[str]:
    """Validate every object strictly: built-in kinds per Kubernetes version, custom kinds by infra.crds."""
    problems = []
    for obj in objects:
        custom = SCHEMAS.get((obj["apiVersion"], obj["kind"])) or vendored_schemas().get(
            (obj["apiVersion"], obj["kind"]))
        if custom is not None:
            for error in jsonschema.Draft202012Validator(custom).iter_errors(obj):
                problems.append(f"{_ref(obj)}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
            if obj["kind"] == "Rollout":  # the CRD leaves the pod template open: check it as a Deployment's
                problems += schema_problems([pods_as_deployment(obj)], versions)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{_ref(obj)}: no schema for {obj['apiVersion']} {obj['kind']} in {version} "
                                "and none in infra.crds")
            except kubernetes_validate.ValidationError as exc:  # a jsonschema error: the first one found
                path = ".".join(map(str, exc.absolute_path))
                problems.append(f"{_ref(obj)}: Kubernetes {version}: {path}: {exc.message}")
    return problems


def pods_as_deployment(rollout: Obj) -> Obj:
    """A Rollout's selector and pod template in a Deployment (its annotations too), for Kubernetes' own
    pod schema and for checkov, which reads the pod specs of built-in kinds only."""
    spec = {k: rollout["spec"][k] for k in ("selector", "template") if k in rollout["spec"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {**rollout["metadata"], "name": rollout["metadata"]["name"]}, "spec": spec}


def selector_problems(objects: Sequence[Obj]) -> list[str]:
    """Services, PDBs, NetworkPolicies and ServiceMonitors select something; HPAs target a Deployment."""
    problems = []
    for w, template in workloads(objects):
        if w["kind"] != "Job" and not matches(w["spec"]["selector"], _labels(template)):
            problems.append(f"{_ref(w)}: its selector does not match its own pod template")
    for obj in objects:
        kind, ns, spec = obj["kind"], obj["metadata"].get("namespace"), obj.get("spec") or {}
        if _gateway_pods(objects, obj) or _operator_pods(objects, obj):
            continue
        if kind == "Service" and spec.get("selector") and not pods_selected(objects, ns, spec["selector"]):
            problems.append(f"{_ref(obj)}: selector {spec['selector']} matches no pods")
        if kind in ("PodDisruptionBudget", "NetworkPolicy"):
            key = "selector" if kind == "PodDisruptionBudget" else "podSelector"
            # Pods a Helm release creates are in no declared object: such a policy names the
            # release (RELEASE_PODS), and its rendering (make helm-render) holds the pods.
            release = (obj["metadata"].get("annotations") or {}).get(RELEASE_PODS)
            of_release = bool(release) and release == (spec[key] or {}).get("matchLabels", {}).get(
                "app.kubernetes.io/instance")
            if not of_release and not pods_selected(objects, ns, spec[key] or {"matchLabels": {}}):
                problems.append(f"{_ref(obj)}: {key} matches no pods")
        if kind == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            if not any(o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]
                       and o["metadata"].get("namespace") == ns for o in objects):
                problems.append(f"{_ref(obj)}: targets {target['kind']} {target['name']}, "
                                "which is not declared")
        if kind == "ServiceMonitor":
            namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [ns]
            services = [s for s in objects if s["kind"] == "Service"
                        and s["metadata"].get("namespace") in namespaces
                        and matches(spec["selector"], _labels(s))]
            if not services:
                problems.append(f"{_ref(obj)}: selects no Service in {namespaces}")
            for endpoint in spec["endpoints"]:
                if services and not any(endpoint.get("port") == p.get("name")
                                        for s in services for p in s["spec"]["ports"]):
                    problems.append(f"{_ref(obj)}: no selected Service has a port named "
                                    f"{endpoint.get('port')}")
    return problems


def _gateway_pods(objects: Sequence[Obj], obj: Obj) -> bool:
    """Whether ``obj`` selects a declared Gateway's Envoy pods (GATEWAY_PODS), which Envoy Gateway makes."""
    owner = (obj["metadata"].get("annotations") or {}).get(GATEWAY_PODS)
    if obj["kind"] not in ("Service", "NetworkPolicy") or not owner or "/" not in owner:
        return False
    namespace, name = owner.split("/", 1)
    spec = obj.get("spec") or {}
    chosen = spec.get("selector") if obj["kind"] == "Service" else (spec.get("podSelector") or {}).get(
        "matchLabels")
    declared = any(o["kind"] == "Gateway" and o["metadata"]["name"] == name
                   and o["metadata"].get("namespace") == namespace for o in objects)
    return declared and chosen == proxy_labels(name, namespace)


# The labels an operator gives the pods of a custom resource it runs, by the resource's kind.
OPERATOR_POD_LABELS: dict[str, Callable[[str], dict[str, str]]] = {RABBITMQ_CLUSTER: broker_pod_labels}


def _operator_pods(objects: Sequence[Obj], obj: Obj) -> bool:
    """Whether ``obj`` (a Service, PodDisruptionBudget or NetworkPolicy) selects exactly the pods an
    operator makes for a custom resource declared beside it, which its OPERATOR_PODS names."""
    owner = (obj["metadata"].get("annotations") or {}).get(OPERATOR_PODS) or ""
    kind, _, name = owner.partition("/")
    labels_of = OPERATOR_POD_LABELS.get(kind)
    if labels_of is None or obj["kind"] not in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        return False
    spec = obj.get("spec") or {}
    key = {"Service": "selector", "PodDisruptionBudget": "selector"}.get(obj["kind"], "podSelector")
    chosen = spec.get(key) if obj["kind"] == "Service" else (spec.get(key) or {}).get("matchLabels")
    declared = any(o["kind"] == kind and o["metadata"]["name"] == name
                   and o["metadata"].get("namespace") == obj["metadata"].get("namespace") for o in objects)
    return declared and chosen == labels_of(name)


def scaler_problems(objects: Sequence[Obj]) -> list[str]:
    """KEDA's ScaledObjects target a declared workload that no HPA scales too and that declares no
    replicas; their TriggerAuthentications exist and read keys of declared Secrets."""
    problems = []
    declared = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}
    hpa_targets = {(o["metadata"]["namespace"], o["spec"]["scaleTargetRef"]["kind"],
                    o["spec"]["scaleTargetRef"]["name"])
                   for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    for obj in (o for o in objects if o["kind"] == "ScaledObject"):
        ns, spec = obj["metadata"]["namespace"], obj["spec"]
        target = spec["scaleTargetRef"]
        kind = target.get("kind", "Deployment")
        workload = next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == target["name"]
                         and o["metadata"].get("namespace") == ns), None)
        if workload is None:
            problems.append(f"{_ref(obj)}: targets {kind} {target['name']}, which is not declared")
        elif "replicas" in workload["spec"]:
            problems.append(f"{_ref(workload)}: sets spec.replicas although a ScaledObject scales it")
        if (ns, kind, target["name"]) in hpa_targets:  # KEDA's webhook refuses it (kedacore/keda#3083)
            problems.append(f"{_ref(obj)}: {kind} {target['name']} already has an HPA of its own")
        for trigger in spec.get("triggers") or []:
            ref = trigger.get("authenticationRef")
            if ref and (ref.get("kind", "TriggerAuthentication"), ns, ref["name"]) not in declared:
                problems.append(f"{_ref(obj)}: authenticationRef {ref['name']} is not a declared "
                                "TriggerAuthentication")
    for auth in (o for o in objects if o["kind"] == "TriggerAuthentication"):
        ns = auth["metadata"]["namespace"]
        for ref in auth["spec"].get("secretTargetRef") or []:
            secret = next((o for o in objects if o["kind"] == "Secret"
                           and o["metadata"]["name"] == ref["name"] and o["metadata"].get("namespace") == ns),
                          None)
            keys = set((secret or {}).get("stringData") or {}) | set((secret or {}).get("data") or {})
            if ref["key"] not in keys:
                problems.append(f"{_ref(auth)}: {ref['parameter']} reads key {ref['key']} of Secret "
                                f"{ns}/{ref['name']}, which {'lacks it' if secret else 'is not declared'}")
    return problems


def port_problems(objects: Sequence[Obj]) -> list[str]:
    """Service target ports and probe ports are ports the containers declare."""
    problems = []
    for svc in (o for o in objects if o["kind"] == "Service" and (o.get("spec") or {}).get("selector")):
        selected = pods_selected(objects, svc["metadata"]["namespace"], svc["spec"]["selector"])
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if selected and not all(_container_port(t, target) for _, t in selected):
                problems.append(f"{_ref(svc)}: targetPort {target} is not a container port "
                                "of the selected pods")
    for w, template in workloads(objects):
        for c in containers(template, init=False):
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind) or {}
                action = probe.get("httpGet") or probe.get("tcpSocket")
                if action and not _container_port(template, action["port"]):
                    problems.append(f"{_ref(w)}: {c['name']} {kind} port {action['port']} "
                                    "is not a container port")
    return problems


def exposure_problems(objects: Sequence[Obj]) -> list[str]:
    """No Service reachable from outside the cluster carries a container port named ``metrics``."""
    problems = []
    for svc in (o for o in objects if o["kind"] == "Service"
                and (o.get("spec") or {}).get("type") in ("LoadBalancer", "NodePort")):
        selected = pods_selected(objects, svc["metadata"]["namespace"], svc["spec"].get("selector") or {})
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            metrics_ports = {p["containerPort"] for _, t in selected for c in containers(t, init=False)
                             for p in c.get("ports") or [] if p.get("name") == "metrics"}
            if target == "metrics" or target in metrics_ports:
                problems.append(f"{_ref(svc)}: exposes the metrics port outside the cluster")
    return problems


def resource_problems(objects: Sequence[Obj]) -> list[str]:
    """Every container has CPU and memory requests and limits (the HPA needs CPU requests)."""
    problems = []
    for w, template in workloads(objects):
        for c in containers(template):
            resources = c.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(section) or {}):
                        problems.append(f"{_ref(w)}: container {c['name']} has no {resource} {section[:-1]}")
    return problems


def replicas_problems(objects: Sequence[Obj]) -> list[str]:
    """A Deployment an HPA manages declares no replicas (it would fight the HPA on every apply)."""
    targets = {(o["metadata"]["namespace"], o["spec"]["scaleTargetRef"]["name"])
               for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    return [f"{_ref(o)}: sets spec.replicas although an HPA scales it" for o in objects
            if o["kind"] in SCALED_KINDS and (o["metadata"]["namespace"], o["metadata"]["name"]) in targets
            and "replicas" in o["spec"]]


def _admits(rules: Sequence[Obj], port: int, protocol: str, namespace: str | None, peer_key: str) -> bool:
    """Return whether any rule admits ``port``/``protocol`` to or from ``namespace`` (None: anywhere)."""
    for rule in rules:
        ports = rule.get("ports")
        if ports and not any(p.get("port") in (port, None) and p.get("protocol", "TCP") == protocol
                             for p in ports):
            continue
        peers = rule.get(peer_key)
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                return namespace is None
            ns_selector = peer.get("namespaceSelector")
            if ns_selector is not None and (
                    namespace is None or matches(ns_selector, {"kubernetes.io/metadata.name": namespace})):
                return True
    return False


def _policies_for(objects: Sequence[Obj], namespace: str, labels: dict[str, str],
                  kind: str) -> list[Obj] | None:
    """Return the ``kind`` rules of the policies selecting these pods (None: nothing restricts them)."""
    policies = [p for p in objects if p["kind"] == "NetworkPolicy" and p["metadata"]["namespace"] == namespace
                and kind.capitalize() in p["spec"].get("policyTypes", [])
                and matches(p["spec"]["podSelector"], labels)]
    return None if not policies else [rule for p in policies for rule in p["spec"].get(kind) or []]


# URL settings that name no server the pod connects to: the service's own public address, which
# it only writes into the links of its responses.
NOT_PEERS = {"PUBLIC_URL"}


def network_problems(objects: Sequence[Obj]) -> list[str]:
    """Policies admit DNS, every server a pod's settings name by URL (the OTLP collector, the
    database, the rate-limit store), and Prometheus's scrapes of monitored pods."""
    problems = []
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        if "Egress" in policy["spec"].get("policyTypes", []):
            for protocol in ("UDP", "TCP"):
                if not _admits(policy["spec"].get("egress") or [], 53, protocol, "kube-system", "to"):
                    problems.append(f"{_ref(policy)}: egress blocks DNS (53/{protocol} to kube-system)")
    for w, template in workloads(objects):
        ns, labels = w["metadata"]["namespace"], _labels(template)
        egress = _policies_for(objects, ns, labels, "egress")
        for c in containers(template, init=False):
            for name, value in settings_of(objects, ns, template, c).items():
                url = urlsplit(value) if "://" in value else None
                if url is None or url.scheme not in DEFAULT_PORTS or not url.hostname or name in NOT_PEERS:
                    continue
                otlp = name == "OTEL_EXPORTER_OTLP_ENDPOINT"
                port = url.port or (4318 if otlp else DEFAULT_PORTS[url.scheme])
                what = f"{'the OTLP collector' if otlp else name} ({url.hostname}:{port})"
                spaces = _namespaces(url.hostname, ns)
                # A policy sees the pods' ports: a Service's port is its target's (kube-proxy
                # translates before the policy applies).
                pod_ports = _target_ports(objects, url.hostname, port, spaces[0]) or {port}
                if egress is not None and not any(_admits(egress, number, "TCP", space, "to")
                                                  for space in spaces for number in pod_ports):
                    problems.append(f"{_ref(w)}: egress to {what} is blocked")
                problems += [f"{_ref(target)}: ingress refuses {_ref(w)}'s {what}"
                             for target in _refusing(objects, url.hostname, port, spaces[0], ns)]
    return problems + _scrape_problems(objects)


def _refusing(objects: Sequence[Obj], hostname: str, port: int, namespace: str | None,
              source: str) -> list[Obj]:
    """Return the workloads behind the in-cluster Service ``hostname`` whose ingress policies
    refuse ``port`` from the ``source`` namespace."""
    name = hostname.split(".")[0]
    refusing = []
    for svc in objects:
        if svc["kind"] != "Service" or svc["metadata"]["name"] != name or \
                svc["metadata"].get("namespace") != namespace or not svc["spec"].get("selector"):
            continue
        for service_port in (p for p in svc["spec"]["ports"] if p["port"] == port):
            target = service_port.get("targetPort", port)
            for w, template in pods_selected(objects, namespace, svc["spec"]["selector"]):
                number = next((cp["containerPort"] for c in containers(template, init=False)
                               for cp in c.get("ports") or []
                               if target in (cp.get("name"), cp["containerPort"])), None)
                ingress = _policies_for(objects, namespace, _labels(template), "ingress")
                if number and ingress is not None and not _admits(ingress, number, "TCP", source, "from"):
                    refusing.append(w)
    return refusing


def _target_ports(objects: Sequence[Obj], hostname: str, port: int, namespace: str | None) -> set[int]:
    """Return the container ports behind port ``port`` of the in-cluster Service ``hostname``."""
    found: set[int] = set()
    for svc in objects:
        if svc["kind"] != "Service" or svc["metadata"]["name"] != hostname.split(".")[0] or \
                svc["metadata"].get("namespace") != namespace or not svc["spec"].get("selector"):
            continue
        for service_port in (p for p in svc["spec"]["ports"] if p["port"] == port):
            target = service_port.get("targetPort", port)
            found |= {cp["containerPort"]
                      for _, template in pods_selected(objects, namespace, svc["spec"]["selector"])
                      for c in containers(template, init=False) for cp in c.get("ports") or []
                      if target in (cp.get("name"), cp["containerPort"])}
    return found


def _namespaces(hostname: str, own: str) -> list[str | None]:
    """Where a host may live: a Service is <service>[.<namespace>[.svc...]]; a longer name is
    outside the cluster (None); two labels may be either."""
    labels = hostname.split(".")
    if len(labels) == 1:
        return [own]
    if len(labels) == 2:
        return [labels[1], None]
    return [labels[1]] if labels[2] == "svc" else [None]


def _scrape_problems(objects: Sequence[Obj]) -> list[str]:
    problems = []
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        spec, source = monitor["spec"], monitor["metadata"]["namespace"]
        port_names = {e["port"] for e in spec["endpoints"]}
        for svc in objects:
            if svc["kind"] != "Service" or svc["metadata"]["namespace"] not in (
                    spec.get("namespaceSelector", {}).get("matchNames") or [source]):
                continue
            if not matches(spec["selector"], _labels(svc)) or not svc["spec"].get("selector"):
                continue
            for w, template in pods_selected(objects, svc["metadata"]["namespace"], svc["spec"]["selector"]):
                ingress = _policies_for(objects, w["metadata"]["namespace"], _labels(template), "ingress")
                for port in (p for p in svc["spec"]["ports"] if p["name"] in port_names):
                    target = port.get("targetPort", port["port"])
                    number = next((cp["containerPort"] for c in containers(template, init=False)
                                   for cp in c.get("ports") or []
                                   if target in (cp.get("name"), cp["containerPort"])), None)
                    if ingress is not None and number and not _admits(ingress, number, "TCP", source, "from"):
                        problems.append(f"{_ref(w)}: ingress blocks Prometheus scrapes "
                                        f"from {source} on {number}")
    return problems


def shutdown_problems(objects: Sequence[Obj]) -> list[str]:
    """preStop pause + gunicorn's graceful timeout end before the grace period (else SIGKILL mid-request)."""
    problems = []
    for w, template in workloads(objects):
        grace = template["spec"].get("terminationGracePeriodSeconds", 30)
        for c in containers(template, init=False):
            pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
            graceful = int(env_of(objects, w["metadata"]["namespace"], c).get("GUNICORN_GRACEFUL_TIMEOUT", 0))
            if (pre_stop or graceful) and pre_stop + graceful >= grace:
                problems.append(f"{_ref(w)}: preStop {pre_stop}s + graceful timeout {graceful}s "
                                f">= terminationGracePeriodSeconds {grace}s")
    return problems


def security_problems(objects: Sequence[Obj]) -> list[str]:
    """Pods in namespaces labelled restricted meet that Pod Security Standard, with a read-only root too."""
    restricted = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"
                  and _labels(o).get("pod-security.kubernetes.io/enforce") == "restricted"}
    problems = []
    for w, template in workloads(objects):
        if w["metadata"]["namespace"] not in restricted:
            continue
        pod = template["spec"].get("securityContext") or {}
        for c in containers(template):
            ctx = {**pod, **(c.get("securityContext") or {})}
            wrong = [name for name, ok in (
                ("runAsNonRoot", ctx.get("runAsNonRoot") is True),
                ("seccompProfile RuntimeDefault",
                 (ctx.get("seccompProfile") or {}).get("type") == "RuntimeDefault"),
                ("allowPrivilegeEscalation false", ctx.get("allowPrivilegeEscalation") is False),
                ("capabilities drop ALL", (ctx.get("capabilities") or {}).get("drop") == ["ALL"]),
                ("readOnlyRootFilesystem", ctx.get("readOnlyRootFilesystem") is True),
                ("privileged false", not ctx.get("privileged")),
            ) if not ok]
            if wrong:
                problems.append(f"{_ref(w)}: container {c['name']} lacks {', '.join(wrong)}")
        if template["spec"].get("hostNetwork") or template["spec"].get("hostPID") or any(
                "hostPath" in v for v in template["spec"].get("volumes") or []):
            problems.append(f"{_ref(w)}: uses the host's network, PIDs or filesystem")
        if template["spec"].get("automountServiceAccountToken") is not False:
            problems.append(f"{_ref(w)}: mounts a service account token it does not need")
    return problems


def writable_dir_problems(objects: Sequence[Obj]) -> list[str]:
    """Dirs the app writes are emptyDir mounts; the multiprocess dir is set exactly when workers > 1."""
    problems = []
    for w, template in workloads(objects):
        empty_dirs = {v["name"] for v in template["spec"].get("volumes") or [] if "emptyDir" in v}
        for c in containers(template, init=False):
            env = env_of(objects, w["metadata"]["namespace"], c)
            if "GUNICORN_WORKERS" not in env:
                continue
            mounts = {m["mountPath"] for m in c.get("volumeMounts") or [] if m["name"] in empty_dirs}
            for var in ("GUNICORN_WORKER_TMP_DIR", "PROMETHEUS_MULTIPROC_DIR"):
                if var in env and env[var] not in mounts:
                    problems.append(f"{_ref(w)}: {var}={env[var]} is not a writable emptyDir mount")
            if (int(env["GUNICORN_WORKERS"]) > 1) != ("PROMETHEUS_MULTIPROC_DIR" in env):
                problems.append(f"{_ref(w)}: PROMETHEUS_MULTIPROC_DIR must be set exactly when "
                                f"GUNICORN_WORKERS > 1 (workers={env['GUNICORN_WORKERS']})")
    return problems


def dashboard_problems(objects: Sequence[Obj], dashboard_files: Sequence[Path]) -> list[str]:
    """Every dashboard file is exactly one ConfigMap labelled for Grafana's sidecar, and nothing else is."""
    maps = [o for o in objects if o["kind"] == "ConfigMap"
            and (o["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    problems = []
    for path in dashboard_files:
        carrying = [m for m in maps if path.name in (m.get("data") or {})
                    and json.loads(m["data"][path.name]) == json.loads(path.read_text())]
        if len(carrying) != 1:
            problems.append(f"dashboard {path.name}: {len(carrying)} ConfigMaps carry it, expected 1")
    names = {p.name for p in dashboard_files}
    problems += [f"{_ref(m)}: labelled as a dashboard but carries no dashboard file" for m in maps
                 if not set(m.get("data") or {}) <= names]
    return problems


def rule_problems(objects: Sequence[Obj], rule_files: Sequence[Path], release: str) -> list[str]:
    """The PrometheusRules hold exactly the groups of the rule files promtool tests, labelled to be found."""
    rules = [o for o in objects if o["kind"] == "PrometheusRule"]
    problems = [f"{_ref(r)}: lacks the label release={release}, so Prometheus ignores it" for r in rules
                if (r["metadata"].get("labels") or {}).get("release") != release]
    declared = [g for r in rules for g in r["spec"]["groups"]]
    expected = [g for path in rule_files
                for g in (yaml.safe_load(path.read_text()) or {}).get("groups") or []]
    if declared != expected:
        problems.append(f"PrometheusRule groups {[g.get('name') for g in declared]} differ from "
                        f"the rule files' "
                        f"{[g.get('name') for g in expected]}")
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    problems += [f"{_ref(m)}: lacks the label release={release}, so Prometheus ignores it" for m in monitors
                 if (m["metadata"].get("labels") or {}).get("release") != release]
    return problems


def canary_problems(objects: Sequence[Obj]) -> list[str]:
    """A Rollout's analysis names an AnalysisTemplate of its namespace and gives it every argument;
    the template's queries select the revision label, which a ServiceMonitor copies from the
    Rollout's pods; the pods spread per revision by that label."""
    problems = []
    for rollout in (o for o in objects if o["kind"] == "Rollout"):
        ns, canary = rollout["metadata"]["namespace"], rollout["spec"]["strategy"].get("canary") or {}
        analysis = canary.get("analysis") or {}
        if not analysis:
            problems.append(f"{_ref(rollout)}: its canary has no analysis, so nothing judges it")
        given = {a["name"] for a in analysis.get("args") or []}
        for ref in analysis.get("templates") or []:
            template = next((o for o in objects if o["kind"] == "AnalysisTemplate"
                             and o["metadata"]["namespace"] == ns
                             and o["metadata"]["name"] == ref.get("templateName")), None)
            if template is None:
                problems.append(f"{_ref(rollout)}: AnalysisTemplate {ref.get('templateName')} "
                                "is not declared")
                continue
            wanted = {a["name"] for a in template["spec"].get("args") or [] if "value" not in a}
            if wanted - given:
                problems.append(f"{_ref(rollout)}: gives {_ref(template)} no {sorted(wanted - given)}")
            for metric in template["spec"]["metrics"]:
                query = ((metric.get("provider") or {}).get("prometheus") or {}).get("query", "")
                if "rollouts_pod_template_hash=" not in query:
                    problems.append(f"{_ref(template)}: metric {metric['name']} does not select the canary's "
                                    "series (rollouts_pod_template_hash)")
        template_labels = _labels(rollout["spec"]["template"])
        copied = [m for m in objects if m["kind"] == "ServiceMonitor"
                  and "rollouts-pod-template-hash" in (m["spec"].get("podTargetLabels") or [])
                  and ns in (m["spec"].get("namespaceSelector", {}).get("matchNames")
                             or [m["metadata"]["namespace"]])
                  and any(matches(m["spec"]["selector"], _labels(s)) and s["metadata"].get("namespace") == ns
                          and matches({"matchLabels": s["spec"].get("selector") or {}}, template_labels)
                          for s in objects if s["kind"] == "Service" and s["spec"].get("selector"))]
        if not copied:
            problems.append(f"{_ref(rollout)}: no ServiceMonitor copies rollouts-pod-template-hash from its "
                            "pods (podTargetLabels), so the analysis finds no canary series")
        for spread in rollout["spec"]["template"]["spec"].get("topologySpreadConstraints") or []:
            if "pod-template-hash" in (spread.get("matchLabelKeys") or []):
                problems.append(f"{_ref(rollout)}: spreads by pod-template-hash, which a Rollout's pods "
                                "lack (rollouts-pod-template-hash)")
    return problems


GATES: dict[str, Callable[[Sequence[Obj]], list[str]]] = {
    "selectors": selector_problems, "ports": port_problems, "resources": resource_problems,
    "replicas": replicas_problems, "network": network_problems, "shutdown": shutdown_problems,
    "security": security_problems, "writable dirs": writable_dir_problems, "exposure": exposure_problems,
    "canary": canary_problems, "scalers": scaler_problems,
}


def run_all(objects: Sequence[Obj], dashboard_files: Sequence[Path], rule_files: Sequence[Path],
            release: str) -> list[str]:
    """Run every gate and return all problems."""
    problems = schema_problems(objects)
    for gate in GATES.values():
        problems += gate(objects)
    problems += dashboard_problems(objects, dashboard_files)
    return problems + rule_problems(objects, rule_files, release)

"""A real deployment on a throwaway kind cluster: load balancer, image, stack, and the checks after.

Usage (make kind-cluster, kind-up, kind-check, kind-mail, kind-canary and kind-diagnostics;
.github/workflows/e2e.yml):
    python -m infra.delivery.e2e cluster --image lookout:e2e [--faulty-image lookout:e2e-faulty]
    python -m infra.delivery.e2e up --image lookout:e2e            # the dev stack, local backend
    python -m infra.delivery.e2e check             # Locust as the bootstrap admin (HPA), Prometheus,
                                                   # Grafana, Loki
    python -m infra.delivery.e2e mail              # a new user's welcome email in Mailpit, its trace
                                                   # in Tempo with both services' spans
    python -m infra.delivery.e2e canary --image lookout:e2e --faulty-image lookout:e2e-faulty
    python -m infra.delivery.e2e diagnostics                       # state of the cluster, for the artifact

The stack is ``dev`` (Pulumi.dev.yaml: the stack meant for local clusters) with OVERRIDES on top,
kept in the local backend (PULUMI_BACKEND_URL=file://..., PULUMI_CONFIG_PASSPHRASE). The load
balancer comes from cloud-provider-kind, which watches Services of type LoadBalancer and starts
a proxy container on the kind network for each; the runner reaches it at the Service's address.
metrics-server gives the HPA its CPU readings (kind has none), and the check shows a scale-up
under the Locust run. kubectl is the one in the kind node image, pinned by digest with the node.
The canary step releases a deliberately failing image (.ci/faulty) and passes only
when the controller aborted it and the stack is back on the good image. Every request goes through
the gateway over HTTPS: the dev stack's name (``edgeHostname``) is made to resolve to the load
balancer's address on this runner (/etc/hosts) and its own CA (the Secret lookout-edge-ca) is
trusted (REQUESTS_CA_BUNDLE, also handed to later steps through GITHUB_ENV); ``check`` also checks
TLS 1.1 refused, HSTS, and the plain-HTTP redirect.

Environment variables read: KIND_CLUSTER_NAME (default lookout), GIT_COMMIT, KUBECTL (default the
node image's, copied by ``cluster``), the Pulumi CLI's, E2E_USERS / E2E_RUN_TIME for the Locust
run (default 10 users for 90s), GITHUB_PATH.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from infra.delivery import cluster_checks, welcome_mail
from infra.delivery.pulumi_cli import PulumiError, PulumiStack
from infra.delivery.rollout import CanaryWatch, Rollout, admin_credentials, bearer, check_image, report
from infra.stack_config import parse_quantity
from loadtests.harness import free_port
from loadtests.harness.gunicorn import new_signing_key

STACK = "dev"
# On top of Pulumi.dev.yaml: a load balancer (cloud-provider-kind), and canary steps short enough
# for a CI job (the analysis still needs two failed 30 s measurements to abort).
OVERRIDES = {"serviceType": "LoadBalancer", "canaryPause": "1m", "canaryAnalysisInterval": "30s"}
# Pinned by digest: a tag can be re-pushed. The digests are public pins of these releases seen in
# other projects; a pull that fails verification means the value needs correcting from the registry.
CLOUD_PROVIDER_KIND = ("registry.k8s.io/cloud-provider-kind/cloud-controller-manager:v0.11.1"
                       "@sha256:40e18b9cd9c798cce40d39ff5c099a4f16a36c268d8e1dda469d73955a35e403")
METRICS_SERVER_VERSION = "v0.8.0"
METRICS_SERVER_MANIFEST = ("https://github.com/kubernetes-sigs/metrics-server/releases/download/"
                           f"{METRICS_SERVER_VERSION}/components.yaml")
METRICS_SERVER_IMAGE = (f"registry.k8s.io/metrics-server/metrics-server:{METRICS_SERVER_VERSION}"
                        "@sha256:89258156d0e9af60403eafd44da9676fd66f600c7934d468ccc17e42b199aee2")
REPORTS = Path("reports") / "e2e"
NODE_KUBECTL = REPORTS / "bin" / "kubectl"
MONITORING = "monitoring"
SERVER = "app.kubernetes.io/name=lookout,app.kubernetes.io/component=server"
EDGE_CA = REPORTS / "edge-ca.crt"  # the dev stack's own CA, which signs the gateway's certificate
EDGE_CA_SECRET = ("lookout", "lookout-edge-ca")


def kubectl() -> str:
    """The kubectl to run: KUBECTL, else the node image's (copied by ``cluster``), else PATH's."""
    return os.environ.get("KUBECTL") or (str(NODE_KUBECTL.resolve()) if NODE_KUBECTL.exists() else "kubectl")


def sh(*command: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command, echoing it (never its stdin), and return stdout. ``kubectl`` is kubectl()."""
    command = (kubectl(), *command[1:]) if command[0] == "kubectl" else command
    print("+ " + " ".join(command), flush=True)
    done = subprocess.run(command, input=stdin, text=True, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def cluster_name() -> str:
    return os.environ.get("KIND_CLUSTER_NAME", "lookout")


def cluster(image: str, faulty: str | None = None) -> None:
    """kubectl from the node image, a load balancer and metrics-server for kind, the images on its nodes."""
    NODE_KUBECTL.parent.mkdir(parents=True, exist_ok=True)
    sh("docker", "cp", f"{cluster_name()}-control-plane:/usr/bin/kubectl", str(NODE_KUBECTL))
    if path := os.environ.get("GITHUB_PATH"):
        with Path(path).open("a") as out:
            out.write(f"{NODE_KUBECTL.parent.resolve()}\n")
    sh("kubectl", "version", "--client")
    # cloud-provider-kind skips nodes carrying this label, which kind puts on control planes.
    sh("kubectl", "label", "nodes", "--all", "node.kubernetes.io/exclude-from-external-load-balancers-")
    running = sh("docker", "ps", "--filter", "name=^cloud-provider-kind$", "--format", "{{.Names}}").strip()
    if not running:
        sh("docker", "run", "--detach", "--name", "cloud-provider-kind", "--network", "kind",
           "--volume", "/var/run/docker.sock:/var/run/docker.sock", CLOUD_PROVIDER_KIND)
    metrics_server()
    for name in (image, faulty):
        if name:
            sh("kind", "load", "docker-image", name, "--name", cluster_name())


def metrics_server() -> None:
    """The release's manifest, its image by digest, and the kubelets' self-signed certificates accepted."""
    sh("kubectl", "apply", "-f", METRICS_SERVER_MANIFEST)
    sh("kubectl", "-n", "kube-system", "set", "image", "deployment/metrics-server",
       f"metrics-server={METRICS_SERVER_IMAGE}")
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/args/-",
              "value": "--kubelet-insecure-tls"}]
    sh("kubectl", "-n", "kube-system", "patch", "deployment/metrics-server", "--type=json",
       "-p", json.dumps(patch))
    sh("kubectl", "-n", "kube-system", "rollout", "status", "deployment/metrics-server", "--timeout=180s")


def stack() -> PulumiStack:
    return PulumiStack(STACK, env={**os.environ, "KUBECTL": kubectl()})


def trust_edge(outputs: Mapping[str, Any], wait: float = 300.0) -> str | None:
    """Make the stack's https:// name reach its load balancer from here and trust the stack's CA;
    return the URL once it answers /readyz (None for a stack without the edge's outputs)."""
    url, address = str(outputs.get("serviceUrl") or ""), str(outputs.get("loadBalancerAddress") or "")
    host = urlsplit(url).hostname
    if not url.startswith("https://") or not host or not address:
        return None
    namespace, name = EDGE_CA_SECRET
    deadline = time.monotonic() + wait
    while not (ca := sh("kubectl", "-n", namespace, "get", "secret", name, "-o",
                        "jsonpath={.data.ca\\.crt}", check=False).strip()):
        if time.monotonic() > deadline:
            raise SystemExit(f"e2e: the CA Secret {namespace}/{name} did not appear within {wait:.0f}s")
        time.sleep(3)
    EDGE_CA.parent.mkdir(parents=True, exist_ok=True)
    EDGE_CA.write_bytes(base64.b64decode(ca))
    line = f"{address} {host}"
    if line not in Path("/etc/hosts").read_text().splitlines():
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "tee", "-a", "/etc/hosts"], input=f"{line}\n", text=True, check=True,
                       stdout=subprocess.DEVNULL)
    os.environ["REQUESTS_CA_BUNDLE"] = str(EDGE_CA.resolve())
    if path := os.environ.get("GITHUB_ENV"):  # the later steps (check, canary) trust it too
        with Path(path).open("a") as out:
            out.write(f"REQUESTS_CA_BUNDLE={EDGE_CA.resolve()}\n")
    while True:  # cert-manager issues the certificate, Envoy loads it
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return url
        if time.monotonic() > deadline:
            raise SystemExit(f"e2e: {url}/readyz did not answer 200 over TLS within {wait:.0f}s")
        time.sleep(3)


def edge_problems(url: str) -> list[str]:
    """HTTPS with the stack's CA, HSTS, TLS below 1.2 refused, and plain HTTP redirected to https."""
    problems = []
    answer = requests.get(f"{url}/readyz", timeout=10)
    if answer.status_code != 200 or not answer.headers.get("Strict-Transport-Security"):
        hsts = answer.headers.get("Strict-Transport-Security")
        problems.append(f"{url}/readyz: {answer.status_code}, HSTS {hsts}")
    host = urlsplit(url).hostname or ""
    plain = requests.get(f"http://{host}/api/v1/users?page=2", timeout=10, allow_redirects=False)
    if plain.status_code not in (301, 308) or plain.headers.get("Location") != f"{url}/api/v1/users?page=2":
        problems.append(f"http://{host}/api/v1/users?page=2: {plain.status_code} to "
                        f"{plain.headers.get('Location')}, not a permanent redirect to https")
    old = ssl.create_default_context(cafile=str(EDGE_CA))
    with warnings.catch_warnings():  # offering the deprecated versions is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version, old.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that a refusal is the server's, not this client's
    try:
        with socket.create_connection((host, 443), timeout=10) as raw, \
                old.wrap_socket(raw, server_hostname=host):
            problems.append(f"{host}:443 accepted TLS 1.1")
    except (ssl.SSLError, OSError):
        pass
    return problems


def up(image: str) -> int:
    """Deploy the dev stack with ``image`` and smoke test it through the gateway, over HTTPS."""
    dev = stack()
    dev.select(create=True)
    for key, value in OVERRIDES.items():
        dev.set_config(key, value)
    keys = {"secretKey": secrets.token_hex(32), "jwtPrivateKey": new_signing_key()}
    if not dev.config("bootstrapAdminPassword"):  # the migration Job's first admin; `check` logs in as it
        keys["bootstrapAdminPassword"] = secrets.token_urlsafe(24)
    rollout = Rollout(dev)
    smoker = rollout.smoker

    def through_the_edge(url: str, commit: str | None) -> Any:
        return smoker(trust_edge(dev.outputs()) or url, commit)

    rollout.smoker = through_the_edge
    outcome = rollout.run(check_image(image, allow_tag=True), os.environ.get("GIT_COMMIT") or None,
                          secrets=keys)
    report(outcome, STACK)
    return 0 if outcome.ok else 1


@contextlib.contextmanager
def port_forward(namespace: str, service: str, port: int, wait: float = 60.0) -> Iterator[str]:
    """Forward a free local port to ``service:port`` and yield its URL; stop the forward after."""
    local = free_port()
    command = [kubectl(), "port-forward", "-n", namespace, f"svc/{service}", f"{local}:{port}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + wait
        while True:
            if process.poll() is not None:
                raise SystemExit(f"port-forward to {service} exited: {process.stderr.read().decode()[-500:]}"
                                 if process.stderr else f"port-forward to {service} exited")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"port-forward to {service} did not open within {wait:.0f}s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{local}"
    finally:
        process.terminate()
        process.wait(10)


class Replicas:
    """Read the HPA's current replicas every few seconds while the load runs; keep the highest. Also
    keep the per-pod request rate it reads through the custom metrics API (prometheus-adapter)."""

    def __init__(self, namespace: str, interval: float = 5.0) -> None:
        self.namespace, self.interval = namespace, interval
        self.seen: list[int] = []
        self.rates: list[float] = []  # the Pods metric's current average value, per reading
        self.rate_metric = ""  # the Pods metric the HPA scales on ("" when only CPU)
        self.minimum = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> None:
        done = subprocess.run([kubectl(), "get", "hpa", "-n", self.namespace, "-o", "json"],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0:
            for hpa in json.loads(done.stdout).get("items", []):
                self.minimum = int(hpa["spec"].get("minReplicas", 1))
                self.seen.append(int(hpa.get("status", {}).get("currentReplicas") or 0))
                pods = [m["pods"] for m in hpa["spec"].get("metrics") or [] if m["type"] == "Pods"]
                self.rate_metric = pods[0]["metric"]["name"] if pods else ""
                for current in hpa.get("status", {}).get("currentMetrics") or []:
                    value = (current.get("pods") or {}).get("current", {}).get("averageValue")
                    if current.get("type") == "Pods" and value:
                        self.rates.append(float(parse_quantity("averageValue", value)))

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.read()

    def __enter__(self) -> Replicas:
        self.read()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)
        self.read()
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / "hpa-replicas.txt").write_text(" ".join(map(str, self.seen)) + "\n")
        (REPORTS / "hpa-request-rate.txt").write_text(" ".join(f"{r:g}" for r in self.rates) + "\n")

    def problem(self) -> str | None:
        if not self.seen or max(self.seen) <= self.minimum:
            return (f"the HPA never scaled up under load (replicas seen: {self.seen or 'none'}; "
                    f"minimum {self.minimum}): is metrics-server serving CPU readings?")
        if self.rate_metric and not any(r > 0 for r in self.rates):
            return (f"the HPA never read {self.rate_metric} under load (values seen: "
                    f"{self.rates or 'none'}): is prometheus-adapter serving custom.metrics.k8s.io "
                    "(kubectl get apiservice v1beta1.custom.metrics.k8s.io); are the pods scraped?")
        return None


def locust_command(url: str) -> list[str]:
    # Busier users, as .ci/run's run: set-up requests (Argon2id hashes at ~140 ms each) stay under
    # 1% of the traffic, so the p99 gate measures the API rather than the hashing.
    return [sys.executable, "-m", "loadtests.run", "--target", url, "--reports", str(REPORTS.resolve()),
            "-u", os.environ.get("E2E_USERS", "10"), "-r", "5", "-t", os.environ.get("E2E_RUN_TIME", "90s"),
            "--think-time-scale", "0.2"]


def traced_request(url: str) -> str:
    """Send one API request through the load balancer with a trace id of our own; return the id.
    Its answer does not matter (401 without a token): the app logs every request with its trace."""
    trace_id = secrets.token_hex(16)
    response = requests.get(f"{url}/api/v1/users/{secrets.randbelow(10**9) + 1}", timeout=10,
                            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    print(f"e2e: GET {response.url} -> {response.status_code}, trace {trace_id}", flush=True)
    return trace_id


def check() -> int:
    """Load-test through the load balancer (the HPA must scale up), then check Prometheus, Grafana,
    and Loki (a request's log line, by its trace id)."""
    outputs = stack().outputs(show_secrets=True)
    url = trust_edge(outputs) or f"http://{outputs['loadBalancerAddress']}"
    namespace = str(outputs.get("namespace", "lookout"))
    # The bootstrap admin the migration Job created: every read of the load test is authenticated.
    credentials = admin_credentials(stack(), {})
    if credentials is None:
        raise SystemExit("the dev stack has no bootstrapAdminPassword: run `up` first")
    env = {**os.environ, "LOOKOUT_LOADTEST_ADMIN_EMAIL": credentials[0],
           "LOOKOUT_LOADTEST_ADMIN_PASSWORD": credentials[1]}
    locust = locust_command(url)
    print("+ " + " ".join(locust), flush=True)
    with Replicas(namespace) as replicas:
        load = subprocess.run(locust, env=env, check=False).returncode
    problems = [p for p in [replicas.problem()] if p]
    if url.startswith("https://"):
        problems += edge_problems(url)
    trace_id = traced_request(url)
    with port_forward(MONITORING, "kps-prometheus", 9090) as prometheus, \
            port_forward(MONITORING, "grafana", 80) as grafana:
        problems += cluster_checks.run(prometheus, grafana, ("admin", str(outputs["grafanaAdminPassword"])),
                                       dependency_jobs=cluster_checks.DEPENDENCY_JOBS)
        problems += cluster_checks.check_datasources(grafana, ("admin", str(outputs["grafanaAdminPassword"])))
    with port_forward(MONITORING, "loki", 3100) as loki:
        problems += cluster_checks.check_logs(loki, trace_id)
    for problem in problems:
        print(f"e2e: FAIL {problem}", flush=True)
    if load != 0:
        print(f"e2e: FAIL the load test through {url} exited {load} (SLO gate, see {REPORTS}/loadtest.html)")
    return 1 if problems or load != 0 else 0


def mail() -> int:
    """Create a user through the load balancer as the bootstrap admin; its welcome email must reach
    Mailpit and its trace Tempo, with spans of both services (infra/delivery/welcome_mail.py)."""
    outputs = stack().outputs(show_secrets=True)
    url = trust_edge(outputs) or f"http://{outputs['loadBalancerAddress']}"
    namespace, catcher = str(outputs.get("namespace", "lookout")), str(outputs.get("mailCatcher") or "")
    if not catcher:
        raise SystemExit("the stack runs no mail catcher (mailServer catcher): nothing to read the email in")
    headers = bearer(url, admin_credentials(stack(), {}))
    if not headers:
        raise SystemExit(f"cannot log in at {url} as the bootstrap admin: run `up` first")
    with port_forward(namespace, catcher, 8025) as mailpit, \
            port_forward(MONITORING, "tempo", 3100) as tempo:
        problems = welcome_mail.check(url, headers, mailpit, tempo)
    for problem in problems:
        print(f"e2e: FAIL {problem}", flush=True)
    return 1 if problems else 0


def canary(image: str, faulty: str, watch: CanaryWatch | None = None) -> int:
    """Release ``faulty`` as a canary over ``image``: it must be aborted and the stack rolled back."""
    dev = stack()
    outcome = Rollout(dev, watch=watch).run(check_image(faulty, allow_tag=True), None)
    report(outcome, STACK)
    problems = []
    if outcome.status != "rolled-back" or "aborted" not in outcome.message:
        problems.append("the faulty image was not aborted and rolled back: "
                        f"{outcome.status}: {outcome.message}")
    running = dev.outputs().get("image")
    if running != image:
        problems.append(f"the stack runs {running}, not the good image {image}")
    for problem in problems:
        print(f"e2e: FAIL {problem}", flush=True)
    if not problems:
        print(f"e2e: the canary of {faulty} was aborted by its SLO analysis and {image} runs again")
    return 1 if problems else 0


DIAGNOSTICS: dict[str, list[str]] = {
    # One command per kind: a missing CRD (the likeliest failure) spoils its own file only.
    "objects.txt": ["kubectl", "get", "all,pvc,networkpolicy,hpa,pdb", "-A", "-o", "wide"],
    "servicemonitors.yaml": ["kubectl", "get", "servicemonitor", "-A", "-o", "yaml"],
    "prometheusrules.txt": ["kubectl", "get", "prometheusrule", "-A"],
    "rollouts.yaml": ["kubectl", "get", "rollout", "-A", "-o", "yaml"],
    "analysisruns.yaml": ["kubectl", "get", "analysisrun", "-A", "-o", "yaml"],
    "database.yaml": ["kubectl", "get", "cluster.postgresql.cnpg.io", "-A", "-o", "yaml"],
    "crds.txt": ["kubectl", "get", "crd"],
    "events.txt": ["kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"],
    "lookout-pods.txt": ["kubectl", "describe", "pods", "-n", "lookout"],
    "lookout-logs.txt": ["kubectl", "logs", "-n", "lookout", "-l", "app.kubernetes.io/name=lookout",
                         "--all-containers", "--prefix", "--tail", "500"],
    "monitoring-pods.txt": ["kubectl", "describe", "pods", "-n", MONITORING],
    "monitoring-logs.txt": ["kubectl", "logs", "-n", MONITORING, "-l",
                            "app.kubernetes.io/part-of=kube-prometheus-stack", "--all-containers", "--prefix",
                            "--tail", "300"],
    "log-pipeline-logs.txt": ["kubectl", "logs", "-n", MONITORING, "-l",
                              "app.kubernetes.io/instance in (loki,otel-logs)", "--all-containers",
                              "--prefix", "--tail", "300"],
    "database-logs.txt": ["kubectl", "logs", "-n", "lookout-db", "-l", "cnpg.io/cluster", "--all-containers",
                          "--prefix", "--tail", "300"],
    "rollouts-controller-logs.txt": ["kubectl", "logs", "-n", "argo-rollouts", "-l",
                                     "app.kubernetes.io/name=argo-rollouts", "--tail", "500"],
    "helm-releases.txt": ["kubectl", "get", "secrets", "-A", "-l", "owner=helm"],
    "metrics.txt": ["kubectl", "top", "pods", "-A"],
    "cloud-provider-kind.txt": ["docker", "logs", "cloud-provider-kind"],
}


def diagnostics(out: Path = REPORTS / "diagnostics") -> int:
    """Write the cluster's, Helm's and Pulumi's state to ``out`` (a failed run's artifact); never fails."""
    out.mkdir(parents=True, exist_ok=True)
    for name, command in DIAGNOSTICS.items():
        command = [kubectl(), *command[1:]] if command[0] == "kubectl" else command
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
            (out / name).write_text(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            (out / name).write_text(f"$ {' '.join(command)}\n{exc}\n")
    dev = stack()
    for name, args in (("pulumi-state.json", ("stack", "export")),
                       ("pulumi-outputs.json", ("stack", "output", "--json"))):
        try:
            (out / name).write_text(dev.run(*args))
        except (PulumiError, OSError) as exc:
            (out / name).write_text(f"{exc}\n")
    print(f"e2e: diagnostics in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("cluster", "up", "canary"):
        step = steps.add_parser(name)
        step.add_argument("--image", required=True, help="image loaded into kind")
        if name != "up":
            step.add_argument("--faulty-image", required=name == "canary",
                              help="the deliberately failing image (.ci/faulty)")
    steps.add_parser("check")
    steps.add_parser("mail")
    steps.add_parser("diagnostics")
    args = parser.parse_args(argv)
    if args.step == "cluster":
        cluster(args.image, args.faulty_image)
        return 0
    if args.step == "up":
        return up(args.image)
    if args.step == "check":
        return check()
    if args.step == "mail":
        return mail()
    if args.step == "canary":
        return canary(args.image, args.faulty_image)
    return diagnostics()


if __name__ == "__main__":
    sys.exit(main())

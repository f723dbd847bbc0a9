"""A real deployment on a throwaway kind cluster: load balancer, image, stack, and the checks after.

Usage (make kind-cluster, kind-up, kind-check and kind-diagnostics; .github/workflows/e2e.yml):
    python -m infra.delivery.e2e cluster --image lookout:e2e      # LB for kind, image into the nodes
    python -m infra.delivery.e2e up --image lookout:e2e            # the dev stack, local backend
    python -m infra.delivery.e2e check                             # LB smoke, Locust, Prometheus, Grafana
    python -m infra.delivery.e2e diagnostics                       # state of the cluster, for the artifact

The stack is ``dev`` (Pulumi.dev.yaml: the stack meant for local clusters) with OVERRIDES on top,
kept in the local backend (PULUMI_BACKEND_URL=file://..., PULUMI_CONFIG_PASSPHRASE). The load
balancer comes from cloud-provider-kind, which watches Services of type LoadBalancer and starts
a proxy container on the kind network for each; the runner reaches it at the Service's address.

Environment variables read: KIND_CLUSTER_NAME (default lookout), GIT_COMMIT, the Pulumi CLI's,
and E2E_USERS / E2E_RUN_TIME for the Locust run (default 10 users for 45s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from infra.delivery import cluster_checks
from infra.delivery.pulumi_cli import PulumiStack
from infra.delivery.rollout import Rollout, check_image, report
from loadtests.harness import free_port

STACK = "dev"
# On top of Pulumi.dev.yaml: the one thing a kind cluster with cloud-provider-kind adds.
OVERRIDES = {"serviceType": "LoadBalancer"}
CLOUD_PROVIDER_KIND = "registry.k8s.io/cloud-provider-kind/cloud-controller-manager:v0.7.0"
REPORTS = Path("reports") / "e2e"
MONITORING = "monitoring"


def sh(*command: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command, echoing it (never its stdin), and return stdout."""
    print("+ " + " ".join(command), flush=True)
    done = subprocess.run(command, input=stdin, text=True, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def cluster_name() -> str:
    return os.environ.get("KIND_CLUSTER_NAME", "lookout")


def cluster(image: str) -> None:
    """Make LoadBalancer Services work on kind and put the image on its nodes."""
    # cloud-provider-kind skips nodes carrying this label, which kind puts on control planes.
    sh("kubectl", "label", "nodes", "--all", "node.kubernetes.io/exclude-from-external-load-balancers-")
    running = sh("docker", "ps", "--filter", "name=^cloud-provider-kind$", "--format", "{{.Names}}").strip()
    if not running:
        sh("docker", "run", "--detach", "--name", "cloud-provider-kind", "--network", "kind",
           "--volume", "/var/run/docker.sock:/var/run/docker.sock", CLOUD_PROVIDER_KIND)
    sh("kind", "load", "docker-image", image, "--name", cluster_name())


def up(image: str) -> int:
    """Deploy the dev stack with ``image`` and smoke test it through the load balancer."""
    stack = PulumiStack(STACK)
    stack.select(create=True)
    for key, value in OVERRIDES.items():
        stack.set_config(key, value)
    keys = {"secretKey": secrets.token_hex(32), "jwtSecretKey": secrets.token_hex(32)}
    outcome = Rollout(stack).run(check_image(image, allow_tag=True), os.environ.get("GIT_COMMIT") or None,
                                 secrets=keys)
    report(outcome, STACK)
    return 0 if outcome.ok else 1


@contextlib.contextmanager
def port_forward(namespace: str, service: str, port: int, wait: float = 60.0) -> Iterator[str]:
    """Forward a free local port to ``service:port`` and yield its URL; stop the forward after."""
    local = free_port()
    command = ["kubectl", "port-forward", "-n", namespace, f"svc/{service}", f"{local}:{port}"]
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


def create_admin(namespace: str, email: str, password: str) -> None:
    """Create an admin with the app's own CLI inside a running pod; the password goes in on stdin."""
    script = ('read -r LOOKOUT_USER_PASSWORD && export LOOKOUT_USER_PASSWORD && '
              f'exec flask --app app users create --email "{email}" --name "E2E admin" --admin')
    sh("kubectl", "exec", "-n", namespace, "-i", "deploy/lookout", "-c", "app", "--", "sh", "-c", script,
       stdin=password + "\n")


def check() -> int:
    """Load-test through the load balancer, then check Prometheus and Grafana."""
    stack = PulumiStack(STACK)
    outputs = stack.outputs(show_secrets=True)
    url = f"http://{outputs['loadBalancerAddress']}"
    email, password = f"e2e-{secrets.token_hex(4)}@e2e.example.com", secrets.token_urlsafe(24)
    create_admin(str(outputs.get("namespace", "lookout")), email, password)
    env = {**os.environ, "LOOKOUT_LOADTEST_ADMIN_EMAIL": email, "LOOKOUT_LOADTEST_ADMIN_PASSWORD": password}
    locust = [sys.executable, "-m", "loadtests.run", "--target", url, "--reports", str(REPORTS),
              "-u", os.environ.get("E2E_USERS", "10"), "-r", "5", "-t", os.environ.get("E2E_RUN_TIME", "45s")]
    print("+ " + " ".join(locust), flush=True)
    load = subprocess.run(locust, env=env, check=False).returncode
    with port_forward(MONITORING, "kps-prometheus", 9090) as prometheus, \
            port_forward(MONITORING, "grafana", 80) as grafana:
        problems = cluster_checks.run(prometheus, grafana, ("admin", str(outputs["grafanaAdminPassword"])))
    for problem in problems:
        print(f"e2e: FAIL {problem}", flush=True)
    if load != 0:
        print(f"e2e: FAIL the load test through {url} exited {load} (SLO gate, see {REPORTS}/loadtest.html)")
    return 1 if problems or load != 0 else 0


def diagnostics(out: Path = REPORTS / "diagnostics") -> int:
    """Write the cluster's state to ``out`` (for the artifact of a failed run); never fails."""
    out.mkdir(parents=True, exist_ok=True)
    commands = {
        "objects.txt": ["kubectl", "get", "all,pvc,networkpolicy,servicemonitor,prometheusrule", "-A",
                        "-o", "wide"],
        "events.txt": ["kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"],
        "lookout-pods.txt": ["kubectl", "describe", "pods", "-n", "lookout"],
        "lookout-logs.txt": ["kubectl", "logs", "-n", "lookout", "-l", "app.kubernetes.io/name=lookout",
                             "--all-containers", "--prefix", "--tail", "500"],
        "cloud-provider-kind.txt": ["docker", "logs", "cloud-provider-kind"],
    }
    for name, command in commands.items():
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        (out / name).write_text(done.stdout + done.stderr)
    print(f"e2e: diagnostics in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    for name in ("cluster", "up"):
        steps.add_parser(name).add_argument("--image", required=True, help="image loaded into kind")
    steps.add_parser("check")
    steps.add_parser("diagnostics")
    args = parser.parse_args(argv)
    if args.step == "cluster":
        cluster(args.image)
        return 0
    if args.step == "up":
        return up(args.image)
    if args.step == "check":
        return check()
    return diagnostics()


if __name__ == "__main__":
    sys.exit(main())

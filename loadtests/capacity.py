"""``make capacity``: step-ramp a local service, find the highest rate within the SLO, size replicas.

Usage:
    python -m loadtests.capacity [--max-users 160] [--steps 8] [--step-seconds 15]
                                 [--target-rps 500] [--reports reports/capacity] [--infra infra]

Starts the service like ``make loadtest`` (loadtests/harness), runs Locust with
``--shape step --capacity-out`` (per-step stats, loadtests/steps.py) while sampling the CPU time
of the gunicorn process tree and of Locust, then writes ``capacity.md``, ``capacity.png`` and
``capacity.json`` (plus Locust's HTML and CSV) and stops the service by PID. The replicas
section reads the stack config from ``infra/`` (loadtests/stack.py). Bounded: steps x
step-seconds plus about 15 s of set-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from importlib.metadata import version
from pathlib import Path

import psutil

from loadtests.harness import ROOT, LocalService
from loadtests.report import Sample, Step, capacity_step, chart, cpu_used, markdown, replicas
from loadtests.run import ADMIN_VARS, locust_command, run_locust
from loadtests.slo import thresholds
from loadtests.stack import read_stacks


def machine_cpu() -> float:
    """Return the CPU seconds every process on the machine has used (all cores, not idle)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def tree_cpu(pid: int) -> float:
    """Return the CPU seconds used so far by a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass  # a child that just exited
    return total


class Sampler(threading.Thread):
    """Sample cumulative CPU seconds of some processes every ``interval`` seconds until stopped."""

    def __init__(self, probes: dict[str, Callable[[], float]], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.probes, self.interval = probes, interval
        self.samples: dict[str, list[Sample]] = {name: [] for name in probes}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.time()
            for name, probe in self.probes.items():
                self.samples[name].append((now, probe()))
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()


def machine() -> dict[str, str]:
    """Describe the machine the numbers belong to."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown") \
        if Path("/proc/cpuinfo").exists() else platform.processor() or "unknown"
    return {
        "CPU": f"{model}, {os.cpu_count()} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "system": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Locust": version("locust"),
        "load average before the run": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "reports" / "capacity")
    parser.add_argument("--infra", type=Path, default=ROOT / "infra", help="Folder with the Pulumi stacks")
    parser.add_argument("--max-users", type=int, default=160, help="Users at the last step")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-seconds", type=int, default=15)
    parser.add_argument("--think-time-scale", type=float, default=0.2,
                        help="Shorter think time: fewer Locust users (and less Locust CPU) per req/s")
    parser.add_argument("--target-rps", type=float, default=500, help="Peak rate the replicas must serve")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    reports: Path = args.reports
    reports.mkdir(parents=True, exist_ok=True)
    steps_file = reports / "steps.json"
    steps_file.unlink(missing_ok=True)
    about = machine()

    service = LocalService(reports / "service")
    try:
        service.start()
        admin = (service.admin_email, service.admin_password)
        env = {**os.environ, **dict(zip(ADMIN_VARS, admin, strict=True))}
        command = locust_command(service.url, reports, "locust", [
            "--shape", "step", "-u", str(args.max_users), "--steps", str(args.steps),
            "-t", f"{args.steps * args.step_seconds}s", "--think-time-scale", str(args.think_time_scale),
            "--capacity-out", str(steps_file)])
        print(f"capacity: service at {service.url}; {args.steps} steps of {args.step_seconds}s "
              f"up to {args.max_users} users", flush=True)
        locust_pid: list[int] = []
        probes: dict[str, Callable[[], float]] = {
            "service": lambda: tree_cpu(service.pid),
            "locust": lambda: tree_cpu(locust_pid[0]) if locust_pid else 0.0,
            "machine": machine_cpu}
        for worker in psutil.Process(service.pid).children():  # workers do not churn: max_requests=0
            probes[f"worker {worker.pid}"] = partial(tree_cpu, worker.pid)
        sampler = Sampler(probes)
        sampler.start()
        code = run_locust(command, env, started=lambda pid: locust_pid.append(pid))
        sampler.stop()
    finally:
        service.stop()
    if not steps_file.exists():
        print(f"capacity: Locust exited with {code} and wrote no steps; see the log above", file=sys.stderr)
        return 1

    measured = json.loads(steps_file.read_text())
    def cores(name: str, step: dict[str, float]) -> float:
        return cpu_used(sampler.samples[name], step["start"], step["end"])

    steps = [Step(index=s["index"], users=s["users"], rps=s["rps"], p50=s["p50"], p95=s["p95"], p99=s["p99"],
                  requests=s["requests"], failures=s["failures"], violations=tuple(s["violations"]),
                  server_cores=cores("service", s), locust_cores=cores("locust", s),
                  other_cores=max(0.0, cores("machine", s) - cores("service", s) - cores("locust", s)),
                  busiest_worker_cores=max((cpu_used(samples, s["start"], s["end"])
                                            for name, samples in sampler.samples.items()
                                            if name.startswith("worker")), default=math.nan))
             for s in measured["steps"]]
    best = capacity_step(steps)
    sizing = [replicas(args.target_rps, best, stack) for stack in read_stacks(args.infra)] if best else []
    setup = {
        "service": f"gunicorn, {service.env['GUNICORN_WORKERS']} workers x {service.env['GUNICORN_THREADS']} "
                   f"threads, production settings (Argon2id as configured), {service.database}",
        "load": f"personas of loadtests/personas.py, step ramp to {args.max_users} users in {args.steps} "
                f"steps of {args.step_seconds}s, think time x{args.think_time_scale}; the first seconds of "
                "each step (arrivals, logins) are not measured",
    }
    limits = thresholds()
    chart(steps, best, limits, reports / "capacity.png")
    (reports / "capacity.md").write_text(markdown(steps, best, sizing, args.target_rps, about, setup, limits,
                                                  "capacity.png"))
    (reports / "capacity.json").write_text(json.dumps({
        "machine": about, "setup": setup, "target_rps": args.target_rps,
        "steps": [asdict(s) for s in steps], "capacity_step": best.index if best else None,
        "replicas": [{"stack": r.stack.name, "per_pod_rps": r.per_pod_rps, "pods": r.pods,
                      "covered": r.covered, "max_replicas": r.stack.max_replicas} for r in sizing],
    }, indent=2))
    print(f"capacity: report in {reports / 'capacity.md'}", flush=True)
    if measured["exceptions"]:
        print(f"capacity: the personas raised {measured['exceptions']} exception(s); see the log",
              file=sys.stderr)
        return 1
    if best is None:
        print("capacity: no step met the SLO", file=sys.stderr)
        return 1
    print(f"capacity: {best.rps:.1f} req/s within the SLO at {best.users} users "
          f"({best.cpu_ms_per_request:.2f} ms CPU/request)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run wrk against a URL and read its throughput and tail latency."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, replace

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class Result:
    rps: float
    p50: float  # seconds
    p99: float
    errors: int
    requests: int
    server_cpu: float = 0.0  # CPU seconds the server's processes spent during the run

    @property
    def cpu_per_request(self) -> float:
        """Server CPU per request: steadier than throughput when other work shares the cores."""
        return self.server_cpu / self.requests if self.requests else float("nan")


def available() -> bool:
    return shutil.which("wrk") is not None


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def parse(output: str) -> Result:
    """Read wrk's --latency report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return Result(rps, p50, p99, errors + (int(non_2xx.group(1)) if non_2xx else 0), requests)


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its children (gunicorn master and workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def run(url: str, seconds: int, server_pid: int | None = None, connections: int = 16,
        warmup: int = 1, headers: tuple[str, ...] = ()) -> Result:
    """Warm up, then measure ``seconds`` with one wrk thread (it shares the cores with the server);
    ``headers`` ("Name: value") go with every request."""
    extra = [arg for header in headers for arg in ("-H", header)]
    if warmup:  # wrk takes whole seconds
        subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{warmup}s", *extra, url], capture_output=True,
                       check=True, timeout=warmup + 30)
    cpu_before = process_tree_cpu(server_pid) if server_pid else 0.0
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
                         capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    result = parse(out)
    if server_pid:
        result = replace(result, server_cpu=process_tree_cpu(server_pid) - cpu_before)
    return result

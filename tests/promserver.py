"""Start and stop a real Prometheus on 127.0.0.1, and ask it things through its HTTP API.

Usage:
    with PrometheusServer(scrape_configs, rule_files) as prom:
        prom.wait_for(lambda: prom.query("up"), what="a first scrape")

Needs the ``prometheus`` binary (Debian package ``prometheus``; .ci/run installs it). It runs on a
free port with a temporary TSDB, evaluates and scrapes every second, keeps exemplars, and is
started and stopped by PID through the harness (SIGTERM, then SIGKILL of its process group
after a bound).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

from loadtests.harness import PATIENCE, free_port, launch, stop, wait_until

T = TypeVar("T")
INTERVAL = "1s"  # scrape and evaluation: tests last seconds, not minutes


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error (a bad expression, a timeout)."""


class PrometheusServer:
    def __init__(self, scrape_configs: list[dict[str, Any]], rule_files: list[Path]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL,
                             "evaluation_interval": INTERVAL},
                  "rule_files": [str(p.resolve()) for p in rule_files],
                  "scrape_configs": scrape_configs}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = PATIENCE) -> PrometheusServer:
        binary = prometheus_binary()
        assert binary, "prometheus is not installed"
        with self.log.open("wb") as log:
            self.process = launch(
                [binary, f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--enable-feature=exemplar-storage",
                 "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_for(self._ready, "Prometheus /-/ready", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.output()}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM Prometheus; SIGKILL its process group if it outstays ``timeout``."""
        if self.process is not None:
            stop(self.process, timeout)
        shutil.rmtree(self.dir, ignore_errors=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path> and return its data; raise PrometheusError on an error answer."""
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate ``expr`` now and return the vector."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]

    def query_range(self, expr: str, seconds: float, step: str = INTERVAL) -> list[dict[str, Any]]:
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=step)["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def exemplars(self, expr: str, seconds: float) -> list[dict[str, Any]]:
        end = time.time()
        return self.api("query_exemplars", query=expr, start=end - seconds, end=end)

    def wait_for(self, check: Callable[[], T], what: str, timeout: float = PATIENCE) -> T:
        """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds
        (patience), with Prometheus's log."""
        try:
            return wait_until(check, what, timeout, interval=0.25)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.output()[-2000:]}") from None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

"""A real gunicorn on 127.0.0.1 and a free port, started and stopped by PID (see __init__.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests

from .processes import PATIENCE, free_port, launch, stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
# A fixed Ed25519 key for the integration servers (tests sign tokens for them with it).
PRODUCTION_SECRETS = {"SECRET_KEY": "integration-secret-key-" + "x" * 16,
                      "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\n"
                      "MC4CAQAwBQYDK2VwBCIEIN2xZEDsK/k4lZcn8D9tlQTNWfXX3eFyti9ygBqGocCc\n"
                      "-----END PRIVATE KEY-----",
                      "JWT_KEY_ID": "integration-1"}


def new_signing_key() -> str:
    """A fresh Ed25519 private key as PEM, for a server of its own (JWT_PRIVATE_KEY)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


class GunicornServer:
    """The image's CMD in a session of its own, with production settings (test secrets) unless
    ``env`` says otherwise; ``stop()`` ends it and everything it started."""

    def __init__(self, env: dict[str, str], workers: int = 1, threads: int = 4,
                 worker_class: str = "gthread", ready_path: str = "/livez",
                 target: str = "app.wsgi:app", log_path: Path | None = None,
                 port: int | None = None, metrics_port: bool = False, cwd: Path = ROOT,
                 test_settings: bool = True) -> None:
        """``test_settings``: the given workers, threads and worker class, a 5 s graceful timeout
        and no drain, for quick starts and stops; False leaves every gunicorn setting to the app's
        defaults, as the image runs it (``env`` may still set some). ``cwd``: where gunicorn runs;
        ``python -m`` puts it first on sys.path."""
        # A given port is a restart in the same place: it stays even when taken.
        self.port_given = port is not None
        self.port = port or free_port()
        # /metrics on a port of its own, as in the image and in Kubernetes.
        self.metrics_port = free_port() if metrics_port else None
        self.ready_path = ready_path
        self.cwd = cwd
        # The image's CMD, run with this interpreter.
        self.command = ["gunicorn", "-c", "python:app.gunicorn_conf", target]
        settings = {
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_THREADS": str(threads),
            "GUNICORN_WORKER_CLASS": worker_class,
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
            "GUNICORN_DRAIN_SECONDS": "0",  # stop at once; shutdown tests set a drain
        } if test_settings else {}
        self.env = {
            "PATH": os.environ["PATH"],
            "LOOKOUT_ENV": "production",
            **PRODUCTION_SECRETS,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **settings,
            **env,
        }
        if self.metrics_port:
            self.env["METRICS_PORT"] = str(self.metrics_port)
        # A log of the caller's is kept; a temporary one goes with the server.
        self.keep_log = log_path is not None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = PATIENCE, attempts: int = 3) -> GunicornServer:
        """Start gunicorn and poll ``ready_path``; on any failure (Ctrl-C too) stop it again.

        A port of our own choosing (the server's or its metrics port) that another process took
        before gunicorn bound it, say a helper server's or a client's bind(0) in that second, is
        replaced by a fresh one, up to ``attempts`` starts in all; gunicorn spends five seconds
        retrying a taken port before it exits.
        """
        for _ in range(attempts - 1):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                taken = self._taken_port()
                if taken == self.port and not self.port_given:
                    self.port = free_port()
                    self.env["PORT"] = str(self.port)
                elif taken is not None and taken == self.metrics_port:
                    self.metrics_port = free_port()
                    self.env["METRICS_PORT"] = str(self.metrics_port)
                else:
                    raise
        return self._start_once(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _taken_port(self) -> int | None:
        """The port gunicorn's log says was in use when it gave up, if that is why it did."""
        found = re.search(r"Connection in use: \('[^']*', (\d+)\)", self.output())
        return int(found[1]) if found else None

    def _start_once(self, timeout: float) -> GunicornServer:
        with self.log_path.open("wb") as log:
            process = self.process = launch([sys.executable, "-m", *self.command], cwd=self.cwd,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def ready_or_exited() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{self.output()}")
            return self.ready()

        try:
            wait_until(ready_or_exited, f"gunicorn ready at {self.url}{self.ready_path}", timeout, 0.1)
            return self
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}:\n{self.output()}") from None
        except BaseException:  # a `with` block's __exit__ does not run when __enter__ fails
            self.stop()
            raise

    def ready(self) -> bool:
        try:
            return requests.get(self.url + self.ready_path, timeout=2).status_code == 200
        except requests.RequestException:  # refused, or workers still booting
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM the master; SIGKILL its process group if it outstays ``timeout``, and any
        worker left once it has gone. Return the master's exit code."""
        return stop(self.process, timeout) if self.process is not None else None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)

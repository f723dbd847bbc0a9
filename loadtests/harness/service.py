"""A local Lookout service for load runs: migrated, with a bootstrap admin, under gunicorn
(see __init__.py for the settings it reads)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from .gunicorn import ROOT, GunicornServer, new_signing_key
from .processes import PATIENCE

PASSED_THROUGH = ("PATH", "HOME", "LANG", "TMPDIR", "LOG_LEVEL", "GUNICORN_WORKER_CLASS",
                  "PASSWORD_HASH_TIME_COST", "PASSWORD_HASH_MEMORY_KIB", "DATABASE_POOL_SIZE")


class LocalService:
    """Production settings (real Argon2id cost, random keys made for the run) on ``DATABASE_URL``
    or a fresh SQLite file in ``workdir``, through GunicornServer; this adds the migration and
    the admin account."""

    def __init__(self, workdir: Path, environ: dict[str, str] | None = None,
                 metrics_port: bool = False) -> None:
        environ = dict(os.environ if environ is None else environ)
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.admin_email = f"loadtest-admin-{secrets.token_hex(4)}@loadtest.example.com"
        self.admin_password = secrets.token_urlsafe(24)
        database_url = environ.get("DATABASE_URL")
        if not database_url:
            sqlite = workdir / "loadtest.db"
            sqlite.unlink(missing_ok=True)
            database_url = f"sqlite:///{sqlite.resolve()}"
        self.database = database_url.split(":", 1)[0]
        self.log_path = workdir / "server.log"
        self.server = GunicornServer(
            {**{k: environ[k] for k in PASSED_THROUGH if k in environ},
             "SECRET_KEY": secrets.token_urlsafe(48), "JWT_PRIVATE_KEY": new_signing_key(),
             "JWT_KEY_ID": f"loadtest-{secrets.token_hex(4)}",
             "DATABASE_URL": database_url, "GUNICORN_GRACEFUL_TIMEOUT": "20",
             # One generator address and a handful of accounts make all the traffic: per-address
             # and per-user limits would measure the limiter, not the API (loadtests/README.md).
             "RATE_LIMIT_ENABLED": "false"},
            workers=int(environ.get("GUNICORN_WORKERS", str(os.cpu_count() or 1))),
            threads=int(environ.get("GUNICORN_THREADS", "8")),
            worker_class=environ.get("GUNICORN_WORKER_CLASS", "gthread"),
            ready_path="/readyz", log_path=self.log_path, metrics_port=metrics_port)
        self.env = self.server.env

    @property
    def url(self) -> str:
        """The server's address, known for certain once it has started (a taken port moves it)."""
        return self.server.url

    def flask(self, *args: str, **env: str) -> None:
        """Run a ``flask --app app`` command against the service's database."""
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            command = " ".join(args[:2])
            raise RuntimeError(f"flask {command} failed ({done.returncode}):\n{done.stderr[-2000:]}")

    def start(self, timeout: float = PATIENCE) -> LocalService:
        """Migrate, add the admin, start gunicorn and wait for /readyz."""
        self.flask("db", "upgrade")
        self.flask("users", "bootstrap-admin", LOOKOUT_BOOTSTRAP_ADMIN_EMAIL=self.admin_email,
                   LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD=self.admin_password,
                   LOOKOUT_BOOTSTRAP_ADMIN_NAME="Load Test Admin")  # as the deployment's migration Job
        self.server.start(timeout)
        return self

    def ready(self) -> bool:
        return self.server.ready()

    @property
    def pid(self) -> int:
        return self.server.pid

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the gunicorn master; SIGKILL its process group if it outstays ``timeout``."""
        self.server.stop(timeout)

    def __enter__(self) -> LocalService:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

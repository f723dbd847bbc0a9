"""The process harness that tests, load tests, the benchmark and the delivery scripts share.

Usage:
    from loadtests.harness import GunicornServer, LocalService, free_port, launch, stop, wait_until

    with GunicornServer({"DATABASE_URL": url}, workers=2) as server:   # a real gunicorn
        requests.get(server.url + "/livez")
    with LocalService(workdir=Path("reports")) as service:              # migrated, with an admin
        service.url, service.admin_email, service.admin_password
    process = launch(["prometheus", ...], stdout=log)   # any other server, in its own session
    stop(process)                                       # SIGTERM; SIGKILL of its group after a bound
    wait_until(lambda: ready(url), "Prometheus ready")  # poll the thing, with generous patience
    outlived()                                          # what this harness started and still runs
    EventPipeline(workdir, broker_url, service)         # relay, notifier, SMTP sink (events.py)

Everything runs on 127.0.0.1 and ports from ``free_port()``. Each process is started in a
session of its own and recorded (pid, start time, command line) when it starts, so that
``outlived()`` can name what a caller forgot to stop and ``reap()`` can kill it; the test suite
fails when anything is left at its end (tests/conftest.py).

``GunicornServer`` runs the image's CMD (``gunicorn -c python:app.gunicorn_conf app.wsgi:app``)
with production settings and test secrets unless told otherwise, and waits for ``ready_path``.
``LocalService`` adds what a load run needs: ``flask db upgrade``, a bootstrap admin, real
Argon2id cost and random keys, on ``DATABASE_URL`` or a fresh SQLite file in its workdir.

Environment variables read:
    HARNESS_PID_FILE     a file each recorded process is also appended to, so a test session
                         sees what its subprocesses (``python -m loadtests.run``) started
    PATH                 passed to gunicorn
    LocalService, from its ``environ`` argument (``os.environ`` by default):
    DATABASE_URL         the database (a fresh SQLite file in the workdir when unset)
    GUNICORN_WORKERS     worker processes (default: one per core)
    GUNICORN_THREADS     threads per worker (default 8)
    GUNICORN_WORKER_CLASS, LOG_LEVEL, DATABASE_POOL_SIZE, PASSWORD_HASH_TIME_COST,
    PASSWORD_HASH_MEMORY_KIB, HOME, LANG, TMPDIR
                         passed through to the service
"""

from __future__ import annotations

from .gunicorn import PRODUCTION_SECRETS, ROOT, GunicornServer
from .processes import PATIENCE, PID_FILE, free_port, launch, outlived, reap, record, stop, wait_until
from .service import LocalService

__all__ = ["PATIENCE", "PID_FILE", "PRODUCTION_SECRETS", "ROOT", "GunicornServer", "LocalService",
           "free_port", "launch", "outlived", "reap", "record", "stop", "wait_until"]

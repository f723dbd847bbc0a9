"""Instructions per request, counted by valgrind: the one figure this machine's noise cannot move.

Throughput ratios need many paired rounds on a shared VM and still spread by ±10%. Counting the
instructions one thread executes to answer a request is exact to a fraction of a percent from
a single run (about 1% with PostgreSQL, whose round trips vary), so the in-process part of a
cost (what the app, its libraries and their instrumentation do per request, without gunicorn,
threads or contention) is settled here and the throughput parts can be read against it.

Each setup is run twice under ``valgrind --tool=cachegrind --cache-sim=no`` (counting only):
once building the app and warming it up, once doing the same and then answering ``requests``
requests through its WSGI callable. The difference over ``requests`` is the count per request;
start-up, which differs between setups, cancels. No exporter runs: a span processor exports on
a timer from its own thread, which would make the count depend on the run's length.

A setup that samples a share of its requests is counted twice more, every request dropped and
every request sampled, and reported as the two weighted by the ratio (``sampled_mix``): the
cost of a request at that ratio, on average. Counting at the ratio itself is a lottery: the
random trace ids decide which requests are sampled, and whether the first sampled one (which
pays one-time set-up) falls in the warm-up or among the counted requests; the users endpoint's
figure moved by up to 4% between runs that way.

    python -m loadtests.bench.instructions APP PATH REQUESTS   (what valgrind runs)

APP: ``bare`` (a), ``common`` (b), ``lookout`` (this service, by its own env), ``anchor`` (the
tutorial's users API, anchor.py, on DATABASE_URL). For ``lookout``,
BENCH_AS=admin or BENCH_AS=user sends every request with a bearer token of the database's
first user of that role (the users API needs one), and ``{other}`` in PATH is the id of the
second regular user: someone else's profile. Both are set up before the counted part.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARM_UP = 20
REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def available() -> bool:
    return shutil.which("valgrind") is not None


def parse(report: str) -> int:
    """The instruction count from valgrind's summary (``==123== I refs: 1,234``)."""
    match = REFS.search(report)
    if match is None:
        raise ValueError(f"no instruction count in valgrind's output:\n{report[-2000:]}")
    return int(match.group(1).replace(",", ""))


@dataclass(frozen=True)
class Count:
    name: str
    per_request: float  # instructions
    sampled_extra: float | None = None  # what sampling a request adds (sampled_mix only)


def run_once(app: str, path: str, requests: int, env: dict[str, str]) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, "-m", "loadtests.bench.instructions", app, path, str(requests)]
    # The caller's OTEL_* settings (an exporter, above all) and telemetry switch stay out: each
    # setup says what it runs with.
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith("OTEL_") and k != "TELEMETRY_ENABLED"}
    full_env = {**inherited, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT), **env}
    result = subprocess.run(command, env=full_env, cwd=ROOT, capture_output=True, text=True,
                            timeout=900, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{app} {path} under valgrind exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return parse(result.stderr)


def count(name: str, app: str, path: str, env: dict[str, str], requests: int) -> Count:
    """Instructions per request: two runs, with and without the requests, side by side."""
    with ThreadPoolExecutor(2) as pool:
        without = pool.submit(run_once, app, path, 0, env)
        with_requests = pool.submit(run_once, app, path, requests, env)
        return Count(name, (with_requests.result() - without.result()) / requests)


def sampled_mix(name: str, app: str, path: str, env: dict[str, str], requests: int, ratio: float) -> Count:
    """Instructions per request when ``ratio`` of new traces are sampled: an unsampled and a
    sampled request, each counted over ``requests`` requests, weighted by the ratio."""
    dropped = count(name, app, path, {**env, "OTEL_TRACES_SAMPLER": "parentbased_always_off"}, requests)
    sampled = count(name, app, path, {**env, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}, requests)
    return Count(name, (1 - ratio) * dropped.per_request + ratio * sampled.per_request,
                 sampled.per_request - dropped.per_request)


def _build(app: str) -> object:
    if app == "lookout":
        from app import create_app

        return create_app()
    if app == "anchor":
        from loadtests.bench import anchor

        return anchor.create_app()
    from loadtests.bench import baseline

    return baseline._common() if app == "common" else baseline._flask()


def _caller(app: object, role: str) -> tuple[str, int]:
    """A token of the first user of ``role``, and the id of the second regular user."""
    from sqlalchemy import select

    from app.auth.tokens import issue_token
    from app.extensions import db
    from app.models import Role, User

    with app.app_context():  # type: ignore[attr-defined]
        caller = db.session.scalar(select(User).where(User.role == Role(role)).order_by(User.id))
        regular = select(User.id).where(User.role == Role.USER).order_by(User.id).limit(2)
        users = db.session.scalars(regular).all()
        if caller is None or len(users) < 2:
            sys.exit(f"the database needs a user of role {role} and two regular users")
        token, _ = issue_token(caller.id, role, caller.token_version)
        db.session.remove()
    return token, users[1]


def _second_regular_user() -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as connection:
        ids = connection.scalars(text("SELECT id FROM users WHERE role = 'user' ORDER BY id LIMIT 2")).all()
    engine.dispose()
    return int(ids[1])


def serve(app_name: str, path: str, requests: int) -> None:
    """What runs under valgrind: build, warm up, then answer ``requests`` requests in-process."""
    from werkzeug.test import EnvironBuilder

    app = _build(app_name)
    headers = [("User-Agent", "wrk"), ("Accept", "*/*")]
    if os.environ.get("BENCH_AS"):
        token, other = _caller(app, os.environ["BENCH_AS"])
        headers.append(("Authorization", f"Bearer {token}"))
        path = path.replace("{other}", str(other))
    elif "{other}" in path:  # the anchor: no caller, the same user as Lookout's count reads
        path = path.replace("{other}", str(_second_regular_user()))
    route, _, query = path.partition("?")
    builder = EnvironBuilder(path=route, query_string=query, base_url="http://127.0.0.1:8000",
                             headers=headers)
    environ: dict[str, object] = builder.get_environ()
    statuses: list[str] = []
    # BENCH_ROTATE=1: ``{id}`` in PATH is a different user on every request (ids counted up from
    # 1), so a read cache misses every time; otherwise PATH is the same request every time.
    ids = iter(range(1, 1_000_000))
    rotate = os.environ.get("BENCH_ROTATE") == "1"

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        statuses.append(status)

    def answer(times: int) -> None:
        for _ in range(times):
            request = dict(environ)
            if rotate:
                request["PATH_INFO"] = route.replace("{id}", str(next(ids)))
            for _chunk in app(request, start_response):  # type: ignore[operator]
                pass

    answer(WARM_UP)
    gc.collect()
    gc.freeze()  # as each gunicorn worker does before serving (GUNICORN_GC_FREEZE)
    answer(requests)
    failed = [s for s in statuses if not s.startswith("200")]
    if failed:
        sys.exit(f"{path} answered {failed[0]}: the count would not be of the request meant")


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]))

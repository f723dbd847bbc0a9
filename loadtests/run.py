"""``make loadtest``: start a local service, run Locust headless with the SLO gate, stop the service.

Usage:
    python -m loadtests.run [--reports DIR] [--target URL] [LOCUST OPTIONS...]
    python -m loadtests.run -u 100 -t 2m --shape spike

Without ``--target`` it starts the service under gunicorn (see loadtests/harness: SQLite in
the reports folder, or ``DATABASE_URL``), migrates it, creates a bootstrap admin, waits for
/readyz, runs Locust with the defaults of [tool.locust] in pyproject.toml plus any options
given, writes ``loadtest.html`` and ``loadtest_*.csv`` in the reports folder, and stops the
service by PID, also on failure or Ctrl-C. With ``--target`` it runs against a service that is
already up, as the admin in LOOKOUT_LOADTEST_ADMIN_EMAIL / LOOKOUT_LOADTEST_ADMIN_PASSWORD.

With a broker (``--broker-url`` or LOOKOUT_LOADTEST_BROKER_URL, an AMQP URL) the local run also
starts the outbox relay, the notifier's consumer and an SMTP sink (loadtests/harness/events.py),
waits after the load (bounded by ``--email-wait``) for the welcome email of every user the
writers created, and writes the event-to-email latency from the notifier's histogram into
``loadtest.md``; without one, ``loadtest.md`` says it was not measured.

Exits with Locust's code, which the SLO gate sets: 0 when the SLO holds.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from dashboards import load_slo
from loadtests import emails
from loadtests.harness import ROOT, LocalService
from loadtests.harness.events import EventPipeline
from loadtests.report import loadtest_markdown

REPORTS = ROOT / "reports"
ADMIN_VARS = ("LOOKOUT_LOADTEST_ADMIN_EMAIL", "LOOKOUT_LOADTEST_ADMIN_PASSWORD")
BROKER_VAR = "LOOKOUT_LOADTEST_BROKER_URL"
EMAIL_WAIT_SECONDS = 120.0


def locust_command(host: str, reports: Path, name: str, extra: Sequence[str]) -> list[str]:
    """Return the Locust command line for a headless run that writes HTML and CSV reports."""
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
            "--headless", "--host", host, "--html", str(reports / f"{name}.html"),
            "--csv", str(reports / name), *extra]


# After Ctrl-C or SIGTERM, how long Locust has to write its reports before it is asked once more,
# and before it is killed. Locust swallows a KeyboardInterrupt that lands in one of its own
# background greenlets (its stats printer, CSV writer and stats history catch it and log it at
# DEBUG), and then runs on to its full --run-time; asking again stops it. A normal stop takes
# about a second here.
ASK_AGAIN_AFTER_SECONDS = 10.0
KILL_AFTER_SECONDS = 30.0


class _Stopping(Exception):
    """SIGTERM arrived while Locust ran: it has been passed on, now bound the wait."""


def run_locust(command: list[str], env: dict[str, str],
               started: Callable[[int], object] | None = None,
               ask_again_after: float = ASK_AGAIN_AFTER_SECONDS,
               kill_after: float = KILL_AFTER_SECONDS) -> int:
    """Run Locust to the end and return its exit code (128 + n when signal n killed it).

    Ctrl-C (which reaches Locust too, in the same process group) and SIGTERM (passed on to it)
    let it write its reports and quit, within ``kill_after`` seconds; a second one stops it at
    once.
    """
    env = {**env, "PYTHONPATH": str(ROOT)}
    # Locust needs gevent's monkey patching; a test runner that imports Locust's classes sets this
    # to keep its own process unpatched, and it must not be inherited here.
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    process = subprocess.Popen(command, cwd=ROOT, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        process.send_signal(signum)
        raise _Stopping

    previous = signal.getsignal(signal.SIGTERM)
    try:
        try:  # from here on a stop of any kind ends in the bounded wait, and Locust does not outlive us
            signal.signal(signal.SIGTERM, forward)
            if started:
                started(process.pid)
            return _exit_code(process.wait())
        except (KeyboardInterrupt, _Stopping):
            return _exit_code(_wait_for_stop(process, ask_again_after, kill_after))
    finally:
        # getsignal() gives None for a handler not set from Python; the default is the nearest.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_stop(process: subprocess.Popen[bytes], ask_again_after: float, kill_after: float) -> int:
    """Locust has been told to stop: wait, tell it once more, then kill it."""
    told = time.monotonic()
    try:
        try:
            return process.wait(ask_again_after)
        except subprocess.TimeoutExpired:
            print(f"loadtest: Locust still runs {ask_again_after:.0f}s after the stop; asking again "
                  "(Ctrl-C stops it now)", file=sys.stderr, flush=True)
            process.send_signal(signal.SIGINT)
        return process.wait(max(0.0, told + kill_after - time.monotonic()))
    except subprocess.TimeoutExpired:
        print(f"loadtest: Locust did not stop within {kill_after:.0f}s; killing it", file=sys.stderr,
              flush=True)
    except (KeyboardInterrupt, _Stopping):
        print("loadtest: stopping Locust now", file=sys.stderr, flush=True)
    process.kill()
    return process.wait()


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # Popen's -n for "killed by signal n", as a shell says it


def measure_emails(events: EventPipeline, reports: Path, wait: float) -> emails.EmailResult:
    """Wait (bounded) for the writers' users' welcome emails, then read the latency histogram."""
    created = emails.created_users(reports / "loadtest_stats.csv")
    waited = events.wait_for_emails(emails.WRITER_USER_PREFIX, created, wait)
    # Only the load's events: the bootstrap admin's, written before the relay ran, measured the start-up.
    buckets = emails.since(emails.histogram(events.metrics_text()), events.baseline)
    slo = load_slo()
    threshold = slo.notifier_threshold_seconds
    return emails.EmailResult(
        users_created=created, emails=events.emailed(emails.WRITER_USER_PREFIX),
        count=int(emails.total(buckets)), p50=emails.quantile(0.5, buckets),
        p95=emails.quantile(0.95, buckets), p99=emails.quantile(0.99, buckets),
        within_threshold=emails.share_within(threshold, buckets), threshold_seconds=threshold,
        waited_seconds=waited, target=slo.notifier_target)


def write_summary(reports: Path, code: int, email: emails.EmailResult | None, not_measured: str = "") -> None:
    (reports / "loadtest.md").write_text(loadtest_markdown(code, email, not_measured))
    if email is not None:
        print(f"loadtest: {email.emails} of {email.users_created} writer-created users emailed; "
              f"event-to-email p95 {email.p95:.2f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Other options are passed to Locust (see locust --help).")
    parser.add_argument("--reports", type=Path, default=REPORTS, help="Report folder (default: reports/)")
    parser.add_argument("--target", help="URL of a running service instead of starting one")
    parser.add_argument("--broker-url", default=os.environ.get(BROKER_VAR) or None,
                        help=f"AMQP URL (or {BROKER_VAR}) of a broker (a vhost) of the run's own: the local "
                        "run also emails and reports the event-to-email latency (its queue is purged)")
    parser.add_argument("--email-wait", type=float, default=EMAIL_WAIT_SECONDS,
                        help="Seconds to wait after the load for the last email "
                        f"(default {EMAIL_WAIT_SECONDS:g})")
    args, extra = parser.parse_known_args(argv)
    # SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the service is stopped below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args.reports.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)

    if args.target:
        missing = [name for name in ADMIN_VARS if not env.get(name)]
        if missing:
            parser.error(f"--target needs an admin account of the target: set {' and '.join(missing)}")
        code = run_locust(locust_command(args.target, args.reports, "loadtest", extra), env)
        write_summary(args.reports, code, None, "a running service (--target): its notifier's metrics "
                      "are not read by the load test.")
    else:
        service = LocalService(args.reports / "service", env)
        events = (EventPipeline(args.reports / "service", args.broker_url, service)
                  if args.broker_url else None)
        try:
            service.start()
            print(f"loadtest: service ready at {service.url} (gunicorn pid {service.pid}, "
                  f"{service.env['GUNICORN_WORKERS']} workers, {service.database})", flush=True)
            if events is not None:
                events.start()
                events.settle(service.admin_email)
                print("loadtest: relay, notifier (consumer, web ready) and SMTP sink started", flush=True)
            env.update(zip(ADMIN_VARS, (service.admin_email, service.admin_password), strict=True))
            code = run_locust(locust_command(service.url, args.reports, "loadtest", extra), env)
            if events is None:
                write_summary(args.reports, code, None,
                              f"no broker configured (--broker-url or {BROKER_VAR}).")
            elif code >= 128:  # Ctrl-C or SIGTERM ended Locust: stop now, do not wait for emails
                write_summary(args.reports, code, None, "the run was stopped by a signal.")
            else:
                write_summary(args.reports, code, measure_emails(events, args.reports, args.email_wait))
        finally:
            if events is not None:
                events.stop()
            service.stop()
    print(f"loadtest: exit code {code}; reports: {args.reports}/loadtest.html, loadtest.md, "
          "loadtest_*.csv", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

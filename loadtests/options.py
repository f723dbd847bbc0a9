"""The load test's own command-line options (Locust sends them from the master to its workers).

Environment variables read (each also a flag):
    LOOKOUT_LOADTEST_ADMIN_EMAIL      --admin-email      an admin account of the target service
    LOOKOUT_LOADTEST_ADMIN_PASSWORD   --admin-password   its password (prefer the variable: argv is visible)
    LOOKOUT_LOADTEST_ADMIN_EMAIL_FILE, LOOKOUT_LOADTEST_ADMIN_PASSWORD_FILE
                                      files holding them (a mounted Kubernetes Secret), used when the
                                      variables above are unset
    LOOKOUT_LOADTEST_PROMETHEUS_URL   --prometheus-url   Prometheus with the notifier's metrics: report
                                      the writers' emails and their latency (notifier_watch.py)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loadtests.shapes import SHAPES


def from_file(name: str) -> str:
    """Return the content of the file ``<name>_FILE`` names (without its final newline), or ""."""
    path = os.environ.get(f"{name}_FILE")
    return Path(path).read_text().rstrip("\r\n") if path else ""


def add_arguments(parser: Any) -> None:
    """Register the options on Locust's parser (an ``init_command_line_parser`` listener)."""
    # On the parser itself, not a group: only its add_argument knows is_secret and include_in_web_ui.
    group = parser
    group.add_argument("--admin-email", env_var="LOOKOUT_LOADTEST_ADMIN_EMAIL",
                       default=from_file("LOOKOUT_LOADTEST_ADMIN_EMAIL"),
                       help="Admin account used to create the load test's accounts and seed users")
    group.add_argument("--admin-password", env_var="LOOKOUT_LOADTEST_ADMIN_PASSWORD",
                       default=from_file("LOOKOUT_LOADTEST_ADMIN_PASSWORD"), is_secret=True,
                       help="Its password")
    group.add_argument("--seed-users", type=int, default=20,
                       help="Users created through the API at test start for readers to fetch by id")
    group.add_argument("--shape", choices=SHAPES, default="steady",
                       help="steady: -u users for -t; step: climb to -u in --steps steps over -t; "
                            "spike: -u users with a --spike-factor burst in the middle fifth of -t")
    group.add_argument("--steps", type=int, default=5, help="Steps of the step ramp")
    group.add_argument("--spike-factor", type=float, default=4.0, help="Peak users / base users of a spike")
    group.add_argument("--think-time-scale", type=float, default=1.0,
                       help="Multiply every persona's think time (below 1 = more requests per user)")
    group.add_argument("--prometheus-url", env_var="LOOKOUT_LOADTEST_PROMETHEUS_URL", default="",
                       include_in_web_ui=False,
                       help="Prometheus scraping the notifier: report the event-to-email latency against "
                            "the notifier SLO when the run ends (a deployed stack)")
    group.add_argument("--email-wait", type=float, default=120.0, include_in_web_ui=False,
                       help="With --prometheus-url: seconds to wait after the load for the last email")
    group.add_argument("--capacity-out", default="", include_in_web_ui=False,
                       help="Write per-step stats of a step ramp to this JSON file (make capacity)")

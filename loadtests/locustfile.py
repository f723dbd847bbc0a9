"""Lookout load test: personas -> shape -> SLO gate.

Usage (from the repository root; defaults come from [tool.locust] in pyproject.toml):
    LOOKOUT_LOADTEST_ADMIN_EMAIL=... LOOKOUT_LOADTEST_ADMIN_PASSWORD=... \\
        locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 [-u 50 -r 10 -t 60s] [--shape step]

``make loadtest`` (loadtests/run.py) starts a local service and does all of this for you. The
exit code is the SLO gate's: 0 when the failure ratio, p95 and p99 are within dashboards/slo.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `locust -f loadtests/locustfile.py` puts loadtests/ on sys.path, not its parent; the package
# imports below (and `dashboards`) need the parent, wherever the files are mounted.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import events

from loadtests import notifier_watch, steps
from loadtests.accounts import seed_users
from loadtests.gate import slo_gate
from loadtests.options import add_arguments
from loadtests.personas import Admin, Directory, Reader, Writer
from loadtests.shapes import ProfileShape

# Locust runs the User and LoadTestShape classes it finds among this module's names.
__all__ = ["Admin", "Directory", "ProfileShape", "Reader", "Writer"]

events.init_command_line_parser.add_listener(add_arguments)
events.init.add_listener(lambda environment, **_kw: steps.install(environment))
events.init.add_listener(notifier_watch.install)
events.test_start.add_listener(seed_users)
events.quitting.add_listener(slo_gate)

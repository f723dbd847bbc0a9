"""``make loadtest`` with a broker: the writers' new users get their welcome emails through the
real relay, RabbitMQ, the notifier's consumer and an SMTP sink (aiosmtpd), and ``loadtest.md``
gives the event-to-email latency from the notifier's histogram; without a broker it says the
latency was not measured. The histogram arithmetic is checked on its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import emails
from loadtests.report import loadtest_markdown

ROOT = Path(__file__).resolve().parents[1]
CHEAP_HASHING = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8"}
SHORT_RUN = ["-u", "8", "-r", "8", "-t", "8s", "--seed-users", "3", "--think-time-scale", "0.2"]


def load_run(reports: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LOOKOUT_LOADTEST_BROKER_URL")}
    return subprocess.run([sys.executable, "-m", "loadtests.run", "--reports", str(reports), *SHORT_RUN,
                           "--email-wait", "90"], cwd=ROOT, env={**env, **CHEAP_HASHING, **extra},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_writers_users_get_their_welcome_emails_and_the_report_gives_the_latency(tmp_path, amqp_url):
    done = load_run(tmp_path, LOOKOUT_LOADTEST_BROKER_URL=amqp_url)
    output = done.stdout + done.stderr[-3000:]
    assert "relay, notifier (consumer, web ready) and SMTP sink started" in done.stdout, output
    created = emails.created_users(tmp_path / "loadtest_stats.csv")
    assert created > 0, output  # the writers did create users

    sent = [json.loads(line) for line in (tmp_path / "service" / "emails.jsonl").read_text().splitlines()]
    welcomed = [to for message in sent for to in message["to"] if to.startswith(emails.WRITER_USER_PREFIX)]
    assert len(welcomed) == len(set(welcomed)) == created  # each of them exactly once
    assert all(message["subject"] == "Welcome to Lookout" for message in sent)

    report = (tmp_path / "loadtest.md").read_text()
    assert "## Event-to-email latency" in report and "Not measured" not in report
    assert f"| users created by the writers | {created} |" in report
    assert f"| their welcome emails received | {created} |" in report
    # Every email the sink got (seed users and personas' accounts too) is in the histogram, but
    # the bootstrap admin's, which came before the load.
    assert sent[0]["to"][0].startswith("loadtest-admin-")
    assert f"| events emailed during the run (latency histogram count) | {len(sent) - 1} |" in report
    assert "| within the SLO threshold (60 s) | 100.00% |" in report
    assert "p50 / p95 / p99 |" in report and "nan" not in report


@pytest.mark.slow
def test_without_a_broker_the_report_says_the_latency_was_not_measured(tmp_path):
    done = load_run(tmp_path)
    report = (tmp_path / "loadtest.md").read_text()
    assert "## Event-to-email latency" in report, done.stderr[-3000:]
    assert "Not measured: no broker configured (--broker-url or LOOKOUT_LOADTEST_BROKER_URL)." in report
    assert not (tmp_path / "service" / "emails.jsonl").exists()


def test_the_not_measured_section_gives_its_reason():
    text = loadtest_markdown(0, None, "a running service (--target).")
    assert "SLO gate: pass" in text
    assert "## Event-to-email latency\n\nNot measured: a running service (--target)." in text


def test_missing_emails_are_called_out():
    result = emails.EmailResult(users_created=5, emails=3, count=9, p50=0.3, p95=1.2, p99=70.0,
                                within_threshold=0.9, threshold_seconds=60.0, waited_seconds=90.0)
    text = loadtest_markdown(1, result)
    assert "SLO gate: FAIL (exit code 1)" in text
    assert "| their welcome emails received | 3 (**2 missing**) |" in text
    assert "| p50 / p95 / p99 | 0.30 s / 1.20 s / 70.00 s |" in text
    assert "| within the SLO threshold (60 s) | 90.00% |" in text


def test_the_verdict_against_the_notifier_slo():
    good = emails.EmailResult(users_created=5, emails=7, count=9, p50=0.3, p95=1.2, p99=2.0,
                              within_threshold=1.0, threshold_seconds=60.0, waited_seconds=1.0, target=0.99)
    assert emails.violations(good) == []
    assert "| against the notifier SLO (99% within 60 s) | **PASS** |" in loadtest_markdown(0, good)
    slow = dataclasses.replace(good, within_threshold=0.98)
    assert emails.violations(slow) == ["98.00% emailed within 60 s, below the SLO's 99.00%"]
    missing = dataclasses.replace(good, emails=4)
    assert emails.violations(missing) == ["1 of the writers' 5 users have no welcome email"]
    nothing = dataclasses.replace(good, users_created=0, count=0, within_threshold=math.nan)
    assert emails.violations(nothing) == ["no email was measured"]
    assert "notifier SLO" not in loadtest_markdown(0, dataclasses.replace(good, target=math.nan))


def test_prometheus_answers_become_buckets():
    answer = [{"metric": {"le": "+Inf"}, "value": [1.0, "10"]},
              {"metric": {"le": "0.5"}, "value": [1.0, "2"]},
              {"metric": {"le": "60.0"}, "value": [1.0, "9.5"]}]
    assert emails.vector_buckets(answer) == [(0.5, 2.0), (60.0, 9.5), (math.inf, 10.0)]
    assert emails.vector_total([{"metric": {}, "value": [1.0, "3.2"]}]) == 3.2
    assert emails.vector_total([]) == 0.0
    assert emails.latency_query(90) == ("sum by (le) (increase(lookout_notifier_event_to_email_seconds_bucket"
                                        "[90s]))")


BUCKETS = [(0.5, 2.0), (1.0, 6.0), (60.0, 9.0), (120.0, 10.0), (math.inf, 10.0)]
METRICS = """\
# HELP lookout_notifier_event_to_email_seconds From the change's commit to the SMTP acceptance.
# TYPE lookout_notifier_event_to_email_seconds histogram
lookout_notifier_event_to_email_seconds_bucket{le="0.5",template="welcome"} 2.0
lookout_notifier_event_to_email_seconds_bucket{le="1.0",template="welcome"} 5.0
lookout_notifier_event_to_email_seconds_bucket{le="60.0",template="welcome"} 7.0
lookout_notifier_event_to_email_seconds_bucket{le="120.0",template="welcome"} 8.0
lookout_notifier_event_to_email_seconds_bucket{le="+Inf",template="welcome"} 8.0
lookout_notifier_event_to_email_seconds_count{template="welcome"} 8.0
lookout_notifier_event_to_email_seconds_sum{template="welcome"} 100.0
lookout_notifier_event_to_email_seconds_bucket{le="0.5",template="role_changed"} 0.0
lookout_notifier_event_to_email_seconds_bucket{le="1.0",template="role_changed"} 1.0
lookout_notifier_event_to_email_seconds_bucket{le="60.0",template="role_changed"} 2.0
lookout_notifier_event_to_email_seconds_bucket{le="120.0",template="role_changed"} 2.0
lookout_notifier_event_to_email_seconds_bucket{le="+Inf",template="role_changed"} 2.0
lookout_notifier_event_to_email_seconds_count{template="role_changed"} 2.0
lookout_notifier_event_to_email_seconds_sum{template="role_changed"} 3.0
lookout_notifier_emails_sent_total{template="welcome"} 8.0
"""


def test_the_histogram_is_summed_over_its_templates():
    assert emails.histogram(METRICS) == BUCKETS
    assert emails.histogram("# nothing here\n") == []


def test_quantiles_interpolate_within_the_bucket_as_promql_does():
    assert emails.quantile(0.5, BUCKETS) == pytest.approx(0.5 + 0.5 * (5 - 2) / 4)  # rank 5 in (0.5, 1]
    assert emails.quantile(0.1, BUCKETS) == pytest.approx(0.25)  # the first bucket starts at 0
    assert emails.quantile(0.95, BUCKETS) == pytest.approx(60 + 60 * 0.5)  # rank 9.5 in (60, 120]
    assert emails.quantile(0.99, [(1.0, 1.0), (math.inf, 2.0)]) == 1.0  # +Inf: the highest finite bound
    assert math.isnan(emails.quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_since_leaves_out_what_an_earlier_scrape_held():
    earlier = [(0.5, 1.0), (1.0, 1.0), (60.0, 1.0), (120.0, 1.0), (math.inf, 1.0)]
    assert emails.since(BUCKETS, earlier) == [(0.5, 1.0), (1.0, 5.0), (60.0, 8.0), (120.0, 9.0),
                                              (math.inf, 9.0)]
    assert emails.since(BUCKETS, []) == BUCKETS


def test_the_share_within_the_threshold_needs_a_bucket_bound():
    assert emails.share_within(60.0, BUCKETS) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="not a bucket bound"):
        emails.share_within(45.0, BUCKETS)


def test_created_users_are_the_writers_successful_creations(tmp_path):
    stats = tmp_path / "loadtest_stats.csv"
    stats.write_text("Type,Name,Request Count,Failure Count\n"
                     "GET,/api/v1/users,40,0\nPOST,/api/v1/users,12,2\n,Aggregated,52,2\n")
    assert emails.created_users(stats) == 10
    assert emails.created_users(tmp_path / "missing.csv") == 0

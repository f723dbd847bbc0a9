"""The notifier's capacity: the arithmetic without servers, then one small measurement against real
RabbitMQ, PostgreSQL, an SMTP server and a consumer process, healthy and then slowed by a fault."""

from __future__ import annotations

import json
import math

import pytest

from loadtests.notifier_capacity import Sink, main, measure, notifier_database
from loadtests.queue_sizing import Phase, advise, markdown, quantile, rate_of, violations


def phase(latencies: tuple[float, ...], published: int | None = None, rate: float = 50.0,
          held_to_slo: bool = True) -> Phase:
    return Phase("burst", math.inf, len(latencies) if published is None else published, latencies, 10.0, rate,
                 0.5, held_to_slo)


def test_quantiles_are_nearest_rank_and_rates_run_first_to_last():
    values = [float(n) for n in range(1, 101)]
    assert (quantile(0.5, values), quantile(0.99, values), quantile(1.0, values)) == (50.0, 99.0, 100.0)
    assert math.isnan(quantile(0.5, []))
    assert rate_of([10.0, 10.5, 11.0, 12.0]) == pytest.approx(1.5)  # 3 intervals in 2 s
    assert math.isnan(rate_of([1.0]))


def test_a_phase_breaks_the_slo_by_slow_or_missing_emails():
    assert violations(phase((0.1,) * 100), 60, 0.99) == []
    slow = violations(phase((0.1,) * 98 + (61.0, 62.0)), 60, 0.99)
    assert slow == ["98.00% of events emailed within 60 s, below the SLO's 99.00%"]
    missing = violations(phase((0.1,) * 99, published=100), 60, 0.99)
    assert missing == ["1 of 100 events were not emailed in time"]  # 99 % within: the count alone fails it
    assert phase((0.1,) * 99, published=100).within(60) == pytest.approx(0.99)
    # A burst's latency is its backlog's: shown, not judged; its missing emails still fail it.
    assert violations(phase((61.0,) * 10, held_to_slo=False), 60, 0.99) == []
    assert violations(phase((0.1,) * 9, published=10, held_to_slo=False), 60, 0.99)


def test_the_scaled_object_follows_the_rate_and_the_threshold():
    advice = advise(rate=50, threshold=60, peak_events=100)
    assert advice.value == 1050  # 50/s x (60 - 15 polling - 15 start) s x 0.7
    assert advice.wait_at_target == pytest.approx(21) and advice.budget == 30
    assert (advice.min_replicas, advice.max_replicas) == (1, 3)  # ceil(100 / 35)
    assert advise(rate=5, threshold=60, peak_events=100).value == 105  # a slower consumer: less per replica
    assert advise(rate=50, threshold=60, peak_events=1, availability_floor=2).max_replicas == 2
    with pytest.raises(ValueError, match="no time"):
        advise(rate=50, threshold=30, peak_events=10)
    with pytest.raises(ValueError, match="positive"):
        advise(rate=math.nan, threshold=60, peak_events=10)


def test_the_report_gives_the_verdicts_and_the_scaled_object():
    good, bad = phase((0.1,) * 10), phase((0.1,) * 9, published=10)
    text = markdown([good, bad], advise(50, 60, 50), 60, 0.99, 50, {"CPU": "Test CPU"}, {"burst": "10"})
    assert "| burst | burst | 10 | 10 | 50.0 |" in text and "| PASS |" in text
    assert "| all emailed |" in markdown([phase((61.0,) * 3, held_to_slo=False)], None, 60, 0.99, 50, {}, {})
    assert "FAIL: 1 of 10 events were not emailed in time" in text
    assert "| trigger `value` (messages per replica) | **1050** |" in text
    assert "| `maxReplicaCount` | **2** |" in text
    assert "No rate within the SLO" in markdown([bad], None, 60, 0.99, 50, {}, {})


@pytest.mark.postgres
def test_one_consumer_is_measured_and_a_slow_smtp_server_fails_it(amqp_url, postgres_server_url, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres_server_url)  # a database of the run's own on its server
    code = main(["--broker-url", amqp_url, "--messages", "30", "--hold-seconds", "2", "--max-seconds", "30",
                 "--reports", str(tmp_path)])
    report = json.loads((tmp_path / "notifier.json").read_text())
    assert code == 0, report
    burst, hold = report["phases"]
    assert burst["emailed"] == 30 and burst["rate"] > 0
    assert hold["emailed"] == hold["published"] and hold["violations"] == []
    assert hold["offered"] == pytest.approx(burst["rate"] * 0.7)
    assert report["scaled_object"]["value"] == advise(burst["rate"], 60, 50).value
    assert "**Capacity: " in (tmp_path / "notifier.md").read_text()

    sink = Sink()
    sink.delay = 0.5  # the fault: every message takes the SMTP server half a second to accept
    with notifier_database(None, tmp_path) as (url, described):
        assert "PostgreSQL" in described
        slowed = measure(amqp_url, url, tmp_path, messages=6, hold_seconds=2, max_seconds=30, sink=sink)
    # One email at a time, each at least 0.5 s: at most 2 a second, whatever else the machine does.
    assert slowed[0].emailed == 6 and slowed[0].rate <= 2 < burst["rate"], (slowed[0], burst)
    # Held to a threshold the slowed consumer cannot meet, the same measurement fails.
    assert violations(slowed[1], 0.25, 0.99)

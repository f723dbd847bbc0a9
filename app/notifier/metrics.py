"""The notifier's metrics: the platform's (HTTP, database, build) plus its own."""

from __future__ import annotations

from flask import Flask
from prometheus_client import Counter, Gauge, Histogram

from ..platform.metrics import Metrics
from .templates import TEMPLATES

# Event-to-email latency buckets (seconds): they must hold the notifier's SLO threshold in
# dashboards/slo.yaml exactly (tests/test_notifier_metrics checks it).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
FAILURE_KINDS = ("temporary", "permanent")
DEAD_LETTER_REASONS = ("poison", "permanent", "attempts")


class NotifierMetrics(Metrics):
    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        registry = self.registry
        self.latency = Histogram(
            "lookout_notifier_event_to_email_seconds",
            "From the change's commit (the event's occurred_at) to the SMTP server's acceptance.",
            ("template",), buckets=LATENCY_BUCKETS, registry=registry)
        self.sent = Counter("lookout_notifier_emails_sent", "Emails the SMTP server accepted, by template.",
                            ("template",), registry=registry)
        self.failed = Counter("lookout_notifier_emails_failed", "Failed SMTP attempts, by template and kind.",
                              ("template", "kind"), registry=registry)
        self.dead_letters = Counter("lookout_notifier_dead_letters",
                                    "Events sent to the dead-letter queue, by reason.", ("reason",),
                                    registry=registry)
        self.duplicates = Counter("lookout_notifier_duplicates",
                                  "Redelivered events already handled (no second email).", registry=registry)
        self.lag = Gauge("lookout_notifier_consumer_lag",
                         "Events waiting in the notifier's queue (ready, not yet delivered to a consumer).",
                         registry=registry, multiprocess_mode="max")
        self.dead_letter_depth = Gauge("lookout_notifier_dead_letter_queue_messages",
                                       "Messages waiting in the dead-letter queue.", registry=registry,
                                       multiprocess_mode="max")
        self.connected = Gauge("lookout_notifier_broker_connected", "1 while the consumer is connected.",
                               registry=registry, multiprocess_mode="max")
        for template in TEMPLATES.values():
            self.latency.labels(template)
            self.sent.labels(template)
            for kind in FAILURE_KINDS:
                self.failed.labels(template, kind)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)

"""The e2e's second-service check (infra/delivery/welcome_mail.py) against recorded answers of
Mailpit's search API and Tempo's trace API, each shaped as those servers answer, and the request
it sends."""

from __future__ import annotations

from typing import Any

import pytest

from infra.delivery import welcome_mail
from infra.delivery.welcome_mail import search_query, trace_problems, trace_services, welcome_problems

ADDRESS = "e2e-0a1b2c3d4e5f@example.com"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def message(to: str, subject: str) -> dict[str, Any]:
    """One entry of Mailpit's /api/v1/search answer (its MessageSummary)."""
    return {"ID": "Kd3aTkUV8Xqn9TEYt6VbZv", "MessageID": "event-1@lookout", "Read": False,
            "From": {"Name": "Lookout", "Address": "no-reply@lookout.test"},
            "To": [{"Name": "", "Address": to}], "Cc": [], "Bcc": [], "ReplyTo": [],
            "Subject": subject, "Created": "2026-12-02T09:30:00.000Z", "Tags": [], "Size": 2048,
            "Attachments": 0, "Snippet": "Welcome to Lookout, E2E Welcome"}


def search(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"total": 40, "unread": len(messages), "count": len(messages), "messages_count": len(messages),
            "start": 0, "tags": [], "messages": list(messages)}


def test_the_welcome_email_is_found_once():
    assert search_query(ADDRESS) == f'to:"{ADDRESS}"'
    assert welcome_problems(search(message(ADDRESS.upper(), "Welcome to Lookout")), ADDRESS) == []


@pytest.mark.parametrize(("answer", "problem"), [
    (search(), "holds no message to"),
    (search(message("someone@example.com", "Welcome to Lookout")), "holds no message to"),
    (search(message(ADDRESS, "Welcome to Lookout"), message(ADDRESS, "Welcome to Lookout")),
     "emailed more than once"),
    (search(message(ADDRESS, "Your Lookout password was changed")), "not the welcome email"),
    ({}, "holds no message to"),
])
def test_a_missing_duplicated_or_wrong_email_fails(answer: dict[str, Any], problem: str):
    (found,) = welcome_problems(answer, ADDRESS)
    assert problem in found


def batch(service: str, spans: int, key: str = "scopeSpans") -> dict[str, Any]:
    """One resource's spans as Tempo's /api/traces answers (OTLP JSON)."""
    return {"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": service}},
        {"key": "deployment.environment", "value": {"stringValue": "dev"}}]},
        key: [{"scope": {"name": "opentelemetry.instrumentation.flask"},
               "spans": [{"traceId": "S/kvNXezTaajzpKdDg5HNg==", "spanId": f"AAAAAAAAAA{i}=",
                          "name": "POST /api/v1/users", "kind": "SPAN_KIND_SERVER"}
                         for i in range(spans)]}]}


def test_a_trace_with_spans_of_both_services_passes():
    trace = {"batches": [batch("lookout", 3), batch("lookout-relay", 1), batch("lookout-notifier", 2)]}
    assert trace_services(trace) == {"lookout": 3, "lookout-relay": 1, "lookout-notifier": 2}
    assert trace_problems(trace, TRACE_ID) == []
    v2 = {"trace": {"resourceSpans": [batch("lookout", 1),
                                      batch("lookout-notifier", 1, "instrumentationLibrarySpans")]}}
    assert trace_problems(v2, TRACE_ID) == []


@pytest.mark.parametrize("trace", [
    {},  # Tempo's 404: not (yet) ingested
    {"batches": [batch("lookout", 3)]},  # the event never reached the notifier in this trace
    {"batches": [batch("lookout", 3), batch("lookout-notifier", 0)]},
])
def test_a_trace_without_the_notifier_fails(trace: dict[str, Any]):
    (problem,) = trace_problems(trace, TRACE_ID)
    assert "lookout-notifier" in problem and TRACE_ID in problem


class Answer:
    def __init__(self, status: int) -> None:
        self.status_code, self.text = status, "{}"


def test_the_user_is_created_as_the_admin_in_a_sampled_trace_of_our_own():
    sent: dict[str, Any] = {}

    def post(url: str, **kwargs: Any) -> Answer:
        sent.update(kwargs, url=url)
        return Answer(201)

    address = welcome_mail.create_user("https://lookout.test", {"Authorization": "Bearer t"}, TRACE_ID,
                                       post=post)
    assert sent["url"] == "https://lookout.test/api/v1/users"
    assert sent["json"]["email"] == address and address.endswith("@example.com")
    version, trace, _, flags = sent["headers"]["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACE_ID, "01")  # sampled: the spans are exported
    assert sent["headers"]["Authorization"] == "Bearer t"
    with pytest.raises(SystemExit, match="answered 403"):
        welcome_mail.create_user("https://lookout.test", {}, TRACE_ID, post=lambda url, **kw: Answer(403))

"""The second service end to end: a user created through the load balancer gets the welcome email,
and the request's trace holds spans of both services.

Usage (make kind-mail, after kind-up; .github/workflows/e2e.yml):
    python -m infra.delivery.e2e mail

One request (``POST /api/v1/users`` as the bootstrap admin, through the gateway, with a
``traceparent`` of our own) makes the users service write the user and its ``user.created``
event; the relay publishes it, the notifier's consumer emails it to Mailpit. Then:

- Mailpit's API (``GET /api/v1/search?query=to:"<address>"``, through ``kubectl port-forward``)
  must list one message to the new address, the welcome one (``welcome_problems``);
- Tempo (``GET /api/traces/<trace id>``, the same way) must hold that trace with spans from the
  users service (``service.name`` lookout) and from the notifier (lookout-notifier)
  (``trace_problems``).

The parsing is pure and tested against recorded answers (tests/infrastructure/test_infra_welcome_mail.py);
only ``check`` talks to the cluster.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

from infra.delivery.cluster_checks import poll

USERS_SERVICE = "lookout"
NOTIFIER_SERVICE = "lookout-notifier"
WELCOME_SUBJECT = "Welcome"  # app/notifier/templates.py's welcome subject starts so


def search_query(address: str) -> str:
    """Mailpit's search for messages to ``address`` (its ``to:`` filter, quoted)."""
    return f'to:"{address}"'


def welcome_problems(search_api: Mapping[str, Any], address: str) -> list[str]:
    """Problems with Mailpit's search answer: exactly one message to ``address``, a welcome."""
    messages = [m for m in search_api.get("messages") or []
                if any((to.get("Address") or "").lower() == address.lower() for to in m.get("To") or [])]
    if not messages:
        return [f"Mailpit holds no message to {address} (yet)"]
    if len(messages) > 1:
        return [f"Mailpit holds {len(messages)} messages to {address}: the event was emailed more than once"]
    subject = messages[0].get("Subject") or ""
    if not subject.startswith(WELCOME_SUBJECT):
        return [f"the message to {address} is {subject!r}, not the welcome email"]
    return []


def _attributes(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {a["key"]: next(iter((a.get("value") or {}).values()), None) for a in items}


def trace_services(trace: Mapping[str, Any]) -> dict[str, int]:
    """``service.name`` -> span count of a trace as Tempo answers it: OTLP JSON, ``batches``
    (``/api/traces``) or ``trace.resourceSpans`` (``/api/v2/traces``), with ``scopeSpans`` or the
    older ``instrumentationLibrarySpans``."""
    batches = trace.get("batches") or (trace.get("trace") or {}).get("resourceSpans") or \
        trace.get("resourceSpans") or []
    counts: dict[str, int] = {}
    for batch in batches:
        name = str(_attributes((batch.get("resource") or {}).get("attributes") or []).get("service.name"))
        scopes = batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []
        counts[name] = counts.get(name, 0) + sum(len(scope.get("spans") or []) for scope in scopes)
    return counts


def trace_problems(trace: Mapping[str, Any], trace_id: str,
                   services: Iterable[str] = (USERS_SERVICE, NOTIFIER_SERVICE)) -> list[str]:
    """Problems with a trace: each of ``services`` has at least one span in it."""
    found = trace_services(trace)
    missing = [s for s in services if not found.get(s)]
    return [f"trace {trace_id} has no span from {', '.join(missing)} (spans by service: {found or 'none'})"] \
        if missing else []


def new_user(address: str) -> dict[str, str]:
    """The body of the user to create (a password only this run knows)."""
    return {"email": address, "name": "E2E Welcome", "password": secrets.token_urlsafe(18), "role": "user"}


def create_user(url: str, headers: Mapping[str, str], trace_id: str,
                post: Callable[..., Any] = requests.post) -> str:
    """Create a new user at ``url`` in trace ``trace_id`` (sampled); return its address."""
    address = f"e2e-{secrets.token_hex(6)}@example.com"
    response = post(f"{url}/api/v1/users", json=new_user(address), timeout=30,
                    headers={**headers, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    if response.status_code != 201:
        raise SystemExit(f"POST {url}/api/v1/users answered {response.status_code}: {response.text[:500]}")
    print(f"e2e: created {address} through {url}, trace {trace_id}", flush=True)
    return address


def check(url: str, headers: Mapping[str, str], mailpit: str, tempo: str, wait: float = 240.0) -> list[str]:
    """Create a user through ``url``; return the problems with its email in ``mailpit`` and its
    trace in ``tempo`` (both base URLs, port-forwarded)."""
    trace_id = secrets.token_hex(16)
    address = create_user(url, headers, trace_id)

    def get(base: str, path: str, **params: str) -> Any:
        response = requests.get(f"{base}{path}", params=params, timeout=10)
        if response.status_code == 404:  # Tempo: not (yet) found
            return {}
        response.raise_for_status()
        return response.json()

    problems = poll("mail", lambda: welcome_problems(
        get(mailpit, "/api/v1/search", query=search_query(address)), address), wait)
    # The collector batches and Tempo ingests: the trace appears some seconds after the email.
    problems += poll("trace", lambda: trace_problems(get(tempo, f"/api/traces/{trace_id}"), trace_id), wait)
    print(f"e2e: welcome email to {address} and trace {trace_id}: {len(problems)} problems", flush=True)
    return problems

"""The emails: plain text plus HTML, each naming the service, the time (UTC) and what to do if
the change was not made by the user. One template per event type; ``user.deleted`` has none."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

TEMPLATES = {
    "user.created": "welcome",
    "user.password_changed": "password_changed",
    "user.email_changed": "email_changed",
    "user.role_changed": "role_changed",
}


@dataclass(frozen=True)
class Email:
    template: str
    recipient: str
    subject: str
    text: str
    html: str


def parse_time(value: str) -> datetime:
    """An event's ``occurred_at`` (ISO 8601 with Z) as an aware datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("occurred_at has no time zone")
    return moment


def render(event: dict[str, Any], service: str, support: str) -> Email | None:
    """The email for ``event``, None for a type that sends none; KeyError/ValueError when the
    event lacks what its type must carry."""
    template = TEMPLATES.get(event["type"])
    if template is None:
        return None
    data = event["data"]
    when = parse_time(event["occurred_at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    name = str(data["name"])
    if template == "welcome":
        recipient = data["email"]
        subject = f"Welcome to {service}"
        lines = [f"An account for {data['email']} was created on {service} at {when}, "
                 f"with the role {data['role']}."]
        not_you = f"If you did not expect this account, contact {support}."
    elif template == "password_changed":
        recipient = data["email"]
        subject = f"Your {service} password was changed"
        lines = [f"The password of your {service} account was changed at {when}."]
        not_you = f"If you did not change it, contact {support} at once: someone else may have your account."
    elif template == "email_changed":
        recipient = data["old_email"]  # the old address: the owner hears of it even if taken over
        subject = f"Your {service} sign-in email was changed"
        lines = [f"The sign-in email of your {service} account was changed from {data['old_email']} "
                 f"to {data['new_email']} at {when}."]
        not_you = f"If you did not change it, contact {support} at once: someone else may have your account."
    else:  # role_changed
        recipient = data["email"]
        granted = data["new_role"] == "admin"
        subject = f"Your {service} role was {'granted' if granted else 'changed'}"
        lines = [f"Your role on {service} changed from {data['old_role']} to {data['new_role']} at {when}."]
        not_you = f"If you did not expect this, contact {support}."
    if not isinstance(recipient, str) or "@" not in recipient:
        raise ValueError("the event names no recipient address")
    text = "\n\n".join([f"Hello {name},", *lines, not_you, f"-- {service}"]) + "\n"
    html = ("<!doctype html><html><body>"
            f"<p>Hello {escape(name)},</p>"
            + "".join(f"<p>{escape(line)}</p>" for line in lines)
            + f"<p><strong>{escape(not_you)}</strong></p><p>&mdash; {escape(service)}</p></body></html>")
    return Email(template, recipient, subject, text, html)

"""What the notifier's tests share: a real SMTP server (aiosmtpd) that can refuse or be stopped,
events published as the users service's relay publishes them, and bounded waits."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pika
from aiosmtpd.controller import Controller

from app.platform.messaging import EVENTS_EXCHANGE, declare_topology


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    """Poll ``condition`` until it is truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Catcher:
    """aiosmtpd handler: keeps every accepted message; ``refuse`` maps a recipient to a reply."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.refuse: dict[str, str] = {}
        self.lock = threading.Lock()
        # The MAIL command numbered hold_at (from 1) waits until ``release`` is set, then is
        # refused: a consumer can be caught mid-send, before the server accepted anything.
        self.hold_at: int | None = None
        self.mails = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self.data_delay = 0.0  # seconds the server takes before accepting a message

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        with self.lock:
            self.mails += 1
            number = self.mails
        if number == self.hold_at:
            self.held.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
            return "421 4.3.0 Closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        reply = self.refuse.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def by_message_id(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.lock:
            for message in self.messages:
                counts[message["Message-ID"]] = counts.get(message["Message-ID"], 0) + 1
        return counts


class SmtpServer:
    """A real SMTP server on a fixed port, which can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.catcher = Catcher()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.catcher, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp+plain://127.0.0.1:{self.port}"


def make_event(kind: str = "user.created", user_id: int = 7, **data: Any) -> dict[str, Any]:
    defaults: dict[str, dict[str, Any]] = {
        "user.created": {"email": f"user{user_id}@example.com", "name": "Ada", "role": "user"},
        "user.password_changed": {"email": f"user{user_id}@example.com", "name": "Ada"},
        "user.email_changed": {"old_email": f"old{user_id}@example.com",
                               "new_email": f"new{user_id}@example.com", "name": "Ada"},
        "user.role_changed": {"email": f"user{user_id}@example.com", "name": "Ada", "old_role": "user",
                              "new_role": "admin"},
        "user.deleted": {"email": f"user{user_id}@example.com", "name": "Ada"},
    }
    return {"version": 1, "id": str(uuid.uuid4()), "type": kind,
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "user_id": user_id, "data": {**defaults[kind], **data}}


class Publisher:
    """Publishes as the relay does: persistent, confirmed, mandatory, message_id = event id."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        declare_topology(self.channel)
        self.channel.confirm_delivery()

    def event(self, event: dict[str, Any], headers: dict[str, Any] | None = None) -> None:
        self.raw(json.dumps(event).encode(), event["type"], event["id"], headers)

    def raw(self, body: bytes, routing_key: str, message_id: str | None,
            headers: dict[str, Any] | None = None) -> None:
        self.channel.basic_publish(EVENTS_EXCHANGE, routing_key, body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=message_id, headers=headers or {}),
            mandatory=True)

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def get(self, queue: str) -> tuple[Any, Any, bytes] | None:
        method, props, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else (method, props, body)

    def purge(self, *queues: str) -> None:
        for queue in queues:
            self.channel.queue_purge(queue)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

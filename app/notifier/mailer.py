"""Sending one email with smtplib, TLS mode explicit (SMTP_URL), every operation bounded by
SMTP_TIMEOUT_SECONDS, certificates verified (``ssl.create_default_context``), and each failure
classified: ``TemporaryFailure`` is retried later, ``PermanentFailure`` goes to the dead letters.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from .config import NotifierConfig
from .templates import Email


class TemporaryFailure(Exception):
    """Worth retrying: the server is down, busy (4xx) or the connection broke."""


class PermanentFailure(Exception):
    """Retrying cannot help: the server refused the message or recipient for good (5xx)."""


def message_id(event_id: str, mail_from: str) -> str:
    """The same Message-ID for every attempt at one event: a resend after a crash between the
    server's acceptance and our record of it is recognisable as the same message."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "lookout.localhost"
    return f"<{event_id}.notifier@{domain}>"


def build(email: Email, settings: NotifierConfig, msgid: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.MAIL_FROM
    message["To"] = email.recipient
    message["Subject"] = email.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = msgid
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


def send(message: EmailMessage, settings: NotifierConfig) -> None:
    """Hand ``message`` to the SMTP server; returns once the server accepted it (250 after DATA)."""
    scheme, host, port = settings.smtp_scheme, settings.smtp_host, settings.smtp_port
    timeout = settings.SMTP_TIMEOUT_SECONDS
    try:
        if scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if scheme == "smtp":
                # No has_extn("starttls") guard: smtplib raises when the server does not offer
                # it, and skipping it would send everything in clear text (a downgrade).
                client.starttls(context=ssl.create_default_context())
            if settings.SMTP_USERNAME is not None and settings.SMTP_PASSWORD is not None:
                client.login(settings.SMTP_USERNAME, settings.SMTP_PASSWORD)
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(500 <= code < 600 for code in codes):
            raise PermanentFailure(f"recipient refused: {codes}") from exc
        raise TemporaryFailure(f"recipient deferred: {codes}") from exc
    except smtplib.SMTPAuthenticationError as exc:  # the settings are wrong: retry once fixed
        raise TemporaryFailure(f"authentication refused ({exc.smtp_code})") from exc
    except smtplib.SMTPResponseException as exc:
        if 500 <= exc.smtp_code < 600:
            raise PermanentFailure(f"refused with {exc.smtp_code}") from exc
        raise TemporaryFailure(f"deferred with {exc.smtp_code}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, TLS errors
        raise TemporaryFailure(f"{exc.__class__.__name__}: {exc}") from exc

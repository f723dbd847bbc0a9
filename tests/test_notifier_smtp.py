"""The SMTP side against real servers (aiosmtpd): each TLS mode works only with its own kind of
server, certificates are verified, a server that does not offer STARTTLS gets nothing, and a
server that never answers costs the timeout, not forever."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from notifier_support import Catcher, free_port

from app.notifier import mailer
from app.notifier.config import load_config
from app.notifier.templates import Email

EMAIL = Email("welcome", "ada@example.com", "Welcome", "Hello Ada\n", "<p>Hello Ada</p>")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


class Server:
    def __init__(self, **kwargs: Any) -> None:
        self.catcher = Catcher()
        self.port = free_port()
        self.controller = Controller(self.catcher, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> Server:
        self.controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.controller.stop()


def send(url: str, timeout: str = "5") -> None:
    settings = load_config({"LOOKOUT_ENV": "testing", "SMTP_URL": url, "SMTP_TIMEOUT_SECONDS": timeout})
    mailer.send(mailer.build(EMAIL, settings, "<e1.notifier@lookout.localhost>"), settings)


@pytest.fixture
def trusted(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The test certificate as the only trusted CA (ssl.create_default_context reads SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


def test_starttls_sends_over_a_verified_connection(certificate, trusted):
    with Server(tls_context=server_context(certificate), require_starttls=True) as server:
        send(f"smtp://127.0.0.1:{server.port}")
    assert [m["To"] for m in server.catcher.messages] == ["ada@example.com"]


def test_implicit_tls_sends_over_a_verified_connection(certificate, trusted):
    with Server(server_hostname="127.0.0.1", ssl_context=server_context(certificate)) as server:
        send(f"smtps://127.0.0.1:{server.port}")
    assert len(server.catcher.messages) == 1


def test_an_untrusted_certificate_sends_nothing(certificate):
    with Server(tls_context=server_context(certificate), require_starttls=True) as server:
        with pytest.raises(mailer.TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED"):
            send(f"smtp://127.0.0.1:{server.port}")
    assert server.catcher.messages == []


def test_starttls_refuses_a_server_that_does_not_offer_it():
    with Server() as server:  # plain SMTP, no STARTTLS advertised
        with pytest.raises(mailer.TemporaryFailure, match="STARTTLS"):
            send(f"smtp://127.0.0.1:{server.port}")
    assert server.catcher.messages == [] and server.catcher.mails == 0  # nothing sent in clear


def test_implicit_tls_against_a_plain_server_fails_fast():
    with Server() as server:
        started = time.monotonic()
        with pytest.raises(mailer.TemporaryFailure):
            send(f"smtps://127.0.0.1:{server.port}", timeout="3")
        assert time.monotonic() - started < 4
    assert server.catcher.messages == []


def test_a_server_that_never_answers_costs_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        with pytest.raises(mailer.TemporaryFailure, match="timed out"):
            send(f"smtp+plain://127.0.0.1:{listener.getsockname()[1]}", timeout="1")
        assert time.monotonic() - started < 2
    finally:
        for connection in accepted:
            connection.close()
        listener.close()



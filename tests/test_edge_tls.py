"""The service behind a real TLS-terminating proxy, as it runs behind the cluster's gateway.

HAProxy (Debian) stands in for Envoy: HTTPS on one port (TLS 1.2 or newer, a certificate from a
CA made here with openssl), X-Forwarded-For appended and X-Forwarded-Proto set, connecting to a
real gunicorn from an address of its own (127.0.0.2, the "gateway pod"); plain HTTP on another
port answering every request with a permanent redirect to HTTPS except the ACME challenge path.
The app runs with the stacks' settings: PROXY_TRUSTED_HOPS=1, PUBLIC_URL the https origin.
Clients connect from 127.0.0.3 and 127.0.0.4 (all of 127/8 is this machine), so the proxy sees
two clients and the app must too.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import add_admin, migrate, service_missing
from test_shutdown import CHEAP, PASSWORD

from loadtests.harness import GunicornServer, free_port, launch, stop, wait_until

pytestmark = pytest.mark.slow
HOST = "localhost"  # the certificate's name
GATEWAY, CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3", "127.0.0.4"
LOGINS_PER_MINUTE = 3
HAPROXY_CONFIG = """
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s
frontend https
    bind 127.0.0.1:{https} ssl crt {pem} ssl-min-ver TLSv1.2 alpn http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend lookout
frontend http
    bind 127.0.0.1:{http}
    acl acme path_beg /.well-known/acme-challenge/
    http-request redirect prefix https://{host}:{https} code 301 unless acme
    default_backend acme
backend lookout
    server app 127.0.0.1:{app} source {gateway}
backend acme
    http-request return status 200 content-type text/plain string "challenge-answer"
"""


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1: (CA, server PEM
    with its key, as HAProxy's ``crt`` takes it)."""
    if shutil.which("openssl") is None:
        service_missing("openssl is not installed (Debian package openssl)")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=lookout test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={HOST}")
    extensions = directory / "san.ext"
    extensions.write_text(f"subjectAltName=DNS:{HOST},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "1", "-extfile", str(extensions))
    pem = directory / "server.pem"
    pem.write_text(crt.read_text() + key.read_text())
    return ca, pem


class Edge:
    """HAProxy terminating TLS in front of one gunicorn."""

    def __init__(self, app_port: int, directory: Path) -> None:
        binary = shutil.which("haproxy") or (
            "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if binary is None:
            service_missing("haproxy is not installed (Debian package haproxy)")
        self.ca, pem = make_certificates(directory)
        self.https_port, self.http_port = free_port(), free_port()
        self.origin = f"https://{HOST}:{self.https_port}"
        config = directory / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(https=self.https_port, http=self.http_port, pem=pem,
                                                host=HOST, app=app_port, gateway=GATEWAY))
        self.command = [binary, "-db", "-f", str(config)]
        self.log = directory / "haproxy.log"
        self.process: Any = None

    def __enter__(self) -> Edge:
        with self.log.open("wb") as log:
            self.process = launch(self.command, stdout=log, stderr=log)
        wait_until(self._listening, "HAProxy listening", timeout=30)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            stop(self.process, timeout=10)

    def _listening(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        for port in (self.https_port, self.http_port):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    def tls(self, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        if maximum is not None:
            with warnings.catch_warnings():  # the old versions are deprecated: that is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.maximum_version = maximum
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old versions
        return context

    def https(self, method: str, path: str, source: str = CLIENT_A, body: str | None = None,
              headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPSConnection(HOST, self.https_port, timeout=10, context=self.tls(),
                                                 source_address=(source, 0))
        return request(connection, method, path, body, headers)

    def http(self, path: str) -> http.client.HTTPResponse:
        return request(http.client.HTTPConnection(HOST, self.http_port, timeout=10,
                                                  source_address=(CLIENT_A, 0)), "GET", path)


def request(connection: http.client.HTTPConnection, method: str, path: str, body: str | None = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """Send one request and read the whole answer (``.data`` holds the body)."""
    headers = {"Content-Type": "application/json", **(headers or {})} if body else dict(headers or {})
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.data = response.read()  # type: ignore[attr-defined]
    connection.close()
    return response


def login(edge: Edge, source: str, forwarded_for: str | None = None) -> http.client.HTTPResponse:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return edge.https("POST", "/api/v1/auth/token", source, f'{{"email": "admin@example.com", "password": '
                      f'"{PASSWORD}"}}', headers)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Edge, GunicornServer]]:
    directory = Path(tempfile.mkdtemp(prefix="lookout-edge-"))
    database = tmp_path_factory.mktemp("edge-db") / "edge.db"
    url = f"sqlite:///{database}"
    migrate(url)
    add_admin(url)
    app_port = free_port()
    try:
        proxy = Edge(app_port, directory)
        env = {"DATABASE_URL": url, **CHEAP, "RATE_LIMIT_LOGIN": f"{LOGINS_PER_MINUTE} per minute",
               "PROXY_TRUSTED_HOPS": "1", "PROXY_TRUSTED_ADDRESSES": f"{GATEWAY}/32",
               "PUBLIC_URL": proxy.origin}
        with GunicornServer(env, workers=1, threads=4, port=app_port, ready_path="/livez") as server, proxy:
            yield proxy, server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_https_answers_with_hsts(edge):
    proxy, _ = edge
    answer = proxy.https("GET", "/readyz")
    assert answer.status == 200
    assert answer.getheader("Strict-Transport-Security", "").startswith("max-age=")


def test_tls_below_1_2_is_refused(edge):
    proxy, _ = edge
    def handshake(version: ssl.TLSVersion) -> str | None:
        with socket.create_connection(("127.0.0.1", proxy.https_port), timeout=10) as raw:
            with proxy.tls(maximum=version).wrap_socket(raw, server_hostname=HOST) as wrapped:
                return wrapped.version()

    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError):
            handshake(old)


@pytest.mark.parametrize("path", ["/", "/api/v1/users?page=2&per_page=1", "/docs"])
def test_http_redirects_permanently_to_https(edge, path):
    proxy, _ = edge
    answer = proxy.http(path)
    assert answer.status in (301, 308)
    assert answer.getheader("Location") == f"{proxy.origin}{path}"


def test_acme_challenge_is_not_redirected(edge):
    proxy, _ = edge
    answer = proxy.http("/.well-known/acme-challenge/some-token")
    assert (answer.status, answer.data) == (200, b"challenge-answer")


def test_links_are_https(edge):
    proxy, _ = edge
    token = login(proxy, CLIENT_B)
    assert token.status == 200, token.data
    auth = {"Authorization": f"Bearer {json.loads(token.data)['access_token']}"}
    created = proxy.https("POST", "/api/v1/users", CLIENT_B, '{"email": "edge@example.com", "name": "Edge", '
                          '"password": "a long enough password"}', auth)
    assert created.status == 201, created.data
    assert created.getheader("Location", "").startswith(f"{proxy.origin}/api/v1/users/")
    page = proxy.https("GET", "/api/v1/users?per_page=1", CLIENT_B, headers=auth)
    assert page.status == 200, page.data
    links = json.loads(page.data)["pagination"]
    assert links["next"].startswith(f"{proxy.origin}/api/v1/users?"), links


def test_rate_limit_counts_clients_not_the_proxy_and_not_what_they_claim(edge):
    """Client A spends its login budget while claiming a new address each time (the proxy
    appends the real one, the app takes the last entry); client B, behind the same proxy, still
    has its own. Then, straight to gunicorn from outside PROXY_TRUSTED_ADDRESSES, a forged
    header is ignored: the requests count for the real peer."""
    proxy, server = edge
    answers = [login(proxy, CLIENT_A, forwarded_for=f"198.51.100.{n}").status
               for n in range(LOGINS_PER_MINUTE + 1)]
    assert answers == [200] * LOGINS_PER_MINUTE + [429]
    assert login(proxy, CLIENT_A).status == 429
    assert login(proxy, "127.0.0.5").status == 200  # another client of the proxy: its own budget

    direct = [request(http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                                 source_address=("127.0.0.6", 0)),
                      "POST", "/api/v1/auth/token",
                      f'{{"email": "admin@example.com", "password": "{PASSWORD}"}}',
                      {"X-Forwarded-For": f"203.0.113.{n}", "X-Forwarded-Proto": "https"}).status
              for n in range(LOGINS_PER_MINUTE + 1)]
    assert direct == [200] * LOGINS_PER_MINUTE + [429]

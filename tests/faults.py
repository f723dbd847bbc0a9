"""Faults for tests, on 127.0.0.1 only: a TCP proxy that can cut a connection, a throwaway
PostgreSQL cluster and a Redis server of the test's own, all stopped by PID.

Usage:
    with PostgresCluster() as pg, TCPProxy(pg.port) as proxy:
        url = pg.url(port=proxy.port)      # the app talks to PostgreSQL through the proxy
        proxy.cut()                        # bytes are accepted and never answered
        proxy.restore()
        pg.stop()                          # a crash: pg_ctl stop -m immediate
        pg.start()

Environment: PG_BINDIR (the PostgreSQL server binaries; found under /usr/lib/postgresql
otherwise), REDIS_SERVER (the redis-server binary; found on PATH otherwise).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from loadtests.harness import free_port, launch, record, wait_until


class TCPProxy:
    """Forward 127.0.0.1:<port> to an upstream port; ``cut()`` stops every byte both ways.

    A cut proxy keeps accepting connections and reading what is sent (the kernel acknowledges
    it), but nothing reaches the other side: to the client it is a peer that never answers.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    def __enter__(self) -> TCPProxy:
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed = True
        self._open.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while not self._open.wait(0.2):  # hold the bytes while cut
                    if self._closed:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def postgres_bindir() -> str | None:
    """The directory of initdb and pg_ctl: PG_BINDIR, else the newest installed PostgreSQL."""
    candidates = (
        [os.environ["PG_BINDIR"]]
        if os.environ.get("PG_BINDIR")
        else sorted(glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/opt/homebrew/opt/postgresql@*/bin"))[
            ::-1
        ]
    )
    on_path = shutil.which("initdb")
    candidates += [str(Path(on_path).parent)] if on_path else []
    return next((c for c in candidates if os.path.exists(os.path.join(c, "initdb"))), None)


class PostgresCluster:
    """A PostgreSQL cluster in a temporary directory, on a free port, trust auth, fsync on.

    Run as the ``postgres`` account when the tests run as root (PostgreSQL refuses root).
    """

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lookout-pg-"))
        self.data = self.root / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            account = pwd.getpwnam(self.user)
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [os.path.join(self.bindir, args[0]), *args[1:]],
            check=True,
            timeout=timeout,
            capture_output=True,
            user=self.user,
            cwd=self.root,
        )

    def url(self, database: str = "postgres", port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        pid = self.postmaster_pid
        if pid is not None:  # pg_ctl starts it in a session of its own: the harness keeps its record
            record(pid, f"postgres -D {self.data} -p {self.port}")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash: no checkpoint, WAL replay on the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def __enter__(self) -> PostgresCluster:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        pid = self.postmaster_pid
        if pid is not None:
            try:
                self.stop()
            except (subprocess.SubprocessError, OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def mariadb_binaries() -> tuple[str, str] | None:
    """mariadbd and mariadb-install-db (Debian's mariadb-server), or None."""
    server = shutil.which("mariadbd") or next(
        (p for p in ("/usr/sbin/mariadbd", "/usr/libexec/mariadbd") if os.path.exists(p)), None)
    install = shutil.which("mariadb-install-db")
    return (server, install) if server and install else None


class MariaDBServer:
    """A MariaDB server in a temporary directory, on a free port, root without a password on
    127.0.0.1, durable commits (``innodb_flush_log_at_trx_commit=1``). The same interface as
    ``PostgresCluster``: ``stop("immediate")`` is a crash (SIGKILL; InnoDB recovers from its redo
    log on the next ``start``).

    Run as the ``mysql`` account when the tests run as root (mariadbd refuses root otherwise).
    """

    def __init__(self, binaries: tuple[str, str]) -> None:
        self.server, self.install = binaries
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lookout-mariadb-"))
        self.data = self.root / "data"
        self.user: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            self.user = "mysql"
            account = pwd.getpwnam(self.user)
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def url(self, database: str = "mysql", port: int | None = None) -> str:
        return f"mysql://root@127.0.0.1:{port or self.port}/{database}"

    def execute(self, statement: str) -> None:
        import pymysql

        with pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=5) as conn:
            with conn.cursor() as cursor:
                cursor.execute(statement)

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

    def start(self) -> None:
        command = [self.server, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                   "--bind-address=127.0.0.1", f"--socket={self.root / 'sock'}",
                   f"--pid-file={self.root / 'pid'}", f"--log-error={self.root / 'log'}",
                   "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                   "--innodb-flush-log-at-trx-commit=1"]
        if self.user:
            command.append(f"--user={self.user}")
        self.process = launch(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(self._answers, f"mariadbd on port {self.port} to answer")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        import pymysql

        assert self.process is not None and self.process.poll() is None, "mariadbd exited"
        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
            return True
        except pymysql.MySQLError:
            return False

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: SIGKILL, a crash; otherwise a clean shutdown (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill() if mode == "immediate" else self.process.terminate()
            self.process.wait(60)

    def __enter__(self) -> MariaDBServer:
        command = [self.install, "--no-defaults", f"--datadir={self.data}", "--skip-test-db",
                   "--auth-root-authentication-method=normal"]
        if self.user:
            command.append(f"--user={self.user}")
        subprocess.run(command, check=True, timeout=120, capture_output=True, cwd=self.root)
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A redis-server of the test's own on a free port, no persistence; ``kill()`` is an outage."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = launch(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(self._answers, f"redis-server on port {self.port} to answer PONG")
        except BaseException:
            self.kill()
            raise

    def _answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None, "redis-server exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL at once: an outage, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()


def redis_server_binary() -> str | None:
    return os.environ.get("REDIS_SERVER") or shutil.which("redis-server")


class BlackHole:
    """A port that accepts connections and never answers: the worst kind of collector outage."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1000)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()

    def _swallow(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self.accepted.append(self.listener.accept()[0])
            except OSError:
                continue

    def __enter__(self) -> BlackHole:
        threading.Thread(target=self._swallow, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.listener.close()
        for sock in self.accepted:
            sock.close()

"""Processes started in a session of their own, recorded, stopped by PID; free ports; polling.

Every process ``launch`` starts (or that ``record`` is told about) is remembered with its start
time, so ``outlived()`` can name any still running when the caller is done, and ``reap()`` can
kill them: the test suite fails a session that leaves one behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
PID_FILE = "HARNESS_PID_FILE"  # environment variable: also append each record to this file
PATIENCE = 120.0  # seconds a wait lasts when the thing it waits for never comes


@dataclasses.dataclass(frozen=True)
class Launched:
    pid: int  # also its process group: launch() starts each in a session of its own
    started: int  # clock ticks after boot (/proc/<pid>/stat): a reused pid has another
    command: str
    during: str  # the test that started it, when pytest says (PYTEST_CURRENT_TEST)


_launched: dict[tuple[int, int], Launched] = {}
_handed_out: set[int] = set()
_lock = threading.Lock()


def launch(command: Sequence[str | os.PathLike[str]], **popen: Any) -> subprocess.Popen[Any]:
    """Start ``command`` in a session of its own (Popen's keyword arguments otherwise) and record
    it; stop it with ``stop``."""
    process: subprocess.Popen[Any] = subprocess.Popen(command, start_new_session=True, **popen)
    record(process.pid, shlex.join(map(str, command)))
    return process


def record(pid: int, command: str) -> None:
    """Remember a process that leads its own process group (a daemon's pid, say), so that
    ``outlived`` reports it and its group while they run."""
    started = _start_time(pid)
    if started is None:  # gone already: without its start time its pid could match another's
        return
    entry = Launched(pid, started, command, os.environ.get("PYTEST_CURRENT_TEST", ""))
    with _lock:
        _launched[(entry.pid, entry.started)] = entry
        pid_file = os.environ.get(PID_FILE)
        if pid_file:
            with open(pid_file, "a") as out:  # one JSON line each: a command may hold newlines
                out.write(json.dumps(dataclasses.astuple(entry)) + "\n")


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> int | None:
    """SIGTERM the process; SIGKILL its process group if it outstays ``timeout``, and whatever
    of its group is left once it has gone (a child it did not stop). Return its exit code."""
    if process.poll() is not None:
        return process.returncode  # gone before: its pid may be another's by now, so hands off
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    # Reaped a moment ago (or still running): the group id cannot have been handed out again.
    _kill_group(process.pid)
    process.wait(10)
    return process.returncode


def outlived() -> list[tuple[int, str]]:
    """(pid, what) of every recorded process, or member of its group, still running: its command
    line, and the test that started it."""
    with _lock:
        entries = list(_launched.values())
        pid_file = os.environ.get(PID_FILE)
    if pid_file and os.path.exists(pid_file):
        entries += [Launched(*json.loads(line)) for line in Path(pid_file).read_text().splitlines()]
    # A leader still running with another start time is a reused pid: not ours. A group outlives
    # its leader, and its id is not handed out again while it has members.
    groups = {e.pid: e for e in entries if _start_time(e.pid) in (None, e.started)}
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            try:
                group = pid if pid in groups else os.getpgid(pid)  # a recorded daemon may lead none
            except (ProcessLookupError, PermissionError):
                continue
            if group in groups and _state(pid) != "Z" and (_start_time(pid) or 0) >= groups[group].started:
                what = _command_line(pid) if group == pid else f"{_command_line(pid)} (in group {group})"
                during = groups[group].during
                alive.append((pid, f"{what}  [started by {during}]" if during else what))
    return sorted(alive)


def reap(timeout: float = 10) -> list[tuple[int, str]]:
    """SIGKILL what ``outlived`` finds and wait (up to ``timeout``) for it to go; return what it
    found."""
    found = outlived()
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        wait_until(lambda: not outlived(), "the outlived processes to die", timeout)
    except TimeoutError:
        pass  # unkillable for now (uninterruptible sleep): reported all the same
    return found


def free_port() -> int:
    """A port free on 127.0.0.1 now, never one this process was given before.

    The kernel may return the same ephemeral port to two bind(0) calls in a row (here about one
    pair in 18,000): a server and its metrics port, both chosen before gunicorn binds either, then
    collide. The port stays free only until someone binds it, so callers bind it soon after.
    """
    with _lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def wait_until(check: Callable[[], T], what: str, timeout: float = PATIENCE,
               interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy and return that; raise TimeoutError
    naming ``what`` after ``timeout`` seconds. The bound is patience, not a measurement: it only
    ends a wait for something that is never coming."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:g}s")
        time.sleep(interval)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing is left in the group


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # after "pid (command)": the command may hold spaces


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None  # field 22 of stat(5)


def _state(pid: int) -> str:
    fields = _stat(pid)
    return fields[0] if fields else "X"


def _command_line(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    return shlex.join(w.decode(errors="replace") for w in words)

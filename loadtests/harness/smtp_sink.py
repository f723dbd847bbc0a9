"""An SMTP sink for load runs: aiosmtpd on 127.0.0.1, every accepted message one JSON line.

Usage:
    python -m loadtests.harness.smtp_sink --port 2525 --out reports/service/emails.jsonl

Each line is ``{"to": [...], "subject": ..., "message_id": ...}``, written and flushed when the
message is accepted, so a reader sees it at once. It runs until SIGTERM or SIGINT; the harness
starts it with ``launch`` and stops it by PID (``EventPipeline`` in events.py).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

from aiosmtpd.controller import Controller


class Recorder:
    """aiosmtpd handler: accepts every message and appends its recipients to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        line = json.dumps({"to": list(envelope.rcpt_tos), "subject": str(message["Subject"] or ""),
                           "message_id": str(message["Message-ID"] or "")})
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="Port on 127.0.0.1")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file of accepted messages")
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with args.out.open("a", encoding="utf-8") as out:
        controller = Controller(Recorder(out), hostname="127.0.0.1", port=args.port)
        controller.start()  # returns once the server answers on its port
        print(f"smtp sink on 127.0.0.1:{args.port}", flush=True)
        try:
            done.wait()
        finally:
            controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The app, failing every third API request with a 500: a release the canary analysis must abort.

The failure goes through the app itself (a ``before_request`` answering its own problem+json), so
the app's metrics count it like any server error, as a real regression's would be counted.
"""

from __future__ import annotations

import itertools

from flask import Response, request

from app.errors import problem
from app.wsgi import app

_count = itertools.count()


@app.before_request
def fail_one_in_three() -> Response | None:
    """Answer one API request in three with a 500; probes and /metrics stay healthy."""
    if request.path.startswith("/api/") and next(_count) % 3 == 0:
        return problem(500, "A deliberately faulty release (the e2e canary test).")
    return None

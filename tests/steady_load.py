"""Locust users at a fixed rate, for tests that compare what the server counted with what was sent.

    locust -f tests/steady_load.py --headless -u 10 -r 10 -t 40s --host URL --csv PREFIX
    LOCUST_PATH=/api/v1/auth/token LOCUST_RATE=2  (each user's requests per second; default 3)

Each user sends ``LOCUST_RATE`` requests a second to ``LOCUST_PATH`` (GET, or POST with the
credentials in LOCUST_EMAIL / LOCUST_PASSWORD for the token endpoint), so -u users send
users x rate; the stats CSVs say what was really sent. Any answer counts: the tests compare rates
and latencies, not outcomes.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant_throughput, task

PATH = os.environ.get("LOCUST_PATH", "/api/v1/users/1")
RATE = float(os.environ.get("LOCUST_RATE", "3"))


class Steady(FastHttpUser):
    wait_time = constant_throughput(RATE)
    network_timeout = 10.0

    @task
    def one(self) -> None:
        if PATH.endswith("/auth/token"):
            body = {"email": os.environ.get("LOCUST_EMAIL", ""),
                    "password": os.environ.get("LOCUST_PASSWORD", "")}
            with self.client.post(PATH, json=body, catch_response=True) as response:
                response.success()
        else:
            with self.client.get(PATH, catch_response=True) as response:
                response.success()

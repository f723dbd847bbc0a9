"""Where alerts go: the Alertmanager config of infra/components/alerting.py, checked by amtool and
run by a real Alertmanager on 127.0.0.1 that notifies stand-in PagerDuty and Slack endpoints.

Needs Alertmanager and amtool (Debian package prometheus-alertmanager; .ci/run installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import service_missing

from dashboards import alert_names, rule_files, rule_groups
from infra.components.alerting import PAGERDUTY_KEY, RECEIVERS_SECRET, SLACK_KEY, alertmanager_config
from loadtests.harness import free_port, launch, stop, wait_until

ROUTING_KEY = "0123456789abcdef0123456789abcdef"


def _binary(*names: str) -> str:
    for name in names:
        if path := shutil.which(name):
            return path
    service_missing(f"{names[0]} is not installed (Debian package prometheus-alertmanager)")
    raise AssertionError  # unreachable: service_missing skips or fails


@pytest.fixture(scope="module")
def amtool() -> str:
    return _binary("amtool")


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def receivers_for(amtool: str, config: Path, labels: dict[str, str]) -> set[str]:
    """The receivers Alertmanager's routing tree picks for an alert with ``labels`` (amtool)."""
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={config}",
         *(f"{k}={v}" for k, v in labels.items())],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.strip().split(","))


@pytest.mark.parametrize(("pagerduty", "slack"), [(True, True), (True, False), (False, True), (False, False)])
def test_amtool_accepts_the_config_with_and_without_each_receiver(amtool, tmp_path, pagerduty, slack):
    heartbeat = "https://hc-ping.com/0f0e0d0c" if pagerduty else None
    config = write_config(tmp_path, alertmanager_config(pagerduty=pagerduty, slack=slack,
                                                        heartbeat_url=heartbeat))
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(config.read_text())["receivers"]}
    assert ("pagerduty_configs" in receivers["pager"]) is pagerduty
    assert ("slack_configs" in receivers["chat"]) is slack
    assert ("webhook_configs" in receivers["heartbeat"]) is pagerduty


def test_amtool_refuses_a_broken_config(amtool, tmp_path):
    config = alertmanager_config(pagerduty=True, slack=True)
    config["route"]["routes"].append({"matchers": ['severity=~"page'], "receiver": "chat"})  # unclosed quote
    result = subprocess.run([amtool, "check-config", str(write_config(tmp_path, config))],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def _alerts() -> list[tuple[str, dict[str, str]]]:
    return [(rule["alert"], rule.get("labels") or {})
            for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def test_every_alert_of_the_rule_files_reaches_someone(amtool, tmp_path):
    """The contract between the rule files and the routes: no alert's severity falls through to the
    receiver that drops; pages reach the pager and the chat channel, tickets the chat channel."""
    config = write_config(tmp_path, alertmanager_config(pagerduty=True, slack=True))
    alerts = _alerts()
    assert len(alerts) >= 10 and rule_files()
    for name, labels in alerts:
        expected = {"page": {"pager", "chat"}, "ticket": {"chat"}}.get(labels.get("severity", ""))
        assert expected, f"{name}: severity {labels.get('severity')!r} is neither page nor ticket"
        assert receivers_for(amtool, config, {"alertname": name, **labels}) == expected, name


def test_an_unknown_severity_is_dropped_and_the_watchdog_is_a_heartbeat(amtool, tmp_path):
    config = write_config(tmp_path, alertmanager_config(pagerduty=True, slack=True))
    assert receivers_for(amtool, config, {"alertname": "LookoutSomething", "severity": "urgent"}) == {"null"}
    assert receivers_for(amtool, config, {"alertname": "InfoInhibitor", "severity": "none"}) == {"null"}
    assert receivers_for(amtool, config, {"alertname": "Watchdog", "severity": "none"}) == {"heartbeat"}
    # kube-prometheus-stack's own rules say critical and warning: the chat channel, no page
    assert receivers_for(amtool, config, {"alertname": "KubeNodeNotReady", "severity": "warning"}) == {"chat"}
    assert receivers_for(amtool, config, {"alertname": "KubeletDown", "severity": "critical"}) == {"chat"}


def test_muted_alerts_reach_nobody_and_the_rest_route_as_before(amtool, tmp_path):
    """A stack's alertsMuted: a ticket and a page both muted; every other alert keeps its receivers."""
    muted = ("LookoutNoTraffic", "LookoutNoTargetUp")
    assert set(muted) <= set(alert_names())
    (tmp_path / "muted").mkdir()
    config = write_config(tmp_path / "muted", alertmanager_config(pagerduty=True, slack=True, muted=muted))
    plain = write_config(tmp_path, alertmanager_config(pagerduty=True, slack=True))
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    for name, labels in _alerts():
        got = receivers_for(amtool, config, {"alertname": name, **labels})
        if name in muted:
            assert got == {"null"}, name
        else:
            assert got == receivers_for(amtool, plain, {"alertname": name, **labels}), name


class Sink:
    """An HTTP server on 127.0.0.1 that stands in for PagerDuty, Slack and the heartbeat's dead
    man's switch: it keeps every POST."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, json.loads(body)))
                self.send_response(202 if self.path == "/pagerduty" else 200)
                self.end_headers()
                self.wfile.write(b"{}" if self.path == "/pagerduty" else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def titles(self, path: str) -> list[str]:
        """The alert name of each notification that reached ``path``, in order."""
        found = []
        for where, body in list(self.received):
            if where != path:
                continue
            if path == "/heartbeat":  # a plain webhook: Alertmanager's own payload
                found += [f"[{body['status'].upper()}] {a['labels']['alertname']}" for a in body["alerts"]]
            else:
                text = body["payload"]["summary"] if path == "/pagerduty" else body["attachments"][0]["title"]
                found.append(text.split(":")[0])
        return found


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, Sink]]:
    """A real Alertmanager with Lookout's config, its secrets as files, its receivers pointed at a Sink."""
    binary = _binary("prometheus-alertmanager", "alertmanager")
    sink = Sink()
    sink.thread.start()
    secrets = tmp_path / "secrets" / RECEIVERS_SECRET
    secrets.mkdir(parents=True)
    (secrets / PAGERDUTY_KEY).write_text(ROUTING_KEY)
    (secrets / SLACK_KEY).write_text(f"{sink.url}/slack")
    config = alertmanager_config(pagerduty=True, slack=True, heartbeat_url=f"{sink.url}/heartbeat",
                                 secrets_dir=str(tmp_path / "secrets"))
    config["global"]["pagerduty_url"] = f"{sink.url}/pagerduty"
    # Seconds, not the production half-minute and minutes: the grouping is what is under test.
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    for route in config["route"]["routes"]:  # the heartbeat's too: every group flushes each second
        if "group_interval" in route:
            route["group_interval"] = "1s"
    path = write_config(tmp_path, config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:  # at debug level: each aggregation group's flushes are logged
        process = launch(
            [binary, f"--config.file={path}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
            stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, "Alertmanager ready", interval=0.2)
        yield url, sink
    finally:
        stop(process, timeout=10)
        sink.server.shutdown()
        sink.server.server_close()


def flushes(log: Path) -> Counter[str]:
    """How many times each aggregation group has been flushed (Alertmanager's debug log)."""
    return Counter(re.findall(r'aggrGroup=("(?:[^"\\]|\\.)*"|\S+) .*msg=flushing', log.read_text()))


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels},
            "annotations": {"summary": f"{name} summary", "description": f"{name} description",
                            "runbook": f"{name} runbook", "runbook_url": f"https://runbooks.example/{name}"}}


def test_alertmanager_pages_tickets_and_holds_back_what_a_page_covers(alertmanager, tmp_path):
    url, sink = alertmanager
    log = tmp_path / "alertmanager.log"
    alerts = [
        _alert("LookoutAvailabilityBurn1h", severity="page", slo="availability"),
        _alert("LookoutAvailabilityBurn1d", severity="ticket", slo="availability"),  # covered by the page
        _alert("LookoutLatencyBurn1d", severity="ticket", slo="latency"),  # another SLO: not covered
        _alert("LookoutNoTargetUp", severity="page", job="lookout-metrics"),
        _alert("LookoutTargetDown", severity="ticket", job="lookout-metrics", pod="lookout-1"),  # covered
        _alert("Watchdog", severity="none"),
    ]
    assert requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200

    pages = {"[FIRING] LookoutAvailabilityBurn1h", "[FIRING] LookoutNoTargetUp"}
    chat = pages | {"[FIRING] LookoutLatencyBurn1d"}
    heartbeat = {"[FIRING] Watchdog"}
    wait_until(lambda: pages <= set(sink.titles("/pagerduty")) and chat <= set(sink.titles("/slack"))
               and heartbeat <= set(sink.titles("/heartbeat")), "the expected notifications", interval=0.2)
    # A group sends what it sends in its first flush, and flushes one at a time: once every
    # group has begun its second, anything not held back has been sent.
    groups = len(requests.get(f"{url}/api/v2/alerts/groups", timeout=10).json())
    wait_until(lambda: sum(n >= 2 for n in flushes(log).values()) >= groups,
               f"each of the {groups} alert groups flushed twice", interval=0.2)
    assert sorted(sink.titles("/pagerduty")) == sorted(pages)
    assert sorted(sink.titles("/slack")) == sorted(chat)
    assert sink.titles("/heartbeat") == ["[FIRING] Watchdog"]  # once: its repeat is a minute away

    event = next(body for path, body in sink.received if path == "/pagerduty")
    assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
    assert event["payload"]["severity"] == "critical"
    details = event["payload"]["custom_details"]
    assert details["runbook"].endswith("runbook") and "firing" in details  # beside Alertmanager's own
    assert details["runbook_url"].startswith("https://runbooks.example/Lookout")
    message = next(body for path, body in sink.received if path == "/slack")["attachments"][0]
    assert "description" in message["text"] and "Runbook: " in message["text"]
    assert message["title_link"] == "https://runbooks.example/" + message["title"].split()[1].rstrip(":")

    held = requests.get(f"{url}/api/v2/alerts", timeout=10).json()
    state = {alert["labels"]["alertname"]: alert["status"] for alert in held}
    assert state["LookoutAvailabilityBurn1d"]["inhibitedBy"] and state["LookoutTargetDown"]["inhibitedBy"]
    assert not state["LookoutLatencyBurn1d"]["inhibitedBy"]

"""Where alerts go: Alertmanager's routes, receivers and inhibitions, as one config mapping.

Pages (``severity: page``: the SLO burning fast, no pod up) go to PagerDuty and, as a copy, to
the chat channel; tickets (``ticket``) and kube-prometheus-stack's own ``critical`` and
``warning`` alerts to the chat channel only: someone is woken for what users feel, not for a
cause the cluster may absorb. The stack's ``Watchdog`` (always firing while Prometheus and
Alertmanager work) goes to a heartbeat URL every minute, a dead man's switch that raises the
alarm elsewhere when the pings stop; ``InfoInhibitor`` and ``info`` alerts go nowhere. A
receiver whose secret is not set drops what reaches it, so the tree is the same on every stack.
A stack may mute some alerts by name (``muted``: a stack without clients has no use for
``LookoutNoTraffic``): they go nowhere there, and Alertmanager and Grafana still show them.

Secrets stay out of the config: Alertmanager reads the PagerDuty routing key and the Slack
webhook URL from files (``routing_key_file``, ``api_url_file``), which the operator mounts from a
Secret (``alertmanagerSpec.secrets``). The heartbeat URL is the exception: a webhook reads its URL
from a file only from Alertmanager 0.26, newer than the one the tests run, so it is written into
the config (which the chart keeps in a Secret); it can only claim the stack is alive. The Go
templates in the texts are Alertmanager's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

RECEIVERS_SECRET = "alertmanager-receivers"  # noqa: S105 - a Secret's name; mounted at SECRETS_DIR/<name>/<key>
SECRETS_DIR = "/etc/alertmanager/secrets"
PAGERDUTY_KEY = "pagerduty-routing-key"
SLACK_KEY = "slack-webhook-url"
CHAT = "page|ticket|critical|warning"  # kube-prometheus-stack's rules say critical and warning
BURN_RATE_ALERTS = "Lookout.+Burn.+"
# Alerts that a service with no pod up raises anyway: noise next to LookoutNoTargetUp.
AFTER_NO_TARGET = ("LookoutTargetDown", "LookoutReadinessFailing", "LookoutNoTraffic", "LookoutSaturated")



@dataclass(frozen=True)
class AlertingArgs:
    """Where a stack's alerts go: the receivers' secrets (None drops what would go there), and the
    alert names routed to no receiver there."""

    pagerduty_routing_key: pulumi.Input[str] | None = None
    slack_webhook_url: pulumi.Input[str] | None = None
    heartbeat_url: pulumi.Input[str] | None = None
    muted: Sequence[str] = ()


_SUMMARY = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}: {{ .CommonAnnotations.summary }}"
_DETAILS = ("{{ range .Alerts }}{{ .Annotations.description }}\n"
            "Runbook: {{ .Annotations.runbook }}\n{{ end }}")


def alertmanager_config(*, pagerduty: bool, slack: bool, heartbeat_url: pulumi.Input[str] | None = None,
                        muted: Sequence[str] = (), secrets_dir: str = SECRETS_DIR) -> dict[str, Any]:
    """Return Alertmanager's configuration.

    ``pagerduty`` and ``slack`` say whether the receivers' secrets exist (as files under
    ``secrets_dir/RECEIVERS_SECRET/``); a receiver without one has no integration and drops.
    ``heartbeat_url`` receives the Watchdog alert every minute; None drops it. Alerts named in
    ``muted`` reach no receiver, whatever their severity.
    """
    heartbeat: dict[str, Any] = {"name": "heartbeat"}
    if heartbeat_url is not None:
        heartbeat["webhook_configs"] = [{"url": heartbeat_url, "send_resolved": False}]
    files = f"{secrets_dir}/{RECEIVERS_SECRET}"
    pager: dict[str, Any] = {"name": "pager"}
    if pagerduty:
        pager["pagerduty_configs"] = [{
            "routing_key_file": f"{files}/{PAGERDUTY_KEY}", "send_resolved": True,
            "severity": "critical", "description": _SUMMARY,
            # beside Alertmanager's own details
            "details": {"runbook": "{{ .CommonAnnotations.runbook }}",
                        "runbook_url": "{{ .CommonAnnotations.runbook_url }}"},
        }]
    chat: dict[str, Any] = {"name": "chat"}
    if slack:
        chat["slack_configs"] = [{
            "api_url_file": f"{files}/{SLACK_KEY}", "send_resolved": True,
            "title": _SUMMARY, "title_link": "{{ .CommonAnnotations.runbook_url }}", "text": _DETAILS,
        }]
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "null",  # anything no route below claims
            # One notification per alert and SLO: the two SLOs' pages are separate incidents.
            "group_by": ["alertname", "namespace", "slo"],
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "24h",
            "routes": [
                {"matchers": ['alertname="Watchdog"'], "receiver": "heartbeat",
                 "group_wait": "0s", "group_interval": "1m", "repeat_interval": "1m"},
                {"matchers": ['alertname="InfoInhibitor"'], "receiver": "null"},
                *({"matchers": [f'alertname="{name}"'], "receiver": "null"} for name in muted),
                {"matchers": ['severity="page"'], "receiver": "pager", "repeat_interval": "4h",
                 "continue": True},  # and on to the chat channel, so the team sees pages too
                {"matchers": [f'severity=~"{CHAT}"'], "receiver": "chat"},
            ],
        },
        "inhibit_rules": [
            # A page for an SLO says it all: its slower ticket windows add nothing while it fires.
            {"source_matchers": [f'alertname=~"{BURN_RATE_ALERTS}"', 'severity="page"'],
             "target_matchers": [f'alertname=~"{BURN_RATE_ALERTS}"', 'severity="ticket"'],
             "equal": ["slo"]},
            {"source_matchers": ['alertname="LookoutNoTargetUp"'],
             "target_matchers": [f'alertname=~"{"|".join(AFTER_NO_TARGET)}"']},
            # kube-prometheus-stack's convention for its own rules: the worse one of a pair wins.
            {"source_matchers": ['severity="critical"'], "target_matchers": ['severity=~"warning|info"'],
             "equal": ["namespace", "alertname"]},
        ],
        "receivers": [{"name": "null"}, pager, chat, heartbeat],
    }

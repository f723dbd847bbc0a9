"""Exporters of the service's dependencies: postgres_exporter beside the database, redis_exporter
beside the rate-limit store.

The images are the same releases as the Debian packages the contract test runs
(tests/test_dependencies_live.py: prometheus-postgres-exporter 0.11.1, prometheus-redis-exporter
1.45.0), so every metric name the dashboards and alerts select was seen on a real /metrics. Moving
a pin here means moving the test's exporter to the same release (or checking the metric names of
the new one). The images are pinned by tag, like the store's, so checkov's digest check is skipped
with the reason (RELEASE_TAG_SKIPS).

Credentials reach the exporters as files, never as environment values or arguments:
postgres_exporter reads DATA_SOURCE_USER_FILE / DATA_SOURCE_PASS_FILE, redis_exporter its
``-redis.password-file`` (a JSON map from the store's address to its password).
"""

from __future__ import annotations

import json
from typing import Any

from infra.components.pods import Resources, container_security

POSTGRES_EXPORTER_IMAGE = "quay.io/prometheuscommunity/postgres-exporter:v0.11.1"
POSTGRES_EXPORTER_PORT = 9187
REDIS_EXPORTER_IMAGE = "oliver006/redis_exporter:v1.45.0"
REDIS_EXPORTER_PORT = 9121
EXPORTER_RESOURCES = Resources("10m", "100m", "32Mi", "64Mi")
CREDENTIALS_DIR = "/etc/exporter"


def _probes(port: str) -> dict[str, Any]:
    # /metrics would reach the server on every probe; the exporters' root page answers without it.
    check = {"httpGet": {"path": "/", "port": port}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {"readinessProbe": check, "livenessProbe": {**check, "failureThreshold": 3}}


def postgres_exporter(host: str, port: int, database: str, credentials_secret: str,
                      resources: Resources = EXPORTER_RESOURCES, sslmode: str = "require",
                      credentials_dir: str = CREDENTIALS_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """The exporter's container and its credentials volume (a basic-auth Secret: username, password).
    The server's TLS is the operator's (``require``: encrypted, its certificate not checked); the
    exporter only reads statistics views."""
    container = {
        "name": "postgres-exporter", "image": POSTGRES_EXPORTER_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": [f"--web.listen-address=:{POSTGRES_EXPORTER_PORT}"],
        "env": [
            {"name": "DATA_SOURCE_URI", "value": f"{host}:{port}/{database}?sslmode={sslmode}"},
            {"name": "DATA_SOURCE_USER_FILE", "value": f"{credentials_dir}/username"},
            {"name": "DATA_SOURCE_PASS_FILE", "value": f"{credentials_dir}/password"},
        ],
        "ports": [{"name": "metrics", "containerPort": POSTGRES_EXPORTER_PORT, "protocol": "TCP"}],
        **_probes("metrics"),
        "resources": resources.spec(), "securityContext": container_security(),
        "volumeMounts": [{"name": "exporter-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}],
    }
    volume = {"name": "exporter-credentials",
              "secret": {"secretName": credentials_secret, "defaultMode": 0o440}}
    return container, volume


def redis_password_file(password: str, port: int) -> str:
    """redis_exporter's password file: the store's address (as the exporter is told it) to its password."""
    return json.dumps({f"redis://localhost:{port}": password})


def redis_exporter(port: int, config_dir: str, resources: Resources = EXPORTER_RESOURCES) -> dict[str, Any]:
    """The sidecar's container: it scrapes the store in its own pod, the password from the mounted
    config Secret's ``exporter-passwords.json``."""
    return {
        "name": "redis-exporter", "image": REDIS_EXPORTER_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["-web.listen-address", f":{REDIS_EXPORTER_PORT}", "-redis.addr", f"redis://localhost:{port}",
                 "-redis.password-file", f"{config_dir}/exporter-passwords.json"],
        "ports": [{"name": "metrics", "containerPort": REDIS_EXPORTER_PORT, "protocol": "TCP"}],
        **_probes("metrics"),
        "resources": resources.spec(), "securityContext": container_security(),
        "volumeMounts": [{"name": "config", "mountPath": config_dir, "readOnly": True}],
    }

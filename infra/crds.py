"""Strict JSON schemas for the custom resources the program declares, for the schema gate.

kubernetes-validate carries the built-in API only, so ServiceMonitor, PrometheusRule
(prometheus-operator, monitoring.coreos.com/v1), Cluster and Database (CloudNativePG,
postgresql.cnpg.io/v1) are checked against these instead. Each schema admits exactly the
fields of the operator's CRD that this program uses, with their types and the CRD's own
constraints (required fields, enums, patterns), and refuses anything else, like
``kubernetes-validate --strict`` does for built-in kinds. Field names follow the operators'
CRD references; widen a schema when the program starts using another field.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_MONITORING = "monitoring.coreos.com/v1"
_STR = {"type": "string"}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                          r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|m|k|M|G|T)?$"}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_METADATA = _object({"name": _NAME, "namespace": _NAME, "labels": _STR_MAP, "annotations": _STR_MAP},
                    required=("name", "namespace"))
_SELECTOR = _object({
    "matchLabels": _STR_MAP,
    "matchExpressions": {"type": "array", "items": _object({
        "key": _STR, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": {"type": "array", "items": _STR}}, required=("key", "operator"))},
})
_RESOURCES = _object({"requests": _object({"cpu": _QUANTITY, "memory": _QUANTITY}),
                      "limits": _object({"cpu": _QUANTITY, "memory": _QUANTITY})})


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _object({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": _METADATA,
                    "spec": spec}, required=("apiVersion", "kind", "metadata", "spec"))


SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    (_MONITORING, "ServiceMonitor"): _resource(_MONITORING, "ServiceMonitor", _object({
        "jobLabel": _STR,
        "namespaceSelector": _object({"any": {"type": "boolean"},
                                      "matchNames": {"type": "array", "items": _STR}}),
        "selector": _SELECTOR,
        "podTargetLabels": {"type": "array", "items": _STR},
        "endpoints": {"type": "array", "minItems": 1, "items": _object({
            "port": _STR, "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
            "interval": _DURATION, "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"}})},
    }, required=("selector", "endpoints"))),
    (_MONITORING, "PrometheusRule"): _resource(_MONITORING, "PrometheusRule", _object({
        "groups": {"type": "array", "minItems": 1, "items": _object({
            "name": {"type": "string", "minLength": 1},
            "interval": _DURATION, "query_offset": _DURATION, "limit": {"type": "integer"},
            "labels": _STR_MAP,
            "partial_response_strategy": {"type": "string", "pattern": "(?i)^(abort|warn)?$"},
            "rules": {"type": "array", "items": {
                **_object({"record": _STR, "alert": _STR, "expr": {"type": ["string", "integer"]},
                           "for": _DURATION, "keep_firing_for": _DURATION, "labels": _STR_MAP,
                           "annotations": _STR_MAP}, required=("expr",)),
                "oneOf": [{"required": ["record"]}, {"required": ["alert"]}]}},
        }, required=("name",))},
    }, required=("groups",))),
    ("postgresql.cnpg.io/v1", "Cluster"): _resource("postgresql.cnpg.io/v1", "Cluster", _object({
        "instances": {"type": "integer", "minimum": 1},
        "imageName": _STR,
        "storage": _object({"size": _QUANTITY, "storageClass": _STR}, required=("size",)),
        "bootstrap": _object({"initdb": _object({
            "database": _STR, "owner": _STR, "secret": _object({"name": _NAME}, required=("name",))})}),
        "resources": _RESOURCES,
        "managed": _object({"roles": {"type": "array", "items": _object({
            "name": _STR, "ensure": {"enum": ["present", "absent"]}, "login": {"type": "boolean"},
            "inherit": {"type": "boolean"}, "passwordSecret": _object({"name": _NAME}, required=("name",)),
        }, required=("name",))}}),
    }, required=("instances",))),
    ("postgresql.cnpg.io/v1", "Database"): _resource("postgresql.cnpg.io/v1", "Database", _object({
        "cluster": _object({"name": _NAME}, required=("name",)),
        "name": _STR, "owner": _STR, "ensure": {"enum": ["present", "absent"]},
        "databaseReclaimPolicy": {"enum": ["delete", "retain"]},
    }, required=("cluster", "name", "owner"))),
}


# --- operators' own CRDs, vendored from their charts (infra/charts/crds/) --------------------------

CRDS_DIR = Path(__file__).resolve().parent / "charts" / "crds"
CLUSTER_SCOPED = {"GatewayClass", "ClusterIssuer"}  # their CRDs' scope: Cluster (no namespace)
_CLUSTER_METADATA = _object({"name": _NAME, "labels": _STR_MAP, "annotations": _STR_MAP}, required=("name",))
_TEMPLATE_LINE = re.compile(r"^\s*\{\{.*\}\}\s*$")
_PROSE = {"description"}


def crd_schemas(text: str) -> dict[str, dict[str, Any]]:
    """``{"group/version/Kind": openAPIV3Schema}`` of a CRD as a chart ships it (template lines dropped),
    for every served version, without descriptions."""
    doc = yaml.safe_load("\n".join(line for line in text.splitlines() if not _TEMPLATE_LINE.match(line)))
    kind, group = doc["spec"]["names"]["kind"], doc["spec"]["group"]
    return {f"{group}/{v['name']}/{kind}": _without_prose(v["schema"]["openAPIV3Schema"])
            for v in doc["spec"]["versions"] if v.get("served")}


def _without_prose(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_prose(v) for k, v in schema.items()
                if k not in _PROSE or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_without_prose(v) for v in schema]
    return schema


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists an object's fields (the API
    server would prune them silently; a misspelt field should fail here instead)."""
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (strict(v) if k not in ("properties", "patternProperties") else
               {name: strict(sub) for name, sub in v.items()}) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def vendored_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): strict schema}`` of every CRD vendored under infra/charts/crds/."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS_DIR.glob("*.json")):
        for key, schema in json.loads(path.read_text())["schemas"].items():
            group, version, kind = key.split("/")
            top = strict(schema)
            # metadata is `type: object` in a CRD; the API server checks it like any object's.
            top.setdefault("properties", {})["metadata"] = (
                _CLUSTER_METADATA if kind in CLUSTER_SCOPED else _METADATA)
            found[(f"{group}/{version}", kind)] = top
    return found

"""Building blocks every pod shares: labels, restricted security contexts, resources, scratch dirs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_AS_USER = 10001  # a high UID, clear of host users (and of the image's own numeric user, if any)
# checkov's image checks, for official images run by their release tag.
RELEASE_TAG_SKIPS = {
    "CKV_K8S_43": "the official image is pinned by version; the tag names the release",
    "CKV_K8S_15": "a release tag is never re-pushed: pulling it on each start only spends the rate limit",
}
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def app_labels(name: str, component: str) -> dict[str, str]:
    """Return the recommended app.kubernetes.io labels; name + component select a workload's pods."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "lookout",
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


def namespace_meta(name: str, restricted: bool = True) -> dict[str, Any]:
    labels = {**(RESTRICTED if restricted else {}), "app.kubernetes.io/part-of": "lookout"}
    return {"name": name, "labels": labels}


def pod_security() -> dict[str, Any]:
    """Pod-level context the restricted Pod Security Standard asks for."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,  # secret files mounted 0440 stay readable by the group
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def spec(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True)
class WritableDir:
    """An emptyDir mounted writable: the root filesystem is read-only."""

    name: str
    path: str
    size_limit: str
    in_memory: bool = False

    def volume(self) -> dict[str, Any]:
        empty_dir = {"sizeLimit": self.size_limit, **({"medium": "Memory"} if self.in_memory else {})}
        return {"name": self.name, "emptyDir": empty_dir}

    def mount(self) -> dict[str, Any]:
        return {"name": self.name, "mountPath": self.path}


def skip_annotations(skips: Mapping[str, str]) -> dict[str, str]:
    """Return checkov's per-resource skip annotations: each check id with the reason it does not apply."""
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(skips.items(), 1)}

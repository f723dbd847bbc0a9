"""A Helm release of a pinned chart (a repository's or an OCI registry's): the one way the components
install charts."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s


def pinned_release(resource_name: str, pin: tuple[str, str, str], *, release: str,
                   namespace: pulumi.Input[str], opts: pulumi.ResourceOptions,
                   **args: Any) -> k8s.helm.v3.Release:
    """Install ``pin`` (a ``*_CHART``: chart, version, repository) as ``release`` in ``namespace``;
    a failed install is rolled back (cleanup_on_fail) so the next ``pulumi up`` starts clean.
    ``args`` are the Release's other arguments (values, timeout)."""
    chart, version, repo = pin
    if repo.startswith("oci://"):  # an OCI registry has no index: Helm takes the chart's full reference
        return k8s.helm.v3.Release(resource_name, name=release, chart=f"{repo}/{chart}", version=version,
                                   namespace=namespace, cleanup_on_fail=True, opts=opts, **args)
    return k8s.helm.v3.Release(resource_name, name=release, chart=chart, version=version,
                               repository_opts={"repo": repo}, namespace=namespace, cleanup_on_fail=True,
                               opts=opts, **args)

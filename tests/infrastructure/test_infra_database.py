"""Database: CloudNativePG with a generated password in the cluster, or an external URL, both secret."""

from __future__ import annotations

import pytest

from infra.components import Database, DatabaseArgs
from infra.components.database import CNPG_CHART
from infra.mockrun import Rendered
from infrastructure.conftest import render_with_url


def build(args: DatabaseArgs) -> tuple[Rendered, Database]:
    return render_with_url(lambda: Database("shop-db", args))


def test_in_cluster_database_with_a_generated_password():
    rendered, db = build(DatabaseArgs(mode="incluster", namespace="shop-db", database="shop", owner="shop"))
    credentials = rendered.one("Secret")
    password = credentials["stringData"]["password"]
    assert (
        credentials["type"] == "kubernetes.io/basic-auth" and credentials["stringData"]["username"] == "shop"
    )
    assert len(password) == 32 and password.startswith("mock"), (
        "the mock of random.RandomPassword, not a literal"
    )
    assert rendered.outputs["url"] == "[secret]"
    assert rendered.outputs["url_plain"] == (
        f"postgresql://shop:{password}@shop-db-rw.shop-db.svc.cluster.local:5432/shop"
    )
    cluster = rendered.one("Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["bootstrap"]["initdb"] == {
        "database": "shop",
        "owner": "shop",
        "secret": {"name": credentials["metadata"]["name"]},
    }
    assert cluster["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
    assert "shop-db-operator" in rendered.depends_on["shop-db-cluster"], "the operator installs the CRD first"
    (release,) = rendered.releases
    assert (release["chart"], release["version"], release["repositoryOpts"]["repo"]) == CNPG_CHART
    assert db.peer.namespace == "shop-db" and db.peer.pod_labels == {"cnpg.io/cluster": "shop-db"}
    assert db.peer.port == 5432


def test_in_cluster_namespaces_are_restricted():
    rendered, _ = build(DatabaseArgs(mode="incluster"))
    for namespace in rendered.find("Namespace"):
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_external_database_declares_nothing_in_the_cluster():
    rendered, db = build(
        DatabaseArgs(
            mode="external",
            external_url="postgresql://u:p@10.0.3.4:5432/shop",
            external_cidrs=("10.0.3.0/24",),
            port=6432,
        )
    )
    assert rendered.objects == [] and rendered.releases == []
    assert rendered.outputs["url"] == "[secret]"
    assert rendered.outputs["url_plain"] == "postgresql://u:p@10.0.3.4:5432/shop"
    assert db.peer.rule() == {
        "to": [{"ipBlock": {"cidr": "10.0.3.0/24"}}],
        "ports": [{"protocol": "TCP", "port": 6432}],
    }


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (DatabaseArgs(mode="external", external_url="postgresql://x"), "external_cidrs"),
        (DatabaseArgs(mode="external", external_cidrs=("10.0.0.0/8",)), "external_url"),
        (DatabaseArgs(mode="sqlite"), "unknown database mode"),
    ],
)
def test_incomplete_database_args_are_refused(args: DatabaseArgs, error: str):
    with pytest.raises(ValueError, match=error):
        build(args)

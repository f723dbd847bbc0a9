"""An external MySQL/MariaDB database: the ``databaseEngine`` setting, the egress it opens, what
the app is given, and what is refused (an in-cluster MySQL, PostgreSQL's port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.components import Database, DatabaseArgs
from infra.mockrun import render
from infrastructure.conftest import render_with_url
from infrastructure.test_infra_app_contract import app_settings
from infrastructure.test_infra_config import load

MYSQL = {"databaseEngine": "mysql", "databasePort": 3306,
         "databaseUrl": "mysql://lookout:mock-password@10.20.0.5:3306/lookout",
         "notifierDatabaseUrl": "mariadb://notifier:mock-password@10.20.0.5:3306/notifier"}


def egress_rules(rendered: Any) -> list[dict[str, Any]]:
    return [rule for policy in rendered.find("NetworkPolicy") for rule in policy["spec"].get("egress", [])]


@pytest.fixture(scope="module")
def prod_on_mysql() -> Any:
    return render("prod", MYSQL)


def test_the_prod_stack_on_an_external_mysql_opens_3306_to_its_ranges_only(prod_on_mysql):
    settings, secrets = load("prod", **MYSQL)
    assert (settings.database.engine, settings.database.port) == ("mysql", 3306)
    assert secrets["databaseUrl"], "the URL stays a secret"
    rules = egress_rules(prod_on_mysql)
    to_mysql = [rule for rule in rules if {"protocol": "TCP", "port": 3306} in rule.get("ports", [])]
    assert to_mysql, "no egress to the database's port"
    ranges = {peer["ipBlock"]["cidr"] for rule in to_mysql for peer in rule["to"]}
    assert ranges == set(settings.database.egress_cidrs)
    assert not any({"protocol": "TCP", "port": 5432} in rule.get("ports", []) for rule in rules)


def test_the_app_is_given_the_mysql_url_and_maps_it_to_pymysql(prod_on_mysql, tmp_path: Path):
    loaded = app_settings(prod_on_mysql, tmp_path)
    assert loaded
    for name, settings in loaded.items():
        database = "notifier" if "notifier" in name else "lookout"  # each service its own database
        assert settings.DATABASE_URL == (
            f"mysql+pymysql://{database}:mock-password@10.20.0.5:3306/{database}"), name
    assert any("notifier" in name for name in loaded) and any("relay" in name for name in loaded)


def test_an_external_mysql_gets_no_exporter(prod_on_mysql):
    """The provider's monitoring watches an external database: no exporter, so no panels of one."""
    names = [d["metadata"]["name"] for d in prod_on_mysql.find("Deployment")]
    assert not [n for n in names if "db-exporter" in n or "mysql" in n], names


def test_the_component_takes_a_mysql_url_and_port():
    rendered, db = render_with_url(lambda: Database("shop-db", DatabaseArgs(
        mode="external", engine="mysql", external_url="mariadb://u:p@10.0.3.4:3306/shop",
        external_cidrs=("10.0.3.0/24",), port=3306)))
    assert rendered.objects == [] and rendered.outputs["url"] == "[secret]"
    assert db.peer.rule() == {"to": [{"ipBlock": {"cidr": "10.0.3.0/24"}}],
                              "ports": [{"protocol": "TCP", "port": 3306}]}


@pytest.mark.parametrize(
    ("stack", "overrides", "error"),
    [
        ("dev", {"databaseEngine": "mysql", "databasePort": 3306},
         "databaseEngine: mysql is supported as an external database only"),
        ("prod", {**MYSQL, "databasePort": 5432}, "databasePort: 5432 is PostgreSQL's port"),
        ("prod", {**MYSQL, "databaseEngine": "oracle"}, "databaseEngine: 'oracle' is not one of"),
    ],
)
def test_what_cannot_work_is_refused_naming_the_key(stack: str, overrides: dict[str, Any], error: str):
    with pytest.raises(Exception, match=error):
        load(stack, **overrides)


def test_the_component_refuses_an_in_cluster_mysql():
    with pytest.raises(ValueError, match="external database only"):
        render_with_url(lambda: Database("shop-db", DatabaseArgs(mode="incluster", engine="mysql")))

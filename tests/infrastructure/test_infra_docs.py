"""infra/README.md lists exactly the keys of Pulumi.yaml, and the top-level README points to it."""

from __future__ import annotations

import re

from infra.docs import END, README, START, config_table
from infra.stack import REPO_ROOT
from infra.stack_config import INFRA_DIR, schema


def test_config_table_matches_pulumi_yaml():
    text = README.read_text()
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == config_table(), "run `make infra-docs`"
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert listed == list(schema())


def test_config_table_would_notice_a_new_key(tmp_path):
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        (tmp_path / name).write_text((INFRA_DIR / name).read_text())
    with (tmp_path / "Pulumi.yaml").open("a") as project:
        project.write(
            "  replicasPerZone:\n    type: integer\n    default: 1\n    description: Pods per zone.\n"
        )
    assert "| `replicasPerZone` | `integer` | `1` |" in config_table(tmp_path)
    assert config_table(tmp_path) != config_table()


def test_infra_readme_covers_what_an_operator_needs():
    text = README.read_text()
    for needed in (
        "## Prerequisites",
        "pulumi stack init",
        "pulumi up",
        "port-forward svc/grafana",
        "## Scaling behaviour",
        "pulumi destroy",
        "## The services, and adding one",
        "## Migrations",
    ):
        assert needed in text, needed


def test_top_level_readme_points_to_the_deployment_docs():
    text = (REPO_ROOT / "README.md").read_text()
    assert "## Deploying" in text and "(infra/README.md)" in text


def test_the_third_service_lines_use_the_component_as_it_is():
    """The README's example instance names only ServiceArgs fields and stack helpers that exist."""
    import dataclasses
    import re

    from infra import stack
    from infra.components import ServiceArgs

    text = README.read_text()
    snippet = text[text.index("A third service, `billing`"):text.index("and its settings: `billingMin")]
    args = snippet[snippet.index("ServiceArgs("):snippet.index("opts=after_api")]
    used = set(re.findall(r"\b([a-z_]+)=", args))
    assert used and used <= {f.name for f in dataclasses.fields(ServiceArgs)}, used
    for name in ("NOTIFIER_DATABASE", "NOTIFIER", "RELAY", "edge_clients", "Route", "selector", "Scaling",
                 "Shutdown", "ObservableService"):
        assert name in snippet and hasattr(stack, name), name

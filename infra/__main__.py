"""Pulumi entry point: read the stack's config, deploy, export the addresses."""

import sys
from pathlib import Path

# The repo root, so that infra and dashboards import as packages (Pulumi runs this folder).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from infra.config import load_settings
from infra.stack import deploy, repo_files

for name, value in deploy(load_settings(), repo_files()).items():
    pulumi.export(name, value)

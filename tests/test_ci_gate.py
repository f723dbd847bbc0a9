"""Where services are mandatory, a skipped test fails the run (the hook in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
ROOT = CONFTEST.parents[1]


@pytest.mark.parametrize("require, expected", [("1", 1), ("", 0)])
def test_a_skip_fails_only_when_services_are_required(tmp_path, require, expected):
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('lookout_conftest', {str(CONFTEST)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "pytest_sessionfinish = module.pytest_sessionfinish\n")
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\ndef test_runs():\n    pass\n\ndef test_skips():\n    pytest.skip('no service')\n")
    env = {**os.environ, "LOOKOUT_REQUIRE_SERVICES": require, "PYTHONPATH": str(ROOT)}  # loadtests/
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == expected, result.stdout + result.stderr
    if expected:
        assert "skipped tests count as failures" in result.stdout

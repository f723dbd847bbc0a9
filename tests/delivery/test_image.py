"""The Dockerfile: hadolint clean (and hadolint refuses a bad one), the shape the pods rely on, and
its install rehearsed without Docker: the built package alone, run as the image runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from delivery.conftest import run
from infra.delivery.image_check import label_problems, pid1_problems
from infra.delivery.smoke import smoke
from loadtests.harness import PRODUCTION_SECRETS, ROOT, GunicornServer

# dockerfile-parse comes with `make ci-tools` (which `make test` runs), not `make venv`: a bare pytest
# skips this module, and LOOKOUT_REQUIRE_SERVICES=1 counts the skip as a failure, as for hadolint.
DockerfileParser = pytest.importorskip(
    "dockerfile_parse", reason="dockerfile-parse is not installed (make ci-tools)").DockerfileParser
DOCKERFILE = ROOT / "Dockerfile"
CMD = ["gunicorn", "-c", "python:app.gunicorn_conf", "app.wsgi:app"]


def final_stage(parser: DockerfileParser) -> list[dict]:
    """Instructions of the last stage (from its FROM on)."""
    structure = parser.structure
    start = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    return structure[start:]


def test_hadolint_passes_the_dockerfile(tool):
    result = run(tool("hadolint"), DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile, rule", [
    ("FROM python:latest\nCMD [\"python\"]\n", "DL3007"),
    ("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\n", "DL3008"),
    ("FROM python:3.11-slim\nCMD gunicorn app:app\n", "DL3025"),
    ("FROM python:3.11-slim\nUSER root\nCMD [\"python\"]\n", "DL3002"),
])
def test_hadolint_refuses_a_bad_dockerfile(tool, tmp_path: Path, dockerfile: str, rule: str):
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    result = run(tool("hadolint"), path)
    assert result.returncode == 1 and rule in result.stdout, result.stdout


def test_multi_stage_on_a_slim_python_pinned_by_version():
    parser = DockerfileParser(str(DOCKERFILE))
    images = parser.parent_images
    assert len(images) == 2, "a build stage and a runtime stage"
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), f"{image}: not slim, or not pinned"


def test_ci_tests_on_the_image_s_python_and_a_newer_one():
    """The image runs the oldest Python that pyproject.toml admits; `make venv` takes whatever
    python3 a developer has, often newer. CI's test job runs the suite on both."""
    image = {re.match(r"python:(\d+\.\d+)\.", i)[1]
             for i in DockerfileParser(str(DOCKERFILE)).parent_images}
    assert len(image) == 1, f"the build and runtime stages differ: {image}"
    python = image.pop()
    admitted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    matrix = ci["jobs"]["test"]["strategy"]["matrix"]["python"]
    assert admitted == f">={python}" and python in matrix

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    assert max(map(version, matrix)) > version(python)


def test_the_runtime_stage_is_what_the_pods_expect():
    stage = final_stage(DockerfileParser(str(DOCKERFILE)))
    instructions = [(i["instruction"], i["value"]) for i in stage]
    assert ("USER", "10001:10001") in instructions
    assert json.loads(next(v for k, v in instructions if k == "CMD")) == CMD, "exec form: gunicorn is PID 1"
    assert not [v for k, v in instructions if k == "ENTRYPOINT"], "a shell entrypoint would sit at PID 1"
    assert set(next(v for k, v in instructions if k == "EXPOSE").split()) == {"8000", "9100"}
    env = " ".join(v for k, v in instructions if k == "ENV")
    for setting in ("LOOKOUT_ENV=production", "HOST=0.0.0.0", "METRICS_PORT=9100"):
        assert setting in env
    runs = " ".join(v for k, v in instructions if k == "RUN")
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", runs), "no compilers at run time"
    assert "/var/lib/lookout/metrics" in runs and "10001" in runs, "the multiprocess dir belongs to 10001"
    copies = [v for k, v in instructions if k == "COPY"]
    assert copies == ["--from=build /opt/lookout /opt/lookout"], "only the virtualenv comes across"


def test_labels_carry_version_and_commit_from_build_args():
    args = {"VERSION": "9.8.7", "GIT_COMMIT": "abc1234"}
    labels = DockerfileParser(str(DOCKERFILE), build_args=args).labels
    assert labels["org.opencontainers.image.version"] == "9.8.7"
    assert labels["org.opencontainers.image.revision"] == "abc1234"
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_the_build_context_holds_only_what_copy_needs():
    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*", "everything is left out unless listed"
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    sources = set()
    for ins in DockerfileParser(str(DOCKERFILE)).structure:
        if ins["instruction"] == "COPY" and not ins["value"].startswith("--from"):
            sources.update(p.rstrip("/").removeprefix("./") for p in ins["value"].split()[:-1])
    assert sources == allowed == {"pyproject.toml", "uv.lock", ".ci/bootstrap/requirements.txt", "README.md",
                                  "app"}


def run_steps() -> list[str]:
    return [i["value"] for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] == "RUN"]


def test_the_image_installs_uv_by_hash_and_then_exactly_the_lock():
    steps = run_steps()
    assert any("pip install --require-hashes --no-deps" in s and "uv-requirements.txt" in s for s in steps)
    sync = next(s for s in steps if "uv sync" in s)
    assert "--locked" in sync and "--extra" not in sync and "--all-extras" not in sync
    assert not [s for s in steps if re.search(r"\bpip install\b(?!.*--require-hashes)", s)
                and "uv pip install" not in s], "a pip install that the lock does not pin"
    assert any("--no-deps --no-build-isolation" in s for s in steps), "the app's build fetches nothing"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_dockerfile_installs_the_base_dependencies_and_nothing_else(tmp_path: Path):
    """Run the Dockerfile's own dependency step on a copy of pyproject.toml and uv.lock: exactly the
    lock's versions of the app's dependencies, and no extra (Pulumi, Locust, the test tools)."""
    sync = next(s for s in run_steps() if "uv sync" in s)
    for name in ("pyproject.toml", "uv.lock"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "UV_PYTHON_DOWNLOADS": "never",
           "UV_PYTHON": sys.executable}
    uv = str(ROOT / ".venv" / "bin" / "uv")
    done = subprocess.run(sync.replace("uv ", f"{uv} ", 1), shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([uv, "pip", "list", "--format", "json", "--python", str(tmp_path / "venv")],
                            capture_output=True, text=True, check=True).stdout
    installed = {normalise(p["name"]): p["version"] for p in json.loads(listed)}
    locked: dict[str, set[str]] = {}  # a package may be locked at one version per Python range
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        locked.setdefault(normalise(package["name"]), set()).add(package.get("version", ""))
    assert installed and {n: v for n, v in installed.items() if v not in locked.get(n, ())} == {}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {normalise(re.split(r"[<>=\[; ]", d)[0]) for d in project["dependencies"]}
    assert wanted <= set(installed)
    assert not {"pulumi", "locust", "pytest", "checkov", "ruff", "pip-audit"} & set(installed)


@pytest.mark.slow
def test_the_built_package_runs_as_the_image_runs_it(tmp_path: Path):
    """Build the wheel the image installs, run its migration command and gunicorn from it alone
    (outside the repo, image settings), and smoke test it: missing package data fails here."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=180)
    (wheel,) = wheels.glob("lookout-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=120)
    assert (site / "app" / "migrations" / "alembic.ini").is_file()
    assert list((site / "app" / "migrations" / "versions").glob("*.py"))
    assert not [d for d in ("infra", "loadtests", "tests", "dashboards") if (site / d).exists()]

    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(site), "LOOKOUT_ENV": "production",
           "SECRET_KEY": "rehearsal-secret-key-" + "x" * 20,
           "JWT_PRIVATE_KEY": PRODUCTION_SECRETS["JWT_PRIVATE_KEY"], "JWT_KEY_ID": "rehearsal-1",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'lookout.db'}", "GIT_COMMIT": "feedface"}
    where = subprocess.run([sys.executable, "-c", "import app; print(app.__file__)"], cwd=workdir, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), f"the repo's app was imported, not the built one: {where}"
    migrate = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=workdir,
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert migrate.returncode == 0, migrate.stderr
    admin = ("image-admin@example.com", "image-admin-password")
    bootstrap = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "users", "bootstrap-admin"],
                               cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
                               env={**env, "LOOKOUT_BOOTSTRAP_ADMIN_EMAIL": admin[0],
                                    "LOOKOUT_BOOTSTRAP_ADMIN_PASSWORD": admin[1]})
    assert bootstrap.returncode == 0, bootstrap.stderr
    # cwd outside the repo: `python -m` puts the cwd first on sys.path, which would shadow the wheel.
    server = GunicornServer(env, cwd=workdir, metrics_port=True, test_settings=False)
    assert server.command == CMD
    with server:
        report = smoke(server.url, "feedface", wait=30, credentials=admin)
        assert report.ok, report.text() + server.output()[-2000:]


@pytest.mark.parametrize("config, problem", [
    ({}, "no org.opencontainers.image.version"),
    ({"Labels": {"org.opencontainers.image.version": "1", "org.opencontainers.image.revision": "old"}},
     "not the commit"),
    ({"User": "root"}, "not 10001:10001"),
    ({"Cmd": ["/bin/sh", "-c", "gunicorn app"]}, "not gunicorn in exec form"),
    ({"Entrypoint": ["/entrypoint.sh"]}, "not gunicorn in exec form"),
])
def test_the_image_check_refuses_a_wrong_image_config(config: dict, problem: str):
    labels = {"org.opencontainers.image.version": "0.1.0", "org.opencontainers.image.revision": "abc1234"}
    good = {"Labels": labels, "User": "10001:10001", "Cmd": CMD, "Entrypoint": None}
    assert label_problems({"Config": good}, "abc1234") == []
    found = label_problems({"Config": {**good, **config} if config else {}}, "abc1234")
    assert any(problem in p for p in found), found


def test_the_image_check_knows_gunicorn_at_pid_1_from_a_shell():
    assert pid1_problems("/opt/lookout/bin/python3.11\0/opt/lookout/bin/gunicorn\0-c\0python:app.x\0") == []
    assert pid1_problems("/bin/sh\0-c\0gunicorn app.wsgi:app\0") != []

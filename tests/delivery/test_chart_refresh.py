"""make charts-refresh / charts-verify: index entries and values data rewritten or checked from the
repositories, each archive refused unless its SHA-256 is the index's digest (repositories stood in)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from infra.delivery import chart_refresh


def archive(chart: str, version: str, extra: str = "") -> bytes:
    files = {"Chart.yaml": f"apiVersion: v2\nname: {chart}\nversion: {version}\nappVersion: '1'\n",
             "values.yaml": f"replicas: 1\nresources: {{}}\n{extra}",
             "templates/deploy.yaml": "{{ .Values.replicas }} {{ toYaml .Values.resources }}\n"}
    buffer = io.BytesIO()
    # gzip's header carries a time: fixed, so the same chart is the same archive (and digest) on
    # every call, whatever second the call falls in.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w") as tar:
        for path, text in files.items():
            info = tarfile.TarInfo(f"{chart}/{path}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buffer.getvalue()


class Repositories:
    """What the pinned charts' repositories serve: index.yaml and one archive per pin."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        indexes: dict[str, dict] = {}
        for chart, version, repo in chart_refresh.pinned_charts():
            data = archive(chart, version)
            url = f"https://example.test/{chart}-{version}.tgz"
            self.files[url] = data
            entry = {"name": chart, "version": version, "appVersion": "1", "created": "2025-01-01T00:00:00Z",
                     "digest": hashlib.sha256(data).hexdigest(), "urls": [url], "description": "dropped"}
            older = {**entry, "version": "0.0.1", "digest": "0" * 64}
            indexes.setdefault(repo, {"apiVersion": "v1", "entries": {}})["entries"][chart] = [entry, older]
        for repo, index in indexes.items():
            self.files[f"{repo}/index.yaml"] = yaml.safe_dump(index).encode()
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.files[url]


def test_refresh_writes_the_pinned_entries_and_the_data_of_each_verified_archive(tmp_path: Path):
    repos = Repositories()
    assert chart_refresh.main(["--charts-dir", str(tmp_path)], fetch=repos.fetch) == 0
    index = yaml.safe_load((tmp_path / "index.yaml").read_text())
    pins = chart_refresh.pinned_charts()
    assert {(c, e["version"], r) for r, body in index["repositories"].items()
            for c, entries in body["entries"].items() for e in entries} == set(pins)
    for body in index["repositories"].values():
        for entries in body["entries"].values():
            assert set(entries[0]) == set(chart_refresh.ENTRY_FIELDS), "only the fields a pin needs"
    for chart, version, _ in pins:
        data = json.loads((tmp_path / "values" / f"{chart}-{version}.json").read_text())
        assert data["defaults"] == {"replicas": "int", "resources": "map"}
        assert data["source"]["digest"] == hashlib.sha256(archive(chart, version)).hexdigest()
    assert chart_refresh.main(["--charts-dir", str(tmp_path), "--check"], fetch=repos.fetch) == 0


def test_check_reports_vendored_data_that_is_not_what_is_published(tmp_path: Path, capsys):
    repos = Repositories()
    chart_refresh.main(["--charts-dir", str(tmp_path)], fetch=repos.fetch)
    chart, version, _ = chart_refresh.pinned_charts()[0]
    path = tmp_path / "values" / f"{chart}-{version}.json"
    data = json.loads(path.read_text())
    data["defaults"]["invented"] = "str"
    path.write_text(json.dumps(data))
    (tmp_path / "values" / "stale-0.1.0.json").write_text("{}")
    assert chart_refresh.main(["--charts-dir", str(tmp_path), "--check"], fetch=repos.fetch) == 1
    out = capsys.readouterr().out
    assert f"values/{chart}-{version}.json: differs" in out and "values/stale-0.1.0.json: vendored" in out


def test_an_archive_whose_digest_is_not_the_index_entry_is_refused(tmp_path: Path):
    repos = Repositories()
    chart, version, _ = chart_refresh.pinned_charts()[0]
    repos.files[f"https://example.test/{chart}-{version}.tgz"] = archive(chart, version, "tampered: true\n")
    with pytest.raises(SystemExit, match="is not the index's digest"):
        chart_refresh.main(["--charts-dir", str(tmp_path)], fetch=repos.fetch)
    assert not (tmp_path / "index.yaml").exists(), "nothing is written from an unverified archive"


def test_a_pin_the_repository_never_published_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repos = Repositories()
    pins = chart_refresh.pinned_charts()
    chart, _, repo = pins[0]
    monkeypatch.setattr(chart_refresh, "pinned_charts", lambda: [(chart, "9.9.9", repo), *pins[1:]])
    with pytest.raises(SystemExit, match=f"{chart} 9.9.9 is not in {repo}/index.yaml"):
        chart_refresh.main(["--charts-dir", str(tmp_path)], fetch=repos.fetch)


def test_a_rewrite_keeps_the_source_of_a_pin_that_did_not_move(tmp_path: Path):
    repos = Repositories()
    chart_refresh.main(["--charts-dir", str(tmp_path)], fetch=repos.fetch)
    chart, version, _ = chart_refresh.pinned_charts()[0]
    path = tmp_path / "values" / f"{chart}-{version}.json"
    data = json.loads(path.read_text())
    data["source"] = {"repository": "owner/charts", "commit": "a" * 40, "path": f"charts/{chart}"}
    path.write_text(json.dumps(data))
    chart_refresh.main(["--charts-dir", str(tmp_path)], fetch=repos.fetch)
    assert json.loads(path.read_text())["source"]["commit"] == "a" * 40


def test_only_https_is_downloaded():
    with pytest.raises(ValueError, match="not https"):
        chart_refresh.download("http://example.test/index.yaml")

"""`pantau grafana export DIR`: the provisioning YAML parses, names what the export holds, keeps
no secret, and the same settings give the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from grafana_foundation_sdk.models import playlist as playlist_model

from grafana import datasources, provisioning
from grafana.dashboards import UIDS, WALL
from grafana.export import DASHBOARDS, DATASOURCES, PLAYLIST, PROVIDER, bundle
from pantau.settings import Settings

ENV = {
    "PANTAU_DATABASE__URL": "postgresql://pantau:s3cret-db-password@db.internal:6543/kota",
    "PANTAU_HTTP__PUBLIC_URL": "https://pantau.bekasikab.go.id",
}


def export(directory: Path, **env: str | None) -> subprocess.CompletedProcess[str]:
    """`pantau grafana export DIR` with ENV and `env` (None: left unset)."""
    merged = {k: v for k, v in {**ENV, **env}.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "pantau", "grafana", "export", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=directory.parent,
        env={"PATH": os.environ["PATH"], **merged},
    )


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_export_writes_the_same_bytes_for_the_same_settings(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    done = export(first)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # public_url set, a TCP database: nothing to warn about
    assert export(second).returncode == 0
    assert files(first) == files(second)
    assert sorted(files(first)) == sorted(
        [DATASOURCES, PROVIDER, PLAYLIST, *(f"{DASHBOARDS}/{uid}.json" for uid in UIDS)]
    )
    again = export(first)
    assert "8 files" in again.stdout
    assert "(0 changed)" in again.stdout  # unchanged files are not rewritten


def test_provisioning_parses_names_what_the_export_holds_and_keeps_no_secret(
    tmp_path: Path,
) -> None:
    out = tmp_path / "export"  # not "grafana": `python -m` puts the cwd on sys.path
    assert export(out).returncode == 0
    sources = yaml.safe_load((out / DATASOURCES).read_text())
    assert sources["apiVersion"] == 1
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    pg = by_uid[datasources.POSTGRES_UID]
    assert pg["type"] == datasources.POSTGRES_TYPE
    assert pg["url"] == "db.internal:6543"
    assert pg["jsonData"]["database"] == "kota"
    assert pg["user"] == f"${datasources.DB_USER_ENV}"
    assert pg["secureJsonData"] == {"password": f"${datasources.DB_PASSWORD_ENV}"}
    assert by_uid[datasources.PROMETHEUS_UID]["url"] == "http://prometheus:9090"
    everything = b"".join(files(out).values())
    assert b"s3cret-db-password" not in everything
    assert b"pantau:" not in (out / DATASOURCES).read_bytes()  # not even the migrating user

    # Every data source a dashboard names is provisioned.
    for uid in UIDS:
        board = json.loads((out / DASHBOARDS / f"{uid}.json").read_text())
        variables = board["templating"].get("list", [])
        named = {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])}
        named |= {v["datasource"]["uid"] for v in variables if "datasource" in v}
        assert named <= set(by_uid), (uid, named)

    provider = yaml.safe_load((out / PROVIDER).read_text())
    (entry,) = provider["providers"]
    assert (entry["folder"], entry["folderUid"], entry["type"]) == ("Pantau", "pantau", "file")
    assert entry["allowUiUpdates"] is False
    # options.path is where Grafana sees the export's dashboards/ folder: it holds them all.
    assert entry["options"]["path"] == Settings().grafana.dashboards_path
    assert sorted(p.stem for p in (out / DASHBOARDS).glob("*.json")) == sorted(UIDS)

    playlist = playlist_model.Playlist.from_json(json.loads((out / PLAYLIST).read_text()))
    assert playlist.uid == provisioning.PLAYLIST_UID
    assert playlist.interval == "1m"
    assert [(i.type_val, i.value) for i in playlist.items or []] == [
        ("dashboard_by_uid", uid) for uid in WALL
    ]
    assert all((out / DASHBOARDS / f"{uid}.json").is_file() for uid in WALL)


def test_warnings_and_settings(tmp_path: Path) -> None:
    out = tmp_path / "export"  # not "grafana": `python -m` puts the cwd on sys.path
    done = export(
        out,
        PANTAU_DATABASE__URL="postgresql:///pantau?host=/var/run/postgresql",
        PANTAU_HTTP__PUBLIC_URL=None,
        PANTAU_GRAFANA__PLAYLIST_INTERVAL="2m",
    )
    assert done.returncode == 0, done.stderr
    assert "http.public_url is not set" in done.stderr
    assert "set grafana.postgres_host" in done.stderr
    assert json.loads((out / PLAYLIST).read_text())["interval"] == "2m"

    settings = Settings(
        database={"url": "postgresql://u@[::1]:5433/pantau"},
        grafana={"postgres_database": "wall", "prometheus_url": "http://10.0.0.9:9090"},
    )
    text = bundle(settings).files[DATASOURCES].decode()
    assert '"[::1]:5433"' in text
    assert '"wall"' in text
    assert '"http://10.0.0.9:9090"' in text

    a_file = tmp_path / "taken"
    a_file.write_text("")
    refused = export(a_file)
    assert refused.returncode == 2
    assert "expected a directory" in refused.stderr

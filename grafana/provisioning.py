"""What Grafana reads at start-up (provisioning files): the two data sources, the dashboard
provider with its folder, and the kiosk playlist's body, which Grafana cannot provision from files
(`pantau grafana publish` creates or updates it through the HTTP API).

The YAML is written by a small emitter of our own (block style, every string double-quoted as
JSON quotes it, which YAML reads alike): deterministic, and no YAML library at run time."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import folder as folder_builder
from grafana_foundation_sdk.builders import playlist as playlist_builder
from grafana_foundation_sdk.models import folder as folder_model
from grafana_foundation_sdk.models import playlist as playlist_model
from psycopg.conninfo import conninfo_to_dict

from grafana import datasources
from grafana.dashboards import WALL
from pantau.settings import Settings

FOLDER_UID = "pantau"
FOLDER_TITLE = "Pantau"
PLAYLIST_UID = "pantau-wall"
PLAYLIST_NAME = "Pantau: dinding Command Center"
PROVIDER = "pantau"

Yaml = Mapping[str, object] | Sequence[object] | str | int | float | bool | None


@dataclass(frozen=True)
class Postgres:
    """Where Grafana's PostgreSQL data source connects (no user or password: those come from
    Grafana's environment)."""

    host: str
    database: str
    warnings: tuple[str, ...]


def postgres_target(settings: Settings) -> Postgres:
    params = conninfo_to_dict(settings.database.url)
    warnings: list[str] = []
    host = settings.grafana.postgres_host
    if not host:
        first = str(params.get("host") or "localhost").split(",")[0]
        port = str(params.get("port") or "5432").split(",")[0]
        if first.startswith("/"):
            warnings.append(
                f"database.url connects through the socket {first}; Grafana needs a TCP "
                "address: set grafana.postgres_host (localhost:5432 written for now)"
            )
            first = "localhost"
        host = f"[{first}]:{port}" if ":" in first else f"{first}:{port}"
    database = settings.grafana.postgres_database or str(params.get("dbname") or "pantau")
    return Postgres(host, database, tuple(warnings))


def datasources_yaml(settings: Settings) -> str:
    pg = postgres_target(settings)
    return _document(
        "Pantau's data sources. The PostgreSQL login is a role that is a member of pantau_wall\n"
        "(`pantau grafana db-role NAME`); Grafana reads its name and password from its own\n"
        f"environment: {datasources.DB_USER_ENV}, {datasources.DB_PASSWORD_ENV}.",
        {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Pantau PostgreSQL",
                    "uid": datasources.POSTGRES_UID,
                    "type": datasources.POSTGRES_TYPE,
                    "access": "proxy",
                    "url": pg.host,
                    "user": f"${datasources.DB_USER_ENV}",
                    "jsonData": {
                        "database": pg.database,
                        "sslmode": settings.grafana.postgres_sslmode,
                        "postgresVersion": 1500,
                        "timescaledb": False,
                        "maxOpenConns": 10,
                        "maxIdleConns": 2,
                        "connMaxLifetime": 14400,
                        "timeInterval": "1m",
                    },
                    "secureJsonData": {"password": f"${datasources.DB_PASSWORD_ENV}"},
                    "editable": False,
                },
                {
                    "name": "Pantau Prometheus",
                    "uid": datasources.PROMETHEUS_UID,
                    "type": datasources.PROMETHEUS_TYPE,
                    "access": "proxy",
                    "url": settings.grafana.prometheus_url,
                    # Prometheus' scrape interval (deploy/prometheus/prometheus.yml), for
                    # $__rate_interval.
                    "jsonData": {"timeInterval": "15s", "httpMethod": "POST"},
                    "editable": False,
                },
            ],
        },
    )


def dashboards_yaml(settings: Settings) -> str:
    return _document(
        "Pantau's dashboards, from the exported dashboards/ folder (mount it at options.path).",
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": PROVIDER,
                    "orgId": 1,
                    "folder": FOLDER_TITLE,
                    "folderUid": FOLDER_UID,
                    "type": "file",
                    "disableDeletion": True,
                    "allowUiUpdates": False,
                    "updateIntervalSeconds": 60,
                    "options": {
                        "path": settings.grafana.dashboards_path,
                        "foldersFromFilesStructure": False,
                    },
                }
            ],
        },
    )


def folder() -> folder_model.Folder:
    return folder_builder.Folder().uid(FOLDER_UID).title(FOLDER_TITLE).build()


def playlist(settings: Settings) -> playlist_model.Playlist:
    """The kiosk playlist: the wall dashboards in turn (open it at /playlists/play/<uid>?kiosk)."""
    return (
        playlist_builder.Playlist()
        .uid(PLAYLIST_UID)
        .name(PLAYLIST_NAME)
        .interval(settings.grafana.playlist_interval)
        .items([playlist_builder.PlaylistItem().type("dashboard_by_uid").value(u) for u in WALL])
        .build()
    )


def _document(comment: str, data: Mapping[str, object]) -> str:
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return (
        "# Written by `pantau grafana export`: edit grafana/ and export again.\n"
        + header
        + ("\n".join(_yaml(data, 0)) + "\n")
    )


def _yaml(value: object, indent: int) -> list[str]:
    pad = "  " * indent
    if isinstance(value, Mapping):
        lines: list[str] = []
        for key, item in value.items():
            if _scalar(item):
                lines.append(f"{pad}{key}: {_scalar_text(item)}")
            else:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(item, indent + 1))
        return lines
    if isinstance(value, Sequence) and not isinstance(value, str):
        lines = []
        for item in value:
            inner = _yaml(item, indent + 1) if not _scalar(item) else [_scalar_text(item)]
            first = inner[0].lstrip() if not _scalar(item) else inner[0]
            lines.append(f"{pad}- {first}")
            lines.extend(inner[1:])
        return lines
    return [pad + _scalar_text(value)]


def _scalar(value: object) -> bool:
    return not isinstance(value, Mapping) and not (
        isinstance(value, Sequence) and not isinstance(value, str)
    )


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)

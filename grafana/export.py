"""`pantau grafana export DIR`: every file of Grafana-as-code, the same bytes for the same input.

DIR/provisioning/datasources/pantau.yaml   -> Grafana's provisioning/datasources/
DIR/provisioning/dashboards/pantau.yaml    -> Grafana's provisioning/dashboards/
DIR/dashboards/<uid>.json                  -> grafana.dashboards_path
DIR/playlists/pantau-dinding.json          -> `pantau grafana publish` (not provisionable)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana import provisioning
from grafana.dashboards import DEFAULT_PANTAU_URL, build_all
from pantau.errors import ConfigError
from pantau.settings import Settings

DATASOURCES = "provisioning/datasources/pantau.yaml"
PROVIDER = "provisioning/dashboards/pantau.yaml"
DASHBOARDS = "dashboards"
PLAYLIST = f"playlists/{provisioning.PLAYLIST_UID}.json"


@dataclass(frozen=True)
class Bundle:
    files: dict[str, bytes]  # path relative to DIR -> content
    warnings: tuple[str, ...]


def to_json(obj: object) -> str:
    """An SDK object as Grafana's JSON: 2-space indents, UTF-8 kept, a final newline."""
    return json.dumps(obj, cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def pantau_url(settings: Settings) -> tuple[str, tuple[str, ...]]:
    """Where a wall PC's browser reaches Pantau (the Kamera dashboard's snapshot URLs)."""
    if settings.http.public_url:
        return settings.http.public_url.rstrip("/"), ()
    host = settings.http.host
    if host in ("", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"):  # noqa: S104
        return DEFAULT_PANTAU_URL, (
            "http.public_url is not set: the Kamera dashboard points wall PCs at "
            f"{DEFAULT_PANTAU_URL}, which only works on Pantau's own machine",
        )
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.http.port}", ()


def bundle(settings: Settings) -> Bundle:
    url, url_warnings = pantau_url(settings)
    files: dict[str, bytes] = {
        DATASOURCES: provisioning.datasources_yaml(settings).encode(),
        PROVIDER: provisioning.dashboards_yaml(settings).encode(),
        PLAYLIST: to_json(provisioning.playlist(settings)).encode(),
    }
    for board in build_all(url):
        files[f"{DASHBOARDS}/{board.uid}.json"] = to_json(board).encode()
    warnings = url_warnings + provisioning.postgres_target(settings).warnings
    return Bundle(dict(sorted(files.items())), warnings)


def write(directory: Path, files: dict[str, bytes]) -> list[Path]:
    """Write each file (creating folders); a file already holding the same bytes is left as is,
    so its modification time, which Grafana's provider watches, does not move."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: expected a directory to export into, found a file")
    written = []
    for name, content in files.items():
        path = directory / name
        try:
            if path.is_file() and path.read_bytes() == content:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot write the export ({exc.strerror})") from exc
        written.append(path)
    return written

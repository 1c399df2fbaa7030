"""The `[grafana]` section: the dashboards as code (export, publish) and Pantau's own /wall."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class GrafanaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    wall_enabled: bool = Field(
        True,
        description="serve the command-center wall at /wall and its data at /api/v1/wall (no "
        "Grafana needed); the cameras' snapshot links stay on (Grafana's panels use them)",
    )
    wall_refresh_seconds: float = Field(
        15.0,
        ge=2,
        le=300,
        description="/wall: how often the page reads its data again (a device going down turns "
        "its kecamatan tile within this, plus the detector's interval)",
    )
    wall_title: str = Field(
        "Kabupaten Bekasi",
        min_length=1,
        max_length=60,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="/wall: the name in the page's header, under `DINDING KOMANDO`",
    )
    url: str | None = Field(
        None,
        max_length=200,
        pattern=r"^https?://[^\s/#?]+(/[^\s#?]*)?$",
        description="the Grafana `pantau grafana publish` pushes to, e.g. "
        "`http://grafana.bekasikab.go.id:3000` (its `--url` overrides it)",
    )
    token: SecretStr | None = Field(
        None,
        description="a Grafana service account token (role Editor) for `publish`: set it in the "
        "environment, never in a file kept in a repository (`--token-file` overrides it)",
    )
    timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="how long `publish` waits for each Grafana request"
    )
    postgres_host: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[^\s/]+$",
        description="`host:port` Grafana reaches PostgreSQL at (its data source; default: the "
        "host and port of `database.url`)",
    )
    postgres_database: str | None = Field(
        None,
        max_length=63,
        description="the database the data source opens (default: the one of `database.url`)",
    )
    postgres_sslmode: str = Field(
        "disable",
        pattern=r"^(disable|require|verify-ca|verify-full)$",
        description="TLS of the PostgreSQL data source: disable (a private network, the compose "
        "stack), require, verify-ca or verify-full",
    )
    prometheus_url: str = Field(
        "http://prometheus:9090",
        max_length=200,
        pattern=r"^https?://[^\s#?]+$",
        description="where Grafana reaches the Prometheus that scrapes Pantau (its data source)",
    )
    dashboards_path: str = Field(
        "/var/lib/grafana/dashboards/pantau",
        max_length=200,
        pattern=r"^/[^\s]*$",
        description="where Grafana reads the exported `dashboards/` folder (the dashboard "
        "provider's path, inside Grafana's machine or container)",
    )
    playlist_interval: str = Field(
        "1m",
        pattern=r"^[1-9][0-9]*[smh]$",
        description="how long the kiosk playlist shows each wall dashboard (`30s`, `1m`, `2m`)",
    )

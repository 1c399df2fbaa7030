"""Settings: read once from `pantau.toml` and `PANTAU_*` environment variables, loud on bad values.

Precedence, highest first: environment (`PANTAU_SECTION__KEY`), the TOML file, the defaults below.
The TOML file is `pantau.toml` in the working directory, or the path in `PANTAU_CONFIG` / the
`--config` option. Unknown keys, in the file or in the environment, are errors: a typo must not
silently fall back to a default on a production box.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from devices.outages.settings import OutagesSettings
from grafana.settings import GrafanaSettings
from pantau.errors import ConfigError
from pantau.mappings import MappingSettings, default_mappings
from streams.settings import StreamsSettings

ENV_PREFIX = "PANTAU_"
ENV_NESTED = "__"
CONFIG_ENV = "PANTAU_CONFIG"
DEFAULT_CONFIG_FILE = Path("pantau.toml")
_SECRET_WORDS = ("password", "secret", "token")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatabaseSettings(_Section):
    url: str = Field(
        "postgresql://pantau@localhost:5432/pantau",
        description="libpq connection URI or key=value string of the PostgreSQL/TimescaleDB "
        "database (`pantau dev` points it at its embedded cluster)",
    )
    pool_min_size: int = Field(2, ge=1, description="connections kept open")
    pool_max_size: int = Field(10, ge=1, description="most connections opened at once")
    connect_timeout_seconds: float = Field(
        5.0, gt=0, description="how long to wait for the database at start and per connection"
    )
    migrate_on_start: bool = Field(
        True,
        description="apply pending migrations when the service starts (or, if the database is "
        "down then, as soon as it is reachable)",
    )
    retry_max_seconds: float = Field(
        5.0,
        gt=0,
        description="longest wait between attempts to reach a down database (the first is "
        "0.5 s); also how often a reachable one is checked",
    )

    @field_validator("url")
    @classmethod
    def _parse_url(cls, value: str) -> str:
        try:
            conninfo_to_dict(value)
        except Exception as exc:
            raise ValueError(f"expected a libpq connection string or URI ({exc})") from exc
        return value

    def redacted_url(self) -> str:
        """The URL with its password replaced, for logs and `pantau config check`."""
        params = conninfo_to_dict(self.url)
        if not params.get("password"):
            return self.url
        params["password"] = "********"  # noqa: S105 - the mask, not a password
        return make_conninfo("", **params)


class MqttSettings(_Section):
    host: str = Field("localhost", description="MQTT broker host")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    username: str | None = Field(None, description="MQTT username, if the broker requires one")
    password: SecretStr | None = Field(None, description="MQTT password (never logged)")
    client_id: str = Field(
        default_factory=lambda: f"pantau-{socket.gethostname()}",
        min_length=1,
        max_length=64,
        description="MQTT client id of the persistent session: unique per instance and the "
        "same across restarts and new containers, or the broker strands the old session's "
        "queued messages (default: pantau-<hostname>; set it wherever the hostname is not "
        "stable, as in a container: Pantau warns at start then)",
    )
    keepalive_seconds: int = Field(30, ge=5, description="MQTT keepalive")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version: 5 or 3.1.1")
    session_expiry_seconds: int = Field(
        604800,
        ge=0,
        description="how long the broker keeps our session and queued messages while we are "
        "away (MQTT 5; 3.1.1 sessions persist until cleaned)",
    )
    receive_maximum: int = Field(
        20000,
        ge=1,
        le=65535,
        description="unacknowledged QoS 1 messages the broker may send us at once (MQTT 5)",
    )
    shared_group: str | None = Field(
        None,
        pattern=r"^[^/+#]+$",
        description="subscribe as $share/<group>/<filter> so several instances split the load",
    )
    tls: bool = Field(False, description="connect with TLS")
    tls_ca_file: Path | None = Field(None, description="CA bundle for the broker's certificate")
    tls_cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    tls_key_file: Path | None = Field(None, description="client key (mutual TLS)")
    dynsec: bool = Field(
        False,
        description="manage a broker client per device with Mosquitto's dynamic security plugin "
        "(Pantau's MQTT user needs the plugin's admin role)",
    )
    device_host: str | None = Field(
        None, description="broker address devices are told to use (default: mqtt.host)"
    )
    device_port: int | None = Field(
        None, ge=1, le=65535, description="broker port devices are told to use (default: mqtt.port)"
    )
    reconnect_min_seconds: float = Field(0.5, gt=0, description="first reconnect delay")
    reconnect_max_seconds: float = Field(30.0, gt=0, description="longest reconnect delay")


def _ingest_processes() -> int:
    return min(os.cpu_count() or 1, 8)


class IngestSettings(_Section):
    processes: int = Field(
        default_factory=_ingest_processes,
        ge=1,
        le=64,
        description="ingest processes, each with its own MQTT session (`<mqtt.client_id>-<i>`) on "
        "one shared subscription (`$share/<mqtt.shared_group or pantau>/...`), its own writer and "
        "spool (`<spool_dir>/<i>`); 1 ingests in the service's own process, as before. A change "
        "takes a restart: the next start replays the old layout's spools and drains and ends its "
        "sessions (default: the machine's cores, at most 8)",
    )
    batch_size: int = Field(5000, ge=1, description="readings per database write, at most")
    batch_max_wait_seconds: float = Field(
        0.2, gt=0, description="a batch is written at the latest this long after it started"
    )
    spool_dir: Path = Field(
        Path("spool"),
        description="where readings wait on disk while the database is down (a relative path "
        "is taken inside `service.state_dir` when that is set)",
    )
    spool_max_bytes: int = Field(
        1 << 30, ge=4096, description="spool size at which Pantau stops acknowledging messages"
    )
    max_future_seconds: float = Field(
        300.0, ge=0, description="readings further ahead of the receive time go to quarantine"
    )
    max_past_days: float = Field(
        7.0, gt=0, description="readings older than this (by receive time) go to quarantine"
    )
    unregistered_devices: Literal["accept", "quarantine"] = Field(
        "accept",
        description="readings of devices not in the registry: accept (and list the device as "
        "pending) or quarantine",
    )
    quarantine_retention_days: int = Field(
        90, ge=1, description="quarantined payloads older than this are deleted (hourly)"
    )
    max_payload_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="larger MQTT payloads are quarantined as payload_too_large, only their "
        "first 4 KiB kept (keep the broker's message_size_limit a little above)",
    )
    max_readings_per_message: int = Field(
        1000,
        ge=1,
        description="a message with more readings is quarantined whole as too_many_readings",
    )
    quarantine_max_per_source_hour: int = Field(
        100,
        ge=0,
        description="payloads kept whole per device (or topic) and hour; more are only "
        "counted, in one summary row per device and hour",
    )
    quarantine_max_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="bytes in quarantine (payloads with their topic and detail); "
        "past it the oldest are deleted",
    )
    database_retry_seconds: float = Field(
        2.0, gt=0, description="how often a down database is tried again"
    )
    database_retry_max_seconds: float = Field(
        30.0,
        gt=0,
        description="a database down for long is tried again with backoff (doubling from "
        "database_retry_seconds, with jitter) up to this",
    )
    mappings: list[MappingSettings] = Field(
        default_factory=default_mappings,
        description="topic patterns and payload formats ([[ingest.mappings]]; see README)",
    )


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", description="address the HTTP API and /metrics listen on")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 = any free port)")
    max_body_bytes: int = Field(
        20 << 20,
        ge=1024,
        description="largest request body (bytes) any route accepts; a larger one is answered 413",
    )
    public_url: str | None = Field(
        None,
        max_length=200,
        pattern=r"^https?://[^\s/#?]+(/[^\s#?]*)?$",
        description="the address phones and browsers reach Pantau at, for sign-in links "
        "(`pantau token create --qr`), e.g. `https://pantau.bekasikab.go.id` (default: "
        "http://<http.host>:<http.port>)",
    )
    forwarded_allow_ips: str = Field(
        "",
        max_length=1000,
        description="addresses or networks (comma-separated, e.g. `172.30.0.0/24`) of the "
        "reverse proxy whose X-Forwarded-For/-Proto Pantau believes (default: nobody's)",
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an IP address or network; expected e.g. 172.30.0.2 or "
                    "172.30.0.0/24 (trusting every address is not offered)"
                ) from None
        return ",".join(parts)

    def trusted_proxies(self) -> list[str]:
        """The proxies whose forwarded headers count (empty: headers ignored from everyone)."""
        return self.forwarded_allow_ips.split(",") if self.forwarded_allow_ips else []


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    format: Literal["auto", "json", "text"] = Field(
        "auto", description="json, text, or auto (text on a terminal, JSON otherwise)"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class StorageSettings(_Section):
    backend: Literal["auto", "timescale", "plain"] = Field(
        "auto",
        description="timescale, plain, or auto (TimescaleDB when the extension can be created)",
    )
    retention_days: int = Field(365, ge=1, description="raw readings older than this are dropped")
    partitions_ahead_days: int = Field(
        3, ge=1, description="plain PostgreSQL: daily partitions created ahead of today"
    )
    partitions_behind_days: int = Field(
        7, ge=0, description="plain PostgreSQL: daily partitions kept ready behind today"
    )
    rollup_refresh_seconds: float = Field(
        60.0, gt=0, description="plain PostgreSQL: how often the 1 min / 1 h rollups are refreshed"
    )
    rollup_lookback_minutes: int = Field(
        15, ge=2, description="plain PostgreSQL: how far back each refresh recomputes rollups"
    )
    maintenance_interval_seconds: float = Field(
        3600.0, gt=0, description="plain PostgreSQL: how often partitions are created and dropped"
    )


def _state_directory() -> Path | None:
    # systemd's StateDirectory= sets STATE_DIRECTORY (several paths are colon-separated).
    first = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(first) if first else None


class ServiceSettings(_Section):
    state_dir: Path | None = Field(
        default_factory=_state_directory,
        description="absolute directory of this instance's state: relative `ingest.spool_dir` "
        "and `streams.snapshot_dir` live in it; must be writable by the user Pantau runs as "
        "(default: `$STATE_DIRECTORY` when systemd sets it, else not set: relative paths are "
        "taken from the working directory; the image and the unit use `/var/lib/pantau`)",
    )
    shutdown_timeout_seconds: float = Field(
        10.0, gt=0, description="how long workers may drain on SIGTERM/SIGINT"
    )
    restart_backoff_initial_seconds: float = Field(
        0.5, gt=0, description="first delay before a failed worker is restarted"
    )
    restart_backoff_max_seconds: float = Field(
        30.0, gt=0, description="longest delay between restarts of a failing worker"
    )

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("expected an absolute directory, e.g. /var/lib/pantau")
        return value


class EmbeddedSettings(_Section):
    var_dir: Path = Field(
        Path("var"), description="`pantau dev`: where its PostgreSQL and Mosquitto keep their data"
    )
    postgres_bin_dir: Path | None = Field(
        None,
        description="`pantau dev`: PostgreSQL binaries (default: newest /usr/lib/postgresql/*)",
    )
    mosquitto_bin: str = Field("mosquitto", description="`pantau dev`: the Mosquitto 2 binary")
    simulate_devices: int = Field(
        60, ge=0, description="`pantau dev`: simulated sensors publishing to the broker (0 = none)"
    )
    simulate_rate: float = Field(
        12.0, gt=0, description="`pantau dev`: messages per second from all simulated sensors"
    )
    simulate_incidents: bool = Field(
        True,
        description="`pantau dev`: now and then a simulated sensor falls silent, most of a "
        "kecamatan goes dark, a river rises over Siaga 3 (outages and alarms to watch)",
    )
    simulate_silence_every_seconds: float = Field(
        180.0, ge=0, description="`pantau dev`: about how often one sensor falls silent (0 = never)"
    )
    simulate_area_outage_every_seconds: float = Field(
        600.0,
        ge=0,
        description="`pantau dev`: about how often a kecamatan goes dark, also once within the "
        "first 3 minutes (0 = never)",
    )
    simulate_flood_every_seconds: float = Field(
        600.0,
        ge=0,
        description="`pantau dev`: about how often a river gauge rises to 420 cm, also once within "
        "the first 3 minutes (0 = never)",
    )
    simulate_seed: int = Field(7, description="`pantau dev`: the seed of the incidents' schedule")
    simulate_cameras: int = Field(
        4,
        ge=0,
        le=50,
        description="`pantau dev`: test cameras served by GStreamer's RTSP server with the system "
        "python3 and registered as `camera` devices: moving, frozen, one that goes away now and "
        "then, ... (0 = none)",
    )


class DevicesSettings(_Section):
    import_max_rows: int = Field(
        100_000,
        ge=1,
        description="most device rows one import (CSV, XLSX or GeoJSON) may hold; a larger file "
        "is refused whole (API: 413)",
    )


class Settings(BaseSettings):
    """The effective configuration of one Pantau process."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="forbid",
        validate_default=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    storage: StorageSettings = StorageSettings()
    service: ServiceSettings = Field(default_factory=ServiceSettings)  # $STATE_DIRECTORY: now
    embedded: EmbeddedSettings = EmbeddedSettings()
    devices: DevicesSettings = DevicesSettings()
    outages: OutagesSettings = OutagesSettings()
    streams: StreamsSettings = StreamsSettings()
    grafana: GrafanaSettings = GrafanaSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init values; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _in_state_dir(self) -> Settings:
        """Relative spool and snapshot directories live in `service.state_dir` when it is set."""
        base = self.service.state_dir
        if base is None:
            return self
        if not self.ingest.spool_dir.is_absolute():
            self.ingest = self.ingest.model_copy(update={"spool_dir": base / self.ingest.spool_dir})
        if not self.streams.snapshot_dir.is_absolute():
            self.streams = self.streams.model_copy(
                update={"snapshot_dir": base / self.streams.snapshot_dir}
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced."""
        data = self.model_dump(mode="json")
        data["database"]["url"] = self.database.redacted_url()
        return data


def load_settings(config_file: Path | None = None) -> Settings:
    """Read the settings once; raise ConfigError naming the key, the value and what was expected."""
    env = os.environ
    path, explicit = _config_path(config_file, env)
    file_data = _read_toml(path, explicit)
    _check_env_keys(env)
    try:
        return Settings(**file_data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path if file_data else None, env)) from None


def reference_table() -> str:
    """Every setting as a Markdown table row: key, environment variable, default, meaning."""
    rows = [
        "| key | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        for key, field in getattr(model, "model_fields", {}).items():
            if field.default_factory is not None:
                default = "(see below)" if key == "mappings" else "(computed)"
            else:
                default = "(not set)" if field.default is None else f"`{field.default}`"
            env = f"{ENV_PREFIX}{section.upper()}{ENV_NESTED}{key.upper()}"
            rows.append(f"| `{section}.{key}` | `{env}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


def render_toml(data: Mapping[str, Any]) -> str:
    """Render two-level settings as TOML, the same shape `pantau.toml` takes."""
    lines: list[str] = []
    for section, values in data.items():
        tables = {k: v for k, v in values.items() if _is_table_list(v)}
        lines.append(f"[{section}]")
        lines.extend(_toml_pairs({k: v for k, v in values.items() if k not in tables}))
        lines.append("")
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines.extend(_toml_pairs(item))
                lines.append("")
    return "\n".join(lines)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_pairs(values: Mapping[str, Any]) -> list[str]:
    return [
        f"# {key} = (not set)" if value is None else f"{key} = {_toml_value(value)}"
        for key, value in values.items()
    ]


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def _config_path(config_file: Path | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    if config_file is not None:
        return config_file, True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return DEFAULT_CONFIG_FILE, False


def _read_toml(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None


def _check_env_keys(env: Mapping[str, str]) -> None:
    for name in env:
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split(ENV_NESTED)
        section = Settings.model_fields.get(parts[0])
        section_type = section.annotation if section else None
        if (
            len(parts) != 2
            or not isinstance(section_type, type)
            or parts[1] not in getattr(section_type, "model_fields", {})
        ):
            known = _known_env_names()
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"unknown setting {name}: {hint}expected PANTAU_<SECTION>__<KEY> for a key listed "
                "by `pantau config check`"
            )


def _known_env_names() -> list[str]:
    names = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        for key in getattr(model, "model_fields", {}):
            names.append(f"{ENV_PREFIX}{section.upper()}{ENV_NESTED}{key.upper()}")
    return names


def _describe(exc: ValidationError, path: Path | None, env: Mapping[str, str]) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        env_name = ENV_PREFIX + ENV_NESTED.join(str(p) for p in err["loc"]).upper()
        source = f"environment {env_name}" if env_name in env else str(path or "defaults")
        secret = any(word in key for word in _SECRET_WORDS)
        shown = "<hidden>" if secret else repr(err.get("input"))
        if err["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown setting (in {source})")
        else:
            expected = err["msg"].removeprefix("Value error, ")
            problems.append(f"{key} = {shown} (in {source}): {expected}")
    return "invalid configuration:\n  " + "\n  ".join(problems)

"""`pantau dev`: the embedded default. PostgreSQL and Mosquitto of our own under `var/`, on free
ports remembered between runs, then the service pointed at them."""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pydantic import SecretStr

from pantau.embedded import (
    CameraServer,
    MosquittoBroker,
    PostgresCluster,
    free_port,
    port_is_free,
)
from pantau.errors import MissingDependency
from pantau.mappings import default_mappings, topic_filter
from pantau.settings import EmbeddedSettings, MqttSettings, Settings

if TYPE_CHECKING:
    from ingest.simulator import Device as SimulatedDevice

log = logging.getLogger(__name__)

ADMIN_USER = "pantau-admin"
SIMULATOR_USER = "pantau-simulator"


CAMERA_USER = "pantau"
# The test server's mounts in the order cameras are given them: `embedded.simulate_cameras` = 4
# gives two healthy ones, a frozen picture and one that goes away now and then; past the list,
# more healthy ones (sharing a stream: the server encodes each mount once).
CAMERA_MOUNTS = ("moving", "moving", "frozen", "stops", "secure", "night", "covered", "black")
CAMERA_FLAPS = ("stops:300:60",)  # up 5 min, down 1 min (an outage to watch)
SIMULATED_CAMERA = "simulated_camera"  # the metadata key marking a test camera: its mount


@dataclass(frozen=True)
class Ports:
    postgres: int
    mqtt: int
    cameras: int


@dataclass(frozen=True)
class SimulatedCamera:
    device_id: str
    mount: str
    kecamatan: str  # its id
    kecamatan_name: str
    latitude: float
    longitude: float


def build_cameras(count: int) -> list[SimulatedCamera]:
    """`count` test cameras spread over the kecamatan (ids `cam-<kecamatan>-NN`)."""
    from ingest.simulator import KECAMATAN, slug

    cameras = []
    for i in range(count):
        name, lat, lon, _coast = KECAMATAN[(i * 7) % len(KECAMATAN)]
        number = i // len(KECAMATAN) + 1
        cameras.append(
            SimulatedCamera(
                device_id=f"cam-{slug(name)}-{number:02d}",
                mount=CAMERA_MOUNTS[i] if i < len(CAMERA_MOUNTS) else "moving",
                kecamatan=slug(name),
                kecamatan_name=name,
                latitude=round(lat + 0.003 * (i % 5), 5),
                longitude=round(lon - 0.003 * (i % 3), 5),
            )
        )
    return cameras


class DevStack:
    """Starts the embedded PostgreSQL and Mosquitto in order, and stops them in reverse."""

    def __init__(self, settings: EmbeddedSettings) -> None:
        self.var_dir = settings.var_dir.absolute()
        self._state_file = self.var_dir / "ports.json"
        ports = self._choose_ports()
        self.postgres = PostgresCluster(
            self.var_dir / "pg",
            self.var_dir / "run",
            self.var_dir / "log" / "postgresql.log",
            port=ports.postgres,
            bin_dir=settings.postgres_bin_dir,
        )
        self.admin_password = self._secret("mqtt-pantau-admin")
        self.simulator_password = self._secret("mqtt-simulator")
        self.mosquitto = MosquittoBroker(
            self.var_dir / "mosquitto",
            port=ports.mqtt,
            binary=settings.mosquitto_bin,
            dynsec_admin=(ADMIN_USER, self.admin_password),
        )
        self.camera_password = self._secret("camera-password")
        self.cameras: CameraServer | None = None
        if settings.simulate_cameras:
            self.cameras = CameraServer(
                self.var_dir / "log" / "testcameras.log",
                port=ports.cameras,
                auth=f"{CAMERA_USER}:{self.camera_password}",
                flaps=CAMERA_FLAPS,
            )
        self.cameras_missing: str | None = None  # why there are no cameras, when so
        self.reused = self.postgres.initialized

    def __enter__(self) -> Self:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.var_dir.chmod(0o755)  # the postgres and mosquitto users must reach their dirs
        ports = {"postgres": self.postgres.port, "mqtt": self.mosquitto.port}
        if self.cameras:
            ports["cameras"] = self.cameras.port
        self._state_file.write_text(json.dumps(ports) + "\n")
        self.postgres.start()
        try:
            self.mosquitto.start()
            self._simulator_client()
            self._start_cameras()
        except BaseException:
            self.mosquitto.stop()
            self.postgres.stop()
            raise
        log.info(
            "embedded stack up in %s: PostgreSQL on port %d, Mosquitto on port %d",
            self.var_dir,
            self.postgres.port,
            self.mosquitto.port,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.cameras:
                self.cameras.stop()
        finally:
            try:
                self.mosquitto.stop()
            finally:
                self.postgres.stop()
        log.info("embedded stack stopped")

    def _start_cameras(self) -> None:
        """The test cameras, or none (and why) when the system python3 lacks GStreamer."""
        if self.cameras is None:
            return
        try:
            self.cameras.start()
        except MissingDependency as exc:
            self.cameras_missing = str(exc)
            self.cameras = None

    def camera_url(self, port: int, mount: str) -> str:
        userinfo = f"{CAMERA_USER}:{self.camera_password}@" if mount == "secure" else ""
        return f"rtsp://{userinfo}127.0.0.1:{port}/{mount}"

    async def register_cameras(
        self, settings: Settings, cameras: list[SimulatedCamera]
    ) -> tuple[int, int, int]:
        """Register the test cameras as `camera` devices with their stream (the `cameras`
        row), as register_simulated does the sensors: idempotent, a changed URL (another port)
        brought in line, cameras no longer simulated retired and disabled, a device registered
        by hand under a camera's id left alone. Returns (created, updated, retired)."""
        from devices import registry
        from devices.models import DeviceIn, DevicePatch
        from pantau import db

        if self.cameras is None:
            return 0, 0, 0
        port = self.cameras.port
        created = updated = retired = 0
        async with await db.connect(settings.database, autocommit=True) as conn:
            refs = await registry.references(conn)
            type_name = refs.types["camera"].name_id
            existing = {
                d.device_id: d
                for d in await registry.list_devices(
                    conn, registry.Filters(device_type="camera", limit=1_000_000)
                )
            }
            async with conn.transaction():
                for camera in cameras:
                    wanted = {
                        "name": f"{type_name} {camera.kecamatan_name} {camera.device_id[-2:]} "
                        f"(simulasi: {camera.mount})",
                        "device_type": "camera",
                        "kecamatan": camera.kecamatan,
                        "latitude": camera.latitude,
                        "longitude": camera.longitude,
                    }
                    current = existing.get(camera.device_id)
                    if current is None:
                        await registry.create_device(
                            conn,
                            DeviceIn.model_validate(
                                {
                                    "device_id": camera.device_id,
                                    "installed_by": SIMULATED_BY,
                                    "metadata": {SIMULATED_CAMERA: camera.mount},
                                    **wanted,
                                }
                            ),
                            "pantau dev",
                            refs,
                        )
                        created += 1
                    elif SIMULATED_CAMERA not in current.metadata:
                        log.warning(
                            "device %s is registered by hand: left alone", current.device_id
                        )
                        continue
                    else:
                        changes: dict[str, object] = {
                            k: v for k, v in wanted.items() if getattr(current, k) != v
                        }
                        if current.metadata.get(SIMULATED_CAMERA) != camera.mount:
                            changes["metadata"] = {SIMULATED_CAMERA: camera.mount}
                        if current.status == "retired":
                            changes["status"] = "active"
                        if changes:
                            await registry.update_device(
                                conn,
                                camera.device_id,
                                DevicePatch.model_validate(changes),
                                current.version,
                                "pantau dev",
                                refs,
                            )
                            updated += 1
                    await conn.execute(
                        "INSERT INTO cameras (device_id, rtsp_url) VALUES (%s, %s)"
                        " ON CONFLICT (device_id) DO UPDATE SET rtsp_url = EXCLUDED.rtsp_url,"
                        " enabled = true, version = cameras.version + 1, updated_at = now()"
                        " WHERE cameras.rtsp_url <> EXCLUDED.rtsp_url OR NOT cameras.enabled",
                        (camera.device_id, self.camera_url(port, camera.mount)),
                    )
                simulated = {camera.device_id for camera in cameras}
                for device in existing.values():
                    if (
                        SIMULATED_CAMERA in device.metadata
                        and device.device_id not in simulated
                        and device.status != "retired"
                    ):
                        await registry.update_device(
                            conn,
                            device.device_id,
                            DevicePatch(status="retired"),
                            device.version,
                            "pantau dev",
                            refs,
                        )
                        await conn.execute(
                            "UPDATE cameras SET enabled = false, version = version + 1,"
                            " updated_at = now() WHERE device_id = %s",
                            (device.device_id,),
                        )
                        retired += 1
        return created, updated, retired

    def apply(self, settings: Settings) -> Settings:
        """The settings with the database and the broker pointed at this stack."""
        return settings.model_copy(
            update={
                "database": settings.database.model_copy(update={"url": self.postgres.dsn()}),
                "mqtt": self._mqtt(settings.mqtt),
                "ingest": settings.ingest.model_copy(update=self._ingest(settings)),
            }
        )

    def _ingest(self, settings: Settings) -> dict[str, object]:
        """The spool in the var directory; one ingest process unless `ingest.processes` is set
        (a developer's stack: the broker and PostgreSQL share the laptop's cores)."""
        update: dict[str, object] = {"spool_dir": self.var_dir / "spool"}
        if "processes" not in settings.ingest.model_fields_set:
            update["processes"] = 1
        return update

    def _mqtt(self, mqtt: MqttSettings) -> MqttSettings:
        return mqtt.model_copy(
            update={
                "host": "127.0.0.1",
                "port": self.mosquitto.port,
                "username": ADMIN_USER,
                "password": SecretStr(self.admin_password),
                "dynsec": True,
            }
        )

    async def dev_token(self, settings: Settings) -> str | None:
        """An admin token for trying the API and the phone page, made once and kept in
        var/secrets while it stays valid (it is printed on the terminal: a dev stack only).
        None when the database cannot be reached now: Pantau starts anyway and migrates later."""
        return await self._kept_token(settings, "admin", "api-admin-token", "make run (pantau dev)")

    async def wall_token(self, settings: Settings) -> str | None:
        """An operator token for the wall's sign-in link, kept in var/secrets like the admin's."""
        return await self._kept_token(settings, "operator", "api-wall-token", "Dinding (make run)")

    async def _kept_token(
        self, settings: Settings, role: str, file_name: str, name: str
    ) -> str | None:
        from pantau.errors import DatabaseUnavailable

        try:
            return await self._token(settings, role, self.var_dir / "secrets" / file_name, name)
        except DatabaseUnavailable as exc:
            log.warning("no %s token made: %s", role, exc)
            return None

    async def _token(self, settings: Settings, role: str, path: Path, name: str) -> str:
        from pantau import auth, db, migrate

        async with await db.connect(settings.database, autocommit=True) as conn:
            await migrate.migrate(conn, settings.storage.backend)
            token = _read_secret(path)
            if token:
                found = await auth.authenticate(conn, token)
                if found is not None and found.role == role:
                    return token
            created = await auth.create_token(conn, name, role, "pantau dev")
        _write_secret(path, created.token)
        return created.token

    async def register_simulated(
        self, settings: Settings, devices: list[SimulatedDevice], interval_seconds: int
    ) -> tuple[int, int, int]:
        """Register the simulated sensors as devices (type, kecamatan, position, interval), so
        the registry, the API and the wall show what `make run` feeds. Idempotent: a device
        already there is left alone, or brought in line when a run changed it (another rate,
        another format, active again); simulated devices no longer simulated (a smaller
        `embedded.simulate_devices`) are retired, so they do not show as outages; a device
        someone registered by hand under a simulated id is never touched. Every change is
        audited (actor `pantau dev`). Returns (created, updated, retired)."""
        from devices import registry
        from devices.models import DeviceIn, DevicePatch
        from pantau import db

        created = updated = retired = 0
        async with await db.connect(settings.database, autocommit=True) as conn:
            refs = await registry.references(conn)
            existing = {
                d.device_id: d
                for d in await registry.list_devices(conn, registry.Filters(limit=1_000_000))
            }
            async with conn.transaction():
                for sim in devices:
                    wanted = {
                        "name": _simulated_name(sim, refs.types[sim.device_type].name_id),
                        "device_type": sim.device_type,
                        "kecamatan": sim.kecamatan_id,
                        "latitude": sim.latitude,
                        "longitude": sim.longitude,
                        "expected_interval_seconds": interval_seconds,
                        "payload_format": sim.fmt,
                    }
                    current = existing.get(sim.device_id)
                    if current is None:
                        await registry.create_device(
                            conn,
                            DeviceIn.model_validate(
                                {
                                    "device_id": sim.device_id,
                                    "installed_by": SIMULATED_BY,
                                    "metadata": {"simulated": True},
                                    **wanted,
                                }
                            ),
                            "pantau dev",
                            refs,
                        )
                        created += 1
                        continue
                    if not current.metadata.get("simulated"):
                        log.warning(
                            "device %s is registered by hand: the simulator publishes as it",
                            sim.device_id,
                        )
                        continue
                    changes: dict[str, object] = {
                        k: v for k, v in wanted.items() if getattr(current, k) != v
                    }
                    if current.status == "retired":
                        changes["status"] = "active"
                    if changes:
                        await registry.update_device(
                            conn,
                            sim.device_id,
                            DevicePatch.model_validate(changes),
                            current.version,
                            "pantau dev",
                            refs,
                        )
                        updated += 1
                simulated = {sim.device_id for sim in devices}
                for device in existing.values():
                    if (
                        device.metadata.get("simulated")
                        and device.device_id not in simulated
                        and device.status != "retired"
                    ):
                        await registry.update_device(
                            conn,
                            device.device_id,
                            DevicePatch(status="retired"),
                            device.version,
                            "pantau dev",
                            refs,
                        )
                        retired += 1
        return created, updated, retired

    def write_client_config(self, settings: Settings) -> Path:
        """var/dev.toml: what `pantau` commands in another terminal need to reach this stack
        (`export PANTAU_CONFIG=var/dev.toml`), the HTTP address included (sign-in links)."""
        path = self.var_dir / "dev.toml"
        mqtt = settings.mqtt
        password = mqtt.password.get_secret_value() if mqtt.password else ""
        path.touch(mode=0o600)
        path.write_text(
            "# Written by `pantau dev` at each start, for commands in another terminal:\n"
            f"#   export PANTAU_CONFIG={path}\n"
            f"[database]\nurl = {_quote(settings.database.url)}\n\n"
            f"[mqtt]\nhost = {_quote(mqtt.host)}\nport = {mqtt.port}\n"
            f"username = {_quote(mqtt.username or '')}\npassword = {_quote(password)}\n"
            f"dynsec = {'true' if mqtt.dynsec else 'false'}\n\n"
            f"[http]\nhost = {_quote(settings.http.host)}\nport = {settings.http.port}\n"
        )
        return path

    def _secret(self, name: str) -> str:
        """A password of the stack, made at the first run and kept in var/secrets."""
        path = self.var_dir / "secrets" / name
        if path.is_file():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        password = secrets.token_urlsafe(24)
        path.touch(mode=0o600)
        path.write_text(password + "\n")
        return password

    def _simulator_client(self) -> None:
        """A broker client for the simulated sensors: it may publish on the default topics."""
        from devices.dynsec import Dynsec

        role = "pantau-simulator"
        acls = [
            {
                "command": "addRoleACL",
                "rolename": role,
                "acltype": "publishClientSend",
                "topic": topic_filter(mapping.topic),  # the simulator uses the default mappings
                "priority": 0,
                "allow": True,
            }
            for mapping in default_mappings()
        ]
        # Pantau's admin may publish there too, so `pantau simulate` works with var/dev.toml.
        admin_acls = [{**acl, "rolename": "admin"} for acl in acls]
        Dynsec(self._mqtt(MqttSettings())).execute(
            [
                {"command": "createRole", "rolename": role},
                *acls,
                *admin_acls,
                {
                    "command": "createClient",
                    "username": SIMULATOR_USER,
                    "password": self.simulator_password,
                    "roles": [{"rolename": role}],
                },
            ],
            ignore=("already exists",),
        )

    def _choose_ports(self) -> Ports:
        """The ports of the last run when still free, so clients configured then keep working."""
        previous: dict[str, int] = {}
        if self._state_file.is_file():
            try:
                previous = json.loads(self._state_file.read_text())
            except (OSError, ValueError):
                log.warning("ignoring unreadable %s", self._state_file)
        return Ports(
            postgres=_reuse_or_free(previous.get("postgres"), Path(self.var_dir / "pg")),
            mqtt=_reuse_or_free(previous.get("mqtt"), None),
            cameras=_reuse_or_free(previous.get("cameras"), None),
        )


def _read_secret(path: Path) -> str | None:
    return path.read_text().strip() if path.is_file() else None


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")


def _reuse_or_free(port: object, data_dir: Path | None) -> int:
    # Our own PostgreSQL left running by a killed run holds its port; it is restarted there.
    left_running = data_dir is not None and (data_dir / "postmaster.pid").exists()
    if isinstance(port, int) and 1024 < port < 65536 and (left_running or port_is_free(port)):
        return port
    return free_port()


SIMULATED_BY = "pantau dev (simulator)"


def _simulated_name(device: SimulatedDevice, type_name: str) -> str:
    number = device.device_id.rsplit("-", 1)[-1]
    return f"{type_name} {device.kecamatan} {number} (simulasi)"


def cli_command(config: Path) -> str:
    """The line to paste in another terminal: this installation's own `pantau` (the one next to
    the running Python, so no virtualenv needs activating) with the stack's client config."""
    here = Path(sys.executable).parent
    pantau = here / "pantau"
    if pantau.is_file():
        program = shlex.quote(str(pantau))
    else:
        program = f"{shlex.quote(sys.executable)} -m pantau"
    return f"PANTAU_CONFIG={shlex.quote(str(config))} {program}"


def activate_hint(config: Path) -> str:
    """The same for a shell that is to run several commands: activate, export the config."""
    activate = Path(sys.executable).parent / "activate"
    where = shlex.quote(str(activate)) if activate.is_file() else ".venv/bin/activate"
    return f"source {where}; export PANTAU_CONFIG={shlex.quote(str(config))}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

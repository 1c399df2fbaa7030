"""The embedded stack of `pantau dev` (and of the test fixtures): a private PostgreSQL cluster and
a private Mosquitto, in a directory of our own, on free ports, never the machine's services.

Two traps on machines where everything runs as root: PostgreSQL refuses to run as root, so its
programs run as the `postgres` system user on directories that user owns; Mosquitto started as
root drops to the `mosquitto` user, so its directories are handed to that user too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psycopg
from psycopg import sql

from pantau.errors import EmbeddedStackError, MissingDependency

log = logging.getLogger(__name__)

POSTGRES_PACKAGE = "postgresql-15"
MOSQUITTO_PACKAGE = "mosquitto"
_PG_ROOT = Path("/usr/lib/postgresql")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def find_postgres_bin(configured: Path | None = None) -> Path:
    """The directory holding initdb and pg_ctl: the configured one or the newest installed."""
    if configured is not None:
        candidates = [configured]
    else:
        found = _PG_ROOT.glob("*/bin") if _PG_ROOT.is_dir() else []
        candidates = sorted(found, key=lambda p: _version_key(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    where = str(configured) if configured else f"{_PG_ROOT}/*/bin"
    raise MissingDependency(
        f"PostgreSQL server programs (initdb, pg_ctl) not found in {where}: "
        f"install the Debian package {POSTGRES_PACKAGE} (apt-get install {POSTGRES_PACKAGE})"
    )


def find_mosquitto(binary: str = "mosquitto") -> str:
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise MissingDependency(
            f"the MQTT broker {binary!r} was not found: install the Debian package "
            f"{MOSQUITTO_PACKAGE} (apt-get install {MOSQUITTO_PACKAGE})"
        )
    return found


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def _service_user(name: str) -> pwd.struct_passwd | None:
    """The system user a server must run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise MissingDependency(
            f"running as root, but there is no {name!r} system user to run the server as: "
            f"install the Debian package {POSTGRES_PACKAGE if name == 'postgres' else name}"
        ) from None


def _own(paths: Sequence[Path], user: pwd.struct_passwd | None) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)


def _check_reachable(path: Path, user: pwd.struct_passwd | None) -> None:
    """Every ancestor of `path` must let the service user through, or the server cannot start."""
    if user is None:
        return
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001 and parent.stat().st_uid != user.pw_uid:
            raise EmbeddedStackError(
                f"the {user.pw_name} user cannot reach {path}: {parent} is not searchable by "
                f"others; expected a directory path it can traverse (chmod o+x {parent}) "
                "or another embedded.var_dir"
            )


def _run(
    argv: Sequence[str], *, user: pwd.struct_passwd | None, what: str, new_session: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = list(argv) if user is None else ["runuser", "-u", user.pw_name, "--", *argv]
    result = subprocess.run(  # noqa: S603 - fixed programs, arguments we built
        cmd,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        start_new_session=new_session,
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise EmbeddedStackError(f"{what} failed (exit {result.returncode}): {output}")
    return result


class PostgresCluster:
    """A PostgreSQL cluster in `data_dir`, listening on `socket_dir` and 127.0.0.1:`port`.

    Local (socket) connections are trusted; TCP needs the password kept in `password_file`.
    """

    def __init__(
        self,
        data_dir: Path,
        socket_dir: Path,
        log_file: Path,
        *,
        port: int,
        bin_dir: Path | None = None,
        user: str = "pantau",
        database: str = "pantau",
        server_options: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.socket_dir = socket_dir.absolute()
        self.log_file = log_file.absolute()
        self.password_file = self.data_dir.parent / "pg-password"
        self.port = port
        self.bin_dir = find_postgres_bin(bin_dir)
        self.user = user
        self.database = database
        self.server_options = list(server_options)
        self._runas = _service_user("postgres")

    def dsn(self, database: str | None = None) -> str:
        return (
            f"postgresql://{self.user}@/{database or self.database}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def init(self, *, fast: bool = False) -> None:
        """initdb the cluster; `fast` skips fsync (for throwaway test clusters only)."""
        _check_reachable(self.data_dir, self._runas)
        _own([self.data_dir, self.socket_dir, self.log_file.parent], self._runas)
        os.chmod(self.data_dir, 0o700)
        password = secrets.token_urlsafe(24)
        pwfile = self.data_dir.parent / ".pg-initdb-password"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password + "\n")
        if self._runas is not None:
            os.chown(pwfile, self._runas.pw_uid, self._runas.pw_gid)
        try:
            argv = [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "--username",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ]
            if fast:
                argv.append("--no-sync")
            _run(argv, user=self._runas, what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        log.info("initialized PostgreSQL cluster in %s", self.data_dir)

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        cmd = [str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)]
        full = cmd if self._runas is None else ["runuser", "-u", self._runas.pw_name, "--", *cmd]
        result = subprocess.run(full, capture_output=True, check=False, cwd="/")  # noqa: S603
        return result.returncode == 0

    def start(self) -> None:
        if not self.initialized:
            self.init()
        _own([self.socket_dir, self.log_file.parent], self._runas)
        if self.running():
            # Left behind by a run that was killed: stop it, then start on the chosen port.
            log.warning("PostgreSQL in %s was still running; restarting it", self.data_dir)
            self.stop()
        options = [
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            *self.server_options,
        ]
        _run(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                " ".join(options),
            ],
            user=self._runas,
            what=f"starting PostgreSQL (log: {self.log_file})",
            new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
        self.create_database(self.database)

    def create_database(self, name: str, template: str | None = None) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone():
                return
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        _run(
            [
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                mode,
                "-D",
                str(self.data_dir),
            ],
            user=self._runas,
            what="stopping PostgreSQL",
        )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the thread that started us dies (Linux).

    It is the starting *thread* that counts, so brokers are started from the main thread."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def find_dynsec_plugin() -> Path:
    for candidate in sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")):
        return candidate
    raise MissingDependency(
        "Mosquitto's dynamic security plugin (mosquitto_dynamic_security.so) was not found: "
        f"install the Debian package {MOSQUITTO_PACKAGE} (version 2)"
    )


# Payloads above this never reach Pantau; a little above ingest.max_payload_bytes (256 KiB), so
# large ones are still seen (and quarantined as payload_too_large) while absurd ones are not.
MESSAGE_SIZE_LIMIT = 320 * 1024


class MosquittoBroker:
    """A Mosquitto 2 broker with its config, persistence and log in `base_dir`. With
    `dynsec_admin` (user, password) it runs the dynamic security plugin: no anonymous clients,
    and that user holds the plugin's admin role."""

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int,
        binary: str = "mosquitto",
        extra_config: Sequence[str] = (),
        dynsec_admin: tuple[str, str] | None = None,
    ) -> None:
        self.base_dir = base_dir.absolute()
        self.port = port
        self.binary = find_mosquitto(binary)
        self.extra_config = list(extra_config)
        self.dynsec_admin = dynsec_admin
        self.dynsec_file = self.base_dir / "dynamic-security.json"
        self.config_file = self.base_dir / "mosquitto.conf"
        self.log_file = self.base_dir / "mosquitto.log"
        self._runas = _service_user("mosquitto")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write_config(self) -> None:
        data = self.base_dir / "data"
        _check_reachable(self.base_dir, self._runas)
        _own([self.base_dir, data], self._runas)
        lines = [
            "# Generated by Pantau for its embedded broker; edits are overwritten at start.",
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.dynsec_admin else 'true'}",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 60",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            f"message_size_limit {MESSAGE_SIZE_LIMIT}",
            *self.extra_config,
        ]
        if self.dynsec_admin:
            self._init_dynsec(*self.dynsec_admin)
            lines += [
                f"plugin {find_dynsec_plugin()}",
                f"plugin_opt_config_file {self.dynsec_file}",
            ]
        self.config_file.write_text("\n".join(lines) + "\n")

    def _init_dynsec(self, user: str, password: str) -> None:
        """The plugin's first configuration: `user` with the admin role (kept when it exists)."""
        if self.dynsec_file.exists():
            return
        ctrl = shutil.which("mosquitto_ctrl")
        if ctrl is None:
            raise MissingDependency(
                "mosquitto_ctrl was not found: install the Debian package mosquitto-clients"
            )
        _run(
            [ctrl, "dynsec", "init", str(self.dynsec_file), user, password],
            user=None,
            what="mosquitto_ctrl dynsec init",
        )
        self.dynsec_file.chmod(0o600)
        if self._runas is not None:
            os.chown(self.dynsec_file, self._runas.pw_uid, self._runas.pw_gid)

    def start(self, timeout: float = 15.0) -> None:
        self.write_config()
        log_fh = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our binary and config
                [self.binary, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=log_fh,
                start_new_session=True,
                # Switch user here rather than let Mosquitto drop root itself: a credential
                # change clears the parent-death signal set just before exec.
                user=self._runas.pw_uid if self._runas else None,
                group=self._runas.pw_gid if self._runas else None,
                extra_groups=[] if self._runas else None,
                preexec_fn=_die_with_parent,  # started from the main thread, see _die_with_parent
            )
        finally:
            log_fh.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedStackError(
                    f"Mosquitto exited at start (exit {self._process.returncode}): "
                    f"{self._log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedStackError(f"Mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("Mosquitto did not stop within %.0fs; killing it", timeout)
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop at once, as a crash would (for fault tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


SYSTEM_PYTHON = "/usr/bin/python3"
CAMERA_PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-x"
)
_GST_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "print(' '.join(e for e in ('x264enc', 'timeoverlay', 'imagefreeze') "
    "if Gst.ElementFactory.find(e) is None))"
)


def camera_server_script() -> Path:
    """streams/testserver.py, run by the system python3 (it imports gi, not Pantau)."""
    from importlib.resources import files

    return Path(str(files("streams").joinpath("testserver.py")))


def check_camera_server(python: str = SYSTEM_PYTHON) -> None:
    """MissingDependency naming the Debian packages when `python` cannot serve test cameras."""
    try:
        result = subprocess.run(  # noqa: S603 - the system python and our own check
            [python, "-c", _GST_CHECK], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MissingDependency(
            f"{python} cannot run GStreamer's RTSP server ({exc}): install {CAMERA_PACKAGES}"
        ) from exc
    if result.returncode != 0 or result.stdout.strip():
        missing = result.stdout.strip() or "no python3-gi or GstRtspServer"
        raise MissingDependency(
            f"{python} cannot run GStreamer's RTSP server ({missing}): install {CAMERA_PACKAGES}"
        )


class CameraServer:
    """The test cameras (streams/testserver.py) as a child process, logging to `log_file`.

    Its stdin stays open: when we die the pipe closes and it exits too."""

    def __init__(
        self,
        log_file: Path,
        *,
        port: int,
        auth: str | None = None,
        flaps: Sequence[str] = (),
        python: str = SYSTEM_PYTHON,
    ) -> None:
        self.log_file = log_file
        self.port = port
        self.auth = auth
        self.flaps = list(flaps)
        self.python = python
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> None:
        check_camera_server(self.python)
        args = [self.python, str(camera_server_script()), "--port", str(self.port)]
        if self.auth:
            args += ["--auth", self.auth]
        for flap in self.flaps:
            args += ["--flap", flap]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_fh:
            self._process = subprocess.Popen(  # noqa: S603 - our script
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_fh,
                text=True,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                preexec_fn=_die_with_parent,  # started from the main thread, see _die_with_parent
            )
        ready = _read_line(self._process.stdout, timeout)
        if not ready.startswith("ready "):
            self.stop()
            raise EmbeddedStackError(
                f"the test camera server did not start ({ready or 'no answer'}): "
                f"see {self.log_file}"
            )
        self.port = int(ready.split()[1])

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the test camera server did not stop within %.0fs; killing it", timeout)
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _read_line(stream: IO[str] | None, timeout: float) -> str:
    """One line from a child's pipe, or "" when it says nothing within `timeout`."""
    import selectors

    if stream is None:
        return ""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline().strip()

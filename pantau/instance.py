"""The instance's state on disk and its identity at the broker, checked once at start.

An instance is its state directory (the spool of acknowledged readings, camera snapshots) and its
MQTT client id (the broker's persistent session, with the messages queued while it is away). Both
must outlive a restart, a new container and a redeployed unit, so `pantau run` refuses a state
directory it cannot write, naming the directory, the user and the fix, and warns when the client
id is a default it cannot trust: `pantau-<hostname>` where the hostname is a container's.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path

from pantau.errors import ConfigError
from pantau.settings import Settings

# Docker and Podman name a container's host after its id: 12 (or 64) hex digits.
_CONTAINER_HOSTNAME = re.compile(r"^[0-9a-f]{12}([0-9a-f]{52})?$")
_CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))
# A Deployment's pod: <deployment>-<replica set hash>-<5 characters>, a new name at every start
# (a StatefulSet's pods keep theirs: <name>-0, <name>-1).
_DEPLOYMENT_POD = re.compile(r"^[a-z0-9-]+-[a-z0-9]{6,10}-[a-z0-9]{5}$")
_KUBERNETES_HINT = (
    " In Kubernetes, run Pantau as a StatefulSet and set PANTAU_MQTT__CLIENT_ID from the pod's "
    "name (valueFrom: fieldRef: fieldPath: metadata.name), the same for each replica at every "
    "restart."
)


def directories(settings: Settings) -> list[tuple[str, Path]]:
    """The directories this process writes, by the setting that names them."""
    dirs = [("ingest.spool_dir", settings.ingest.spool_dir)]
    if settings.streams.enabled:
        dirs.append(("streams.snapshot_dir", settings.streams.snapshot_dir))
    if settings.service.state_dir is not None:
        dirs.insert(0, ("service.state_dir", settings.service.state_dir))
    return dirs


def check_writable(settings: Settings) -> None:
    """ConfigError unless each state directory is writable, or can be created, by this user.

    Nothing is created here (the spool and the snapshot store make their directories when they
    first need them): a directory that does not exist yet is judged by its nearest parent."""
    for key, path in directories(settings):
        path = path.absolute()
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            problem = f"{existing} is not a directory"
        elif not os.access(existing, os.W_OK | os.X_OK):
            problem = (
                "permission denied"
                if existing == path
                else f"it does not exist and its parent {existing} is not writable"
            )
        else:
            continue
        raise ConfigError(_not_writable(key, path, problem))


def _not_writable(key: str, path: Path, problem: str) -> str:
    user = _user()
    return (
        f"{key}: cannot write {path} as user {user} (uid {os.getuid()}): {problem}. Pantau "
        "keeps its spool of acknowledged readings and camera snapshots there. Create it for "
        f"that user (`install -d -o {user} {path}`), or run under systemd with "
        "StateDirectory=pantau, or mount a volume the image's user owns at /var/lib/pantau, or "
        "point service.state_dir (PANTAU_SERVICE__STATE_DIR) at a directory that user can write"
    )


def _user() -> str:
    try:  # by the uid, not $USER: runuser, su and sudo may leave the caller's name there
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def untrusted_client_id(
    settings: Settings,
    hostname: str | None = None,
    markers: Iterable[Path] = _CONTAINER_MARKERS,
    environ: Mapping[str, str] = os.environ,
) -> str | None:
    """Why the MQTT client id cannot be trusted to stay the same, or None when it can."""
    if "client_id" in settings.mqtt.model_fields_set:
        return None  # set in the file or the environment: the operator's choice
    hostname = socket.gethostname() if hostname is None else hostname
    kubernetes = "KUBERNETES_SERVICE_HOST" in environ  # set in every pod
    hint = _KUBERNETES_HINT if kubernetes else ""
    if _CONTAINER_HOSTNAME.match(hostname):
        why = f"the hostname {hostname!r} looks like a container id"
    elif kubernetes and _DEPLOYMENT_POD.match(hostname):
        why = f"the hostname {hostname!r} looks like a Kubernetes Deployment's pod"
    elif kubernetes:
        why = "this process runs in a Kubernetes pod"
    elif any(marker.exists() for marker in markers):
        why = "this process runs in a container"
    else:
        return None
    return (
        f"mqtt.client_id defaults to {settings.mqtt.client_id!r} and {why}: a new container "
        "gets a new id, and the broker keeps the old session's queued messages for a client "
        "that never returns (and, with mqtt.shared_group, keeps routing it a share). Set "
        "PANTAU_MQTT__CLIENT_ID (or mqtt.client_id) to a fixed value per instance, e.g. "
        f"pantau-1.{hint}"
    )

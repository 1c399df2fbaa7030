"""`pantau grafana publish`: the folder, the dashboards and the kiosk playlist pushed to a running
Grafana over its HTTP API with grafana-client, idempotently: the folder and the dashboards keep
their uids (a re-publish overwrites them in place), the playlist is found by uid or name and
updated, else created. Grafana's answers become errors that say what was expected."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from pantau.errors import PantauError

log = logging.getLogger(__name__)
T = TypeVar("T")
MESSAGE = "pantau grafana publish"


class PublishError(PantauError):
    """Grafana could not be reached or refused a request; the message says what was expected."""

    exit_code = 2


@dataclass
class Report:
    """What a publish did, one line per thing, for the CLI to print."""

    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    timeout_seconds: float


def publish(
    target: Target,
    *,
    folder: dict[str, object],
    dashboards: Sequence[dict[str, object]],
    playlist: dict[str, object],
    include_dashboards: bool = True,
) -> Report:
    """Push to Grafana; `include_dashboards=False` pushes only the playlist (the dashboards are
    provisioned from files, which Grafana's API then refuses to overwrite)."""
    api = _api(target)
    report = Report()
    if include_dashboards:
        _folder(api, target, folder, report)
        for dashboard in dashboards:
            _dashboard(api, target, dashboard, str(folder["uid"]), report)
    _playlist(api, target, playlist, report)
    return report


def _api(target: Target) -> GrafanaApi:
    parts = urlsplit(target.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublishError(
            f"--url {target.url!r}: expected Grafana's address, e.g. http://grafana:3000"
        )
    prefix = parts.path.strip("/")
    return GrafanaApi(
        target.token,
        host=parts.hostname,
        port=parts.port,
        protocol=parts.scheme,
        url_path_prefix=f"{prefix}/" if prefix else "",
        timeout=target.timeout_seconds,
    )


def _folder(api: GrafanaApi, target: Target, folder: dict[str, object], report: Report) -> None:
    uid, title = str(folder["uid"]), str(folder["title"])
    existing = _call(
        target, f"read folder {uid!r}", lambda: api.folder.get_folder(uid), none_on=404
    )
    if existing is None:
        _call(target, f"create folder {uid!r}", lambda: api.folder.create_folder(title, uid=uid))
        report.lines.append(f"folder {uid} ({title}): created")
    elif existing.get("title") != title:
        _call(
            target,
            f"rename folder {uid!r}",
            lambda: api.folder.update_folder(uid, title=title, overwrite=True),
        )
        report.lines.append(f"folder {uid} ({title}): renamed")
    else:
        report.lines.append(f"folder {uid} ({title}): unchanged")


def _dashboard(
    api: GrafanaApi, target: Target, dashboard: dict[str, object], folder_uid: str, report: Report
) -> None:
    uid = str(dashboard["uid"])
    body = {
        "dashboard": {**dashboard, "id": None},
        "folderUid": folder_uid,
        "overwrite": True,
        "message": MESSAGE,
    }
    answer = _call(target, f"save dashboard {uid!r}", lambda: api.dashboard.update_dashboard(body))
    version = answer.get("version") if isinstance(answer, dict) else None
    report.lines.append(f"dashboard {uid} ({dashboard.get('title')}): saved, version {version}")


def _playlist(api: GrafanaApi, target: Target, playlist: dict[str, object], report: Report) -> None:
    uid, name = str(playlist["uid"]), str(playlist["name"])
    found = _call(
        target,
        "list playlists",
        lambda: api.client.GET("/playlists", params={"query": name}),
    )
    if not isinstance(found, list):
        raise PublishError(
            f"{target.url}: GET /api/playlists answered {json.dumps(found)[:200]}; expected a "
            "list of playlists (is this a Grafana?)"
        )
    same = [
        p for p in found if isinstance(p, dict) and (p.get("uid") == uid or p.get("name") == name)
    ]
    if same:
        existing = str(same[0]["uid"])
        _call(
            target,
            f"update playlist {existing!r}",
            lambda: api.client.PUT(f"/playlists/{existing}", json={**playlist, "uid": existing}),
        )
        report.lines.append(f"playlist {existing} ({name}): updated")
    else:
        _call(
            target, f"create playlist {uid!r}", lambda: api.client.POST("/playlists", json=playlist)
        )
        report.lines.append(f"playlist {uid} ({name}): created")


def _call(
    target: Target, what: str, request: Callable[[], T], *, none_on: int | None = None
) -> T | Any:
    """Run one request; turn grafana-client's and niquests' errors into a PublishError naming
    what Pantau tried, what Grafana said and what was expected."""
    where = target.url
    try:
        return request()
    except GrafanaUnauthorizedError:
        raise PublishError(
            f"{where}: Grafana refused the token (401) to {what}: expected a valid service "
            "account token (Administration > Users and access > Service accounts), given with "
            "--token-file or PANTAU_GRAFANA__TOKEN"
        ) from None
    except GrafanaTimeoutError:
        raise PublishError(
            f"{where}: no answer within the timeout to {what}: expected Grafana to answer "
            "(grafana.timeout_seconds)"
        ) from None
    except GrafanaClientError as exc:
        if none_on is not None and exc.status_code == none_on:
            return None
        if exc.status_code == 403:
            raise PublishError(
                f"{where}: the token may not {what} (403 Forbidden): expected a service account "
                "with the Editor role (Admin to create folders where editors may not)"
            ) from None
        if exc.status_code == 404:
            raise PublishError(
                f"{where}: {what}: 404 Not Found; expected Grafana's HTTP API under this URL "
                "(if Grafana is served under a path, give it: http://host/grafana/)"
            ) from None
        raise PublishError(f"{where}: {what}: {exc.message}; Grafana refused the request") from None
    except GrafanaServerError as exc:
        raise PublishError(f"{where}: {what}: Grafana failed ({exc.message})") from None
    except GrafanaException as exc:
        raise PublishError(f"{where}: {what}: {exc.message}") from None
    except niquests.exceptions.ConnectionError as exc:
        raise PublishError(
            f"cannot reach Grafana at {where} to {what}: expected a running Grafana there "
            f"(check the host, the port, http or https) ({_reason(exc)})"
        ) from None
    except niquests.exceptions.RequestException as exc:
        raise PublishError(f"{where}: {what}: {_reason(exc)}") from None
    except ValueError as exc:  # a body that is not JSON: not Grafana's API
        raise PublishError(
            f"{where}: {what}: the answer is not JSON ({exc}); expected Grafana's HTTP API at "
            "this URL"
        ) from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."

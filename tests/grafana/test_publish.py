"""`pantau grafana publish` against a stand-in for Grafana's HTTP API: a real HTTP server on
127.0.0.1, started by the test, that answers the few endpoints publish uses the way Grafana
answers them and records every request. It is the only mock in these tests, because Grafana
itself cannot run on these machines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from grafana.dashboards import UIDS, WALL
from pantau.embedded import free_port

TOKEN = "glsa_test_token_0123456789abcdef"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """Grafana's answers to folders, dashboards and playlists, from memory."""

    token: str = TOKEN
    forbid: bool = False
    requests: list[Recorded] = field(default_factory=list)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    playlists: dict[str, dict[str, Any]] = field(default_factory=dict)

    def answer(self, r: Recorded) -> tuple[int, Any]:
        if r.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        if self.forbid:
            return 403, {"message": "You'll need additional permissions to perform this action."}
        parts = r.path.strip("/").split("/")
        if parts[:2] == ["api", "folders"]:
            if r.method == "GET" and len(parts) == 3:
                folder = self.folders.get(parts[2])
                return (200, folder) if folder else (404, {"message": "folder not found"})
            if r.method == "POST" and len(parts) == 2:
                self.folders[r.body["uid"]] = {"uid": r.body["uid"], "title": r.body["title"]}
                return 200, self.folders[r.body["uid"]]
        if parts[:3] == ["api", "dashboards", "db"] and r.method == "POST":
            uid = r.body["dashboard"]["uid"]
            version = self.dashboards.get(uid, {}).get("version", 0) + 1
            self.dashboards[uid] = {"body": r.body, "version": version}
            return 200, {"status": "success", "uid": uid, "version": version}
        if parts[:2] == ["api", "playlists"]:
            if r.method == "GET" and len(parts) == 2:
                wanted = r.query.get("query", [""])[0]
                found = [p for p in self.playlists.values() if wanted in p["name"]]
                return 200, [{k: p[k] for k in ("uid", "name", "interval")} for p in found]
            if r.method == "POST" and len(parts) == 2:
                self.playlists[r.body["uid"]] = r.body
                return 200, r.body
            if r.method == "PUT" and len(parts) == 3 and parts[2] in self.playlists:
                self.playlists[parts[2]] = r.body
                return 200, r.body
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            recorded = Recorded(
                self.command,
                url.path,
                parse_qs(url.query),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            fake.requests.append(recorded)
            status, body = fake.answer(recorded)
            out = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def pantau(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantau", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], "PANTAU_HTTP__PUBLIC_URL": "https://pantau.test", **env},
    )


def test_publish_creates_then_updates_in_place(
    grafana: tuple[str, FakeGrafana], tmp_path: Path
) -> None:
    url, fake = grafana
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    first = pantau(
        "grafana", "publish", "--url", url, "--token-file", str(token_file), cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    calls = [(r.method, r.path) for r in fake.requests]
    assert calls == [
        ("GET", "/api/folders/pantau"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * len(UIDS),
        ("GET", "/api/playlists"),
        ("POST", "/api/playlists"),
    ]
    assert fake.requests[1].body == {"uid": "pantau", "title": "Pantau"}
    saved = [r.body for r in fake.requests if r.path == "/api/dashboards/db"]
    assert sorted(b["dashboard"]["uid"] for b in saved) == sorted(UIDS)
    for body in saved:
        assert body["overwrite"] is True
        assert body["folderUid"] == "pantau"
        assert body["dashboard"]["id"] is None
    (created,) = fake.playlists.values()
    assert created["uid"] == "pantau-wall"
    assert [i["value"] for i in created["items"]] == list(WALL)
    assert "pantau-wall (Pantau: dinding Command Center): created" in first.stdout
    assert f"{url}/playlists/play/pantau-wall?kiosk" in first.stdout

    fake.requests.clear()
    second = pantau("grafana", "publish", "--url", url, cwd=tmp_path, PANTAU_GRAFANA__TOKEN=TOKEN)
    assert second.returncode == 0, second.stderr
    calls = [(r.method, r.path) for r in fake.requests]
    assert calls == [
        ("GET", "/api/folders/pantau"),
        *[("POST", "/api/dashboards/db")] * len(UIDS),
        ("GET", "/api/playlists"),
        ("PUT", "/api/playlists/pantau-wall"),
    ]
    assert len(fake.playlists) == 1
    assert {uid: d["version"] for uid, d in fake.dashboards.items()} == dict.fromkeys(UIDS, 2)
    assert "playlist pantau-wall (Pantau: dinding Command Center): updated" in second.stdout
    # The same dashboards both times: a re-publish changes nothing but the version.
    kamera = fake.dashboards["pantau-kamera"]["body"]["dashboard"]
    assert kamera["templating"]["list"][0]["query"] == "https://pantau.test"

    # The token only ever in the Authorization header; no other credential, nothing else sent.
    for r in fake.requests:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in json.dumps(r.body) + r.path + json.dumps(r.query)
        assert "cookie" not in r.headers


def test_playlist_only(grafana: tuple[str, FakeGrafana], tmp_path: Path) -> None:
    url, fake = grafana
    done = pantau(
        "grafana", "publish", "--url", url, "--playlist-only", cwd=tmp_path,
        PANTAU_GRAFANA__TOKEN=TOKEN,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", "/api/playlists"),
        ("POST", "/api/playlists"),
    ]


def test_errors_say_what_was_expected(grafana: tuple[str, FakeGrafana], tmp_path: Path) -> None:
    url, fake = grafana
    refused = pantau(
        "grafana", "publish", "--url", url, cwd=tmp_path, PANTAU_GRAFANA__TOKEN="wrong-token"
    )
    assert refused.returncode == 2
    assert "Grafana refused the token (401)" in refused.stderr
    assert "service account token" in refused.stderr
    assert "wrong-token" not in refused.stderr + refused.stdout

    fake.forbid = True
    forbidden = pantau(
        "grafana", "publish", "--url", url, cwd=tmp_path, PANTAU_GRAFANA__TOKEN=TOKEN
    )
    assert forbidden.returncode == 2
    assert "403 Forbidden" in forbidden.stderr
    assert "Editor" in forbidden.stderr

    nobody = f"http://127.0.0.1:{free_port()}"
    unreachable = pantau(
        "grafana", "publish", "--url", nobody, cwd=tmp_path, PANTAU_GRAFANA__TOKEN=TOKEN
    )
    assert unreachable.returncode == 2
    assert f"cannot reach Grafana at {nobody}" in unreachable.stderr
    assert "expected a running Grafana" in unreachable.stderr

    no_token = pantau("grafana", "publish", "--url", url, cwd=tmp_path)
    assert no_token.returncode == 2
    assert "--token-file FILE or the environment variable PANTAU_GRAFANA__TOKEN" in no_token.stderr

    no_url = pantau("grafana", "publish", cwd=tmp_path, PANTAU_GRAFANA__TOKEN=TOKEN)
    assert no_url.returncode == 2
    assert "expected --url URL or grafana.url" in no_url.stderr

    not_a_url = pantau(
        "grafana", "publish", "--url", "grafana:3000", cwd=tmp_path, PANTAU_GRAFANA__TOKEN=TOKEN
    )
    assert not_a_url.returncode == 2
    assert "expected Grafana's address" in not_a_url.stderr


def test_urllib3_future_sits_beside_urllib3_not_over_it() -> None:
    """grafana-client's niquests needs urllib3-future; its wheel would replace urllib3 for the
    whole venv (requests and schemathesis then break). The Makefile builds it from source with
    URLLIB3_NO_OVERRIDE=1, so urllib3 stays the one constraints.txt pins."""
    import site

    import urllib3
    import urllib3_future

    pins = dict(
        line.split("==", 1)
        for line in (Path(__file__).parents[2] / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    rebuild = (
        "urllib3-future's wheel replaced urllib3 in this venv (built from constraints.txt before "
        "the Makefile installed it from source); pip does not undo it: rm -rf .venv && make "
        ".venv/.installed"
    )
    hooks = [p for d in site.getsitepackages() for p in Path(d).glob("urllib3_future*.pth")]
    assert hooks == [], rebuild
    assert urllib3.__version__ == pins["urllib3"], rebuild
    assert urllib3_future.__version__ == pins["urllib3-future"]

"""/wall's data and the cameras' snapshot capability URLs, against a real Pantau (in-process) on
the test's PostgreSQL: `GET /api/v1/wall` answers what the wall.* views say, bounded, as the
role pantau_wall; `/wall/cameras/{id}/snapshot.jpg?key=K` serves what the cameras API serves,
and nothing, alike, for a wrong key or no camera."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import psycopg
import pytest
from psycopg.rows import dict_row

from devices import registry
from grafana.wall import data
from grafana.wall.tiles import GRID, ROWS, place
from pantau.regency import KECAMATAN
from pantau.settings import Settings
from tests.devices.conftest import Api, api_for
from tests.grafana.seed import add_device, set_state


def _jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((72, 128, 3), 90, np.uint8))
    assert ok
    return bytes(encoded)


JPEG = _jpeg()


def test_the_tile_map_follows_the_regency() -> None:
    """Every kecamatan has a tile of its own, and north of / west of on the ground is above /
    left of (or level with) on the wall: the hand-laid grid never turns the regency around."""
    assert set(GRID) == {k.id for k in KECAMATAN}
    assert len(set(GRID.values())) == len(GRID)
    assert GRID["muaragembong"][0] == 0
    assert {GRID["cibarusah"][0], GRID["bojongmangu"][0]} == {ROWS - 1}
    for a in KECAMATAN:
        for b in KECAMATAN:
            if a.latitude > b.latitude + 0.001:
                assert GRID[a.id][0] <= GRID[b.id][0], f"{a.name} is north of {b.name}"
            if a.longitude < b.longitude - 0.02:
                assert GRID[a.id][1] <= GRID[b.id][1], f"{a.name} is west of {b.name}"
    assert place("karangbahagia", "Karangbahagia", 0).label == "Karang\u00adbahagia"
    assert place("setu", "Setu", 0).label == "Setu"
    assert (place("elsewhere", "Elsewhere", 7).row, place("elsewhere", "X", 7).column) == (
        ROWS + 1,
        1,
    )


async def _outage(
    conn: psycopg.AsyncConnection,
    kind: str,
    kecamatan: str,
    device_id: str | None = None,
    minutes_ago: int = 10,
    parent: int | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO outages (kind, device_id, kecamatan, cause, severity, started_at, detail,"
        " parent_id) VALUES (%s, %s, %s, %s, 'critical', now() - make_interval(mins => %s),"
        " %s, %s) RETURNING id",
        (
            kind,
            device_id,
            kecamatan,
            "area" if kind == "area" else "offline:refused",
            minutes_ago,
            '{"down": 3, "total": 4}' if kind == "area" else "{}",
            parent,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    """Pantau without camera probes (the test writes the snapshots), pictures in tmp_path."""
    streams = settings.streams.model_copy(
        update={"enabled": False, "snapshot_dir": tmp_path / "snapshots"}
    )
    async with api_for(settings.model_copy(update={"streams": streams})) as api:
        yield api


async def test_the_wall_answers_what_the_views_say_bounded(api: Api) -> None:
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        for i in range(1, 5):
            await add_device(conn, f"wl-cibitung-0{i}", "water_level", "cibitung")
        await add_device(conn, "aq-setu-01", "air_quality", "setu")
        await add_device(conn, "tc-setu-01", "traffic_counter", "setu")
        await add_device(conn, "sl-babelan-01", "street_light", "babelan")
        for i in range(1, 4):
            await set_state(conn, f"wl-cibitung-0{i}", "down")
        await set_state(conn, "wl-cibitung-04", "up")
        await set_state(conn, "aq-setu-01", "down")
        await set_state(conn, "tc-setu-01", "late")
        await set_state(conn, "sl-babelan-01", "up")
        area = await _outage(conn, "area", "cibitung", minutes_ago=5)
        for i in range(1, 4):
            await _outage(conn, "device", "cibitung", f"wl-cibitung-0{i}", 6, parent=area)
        await _outage(conn, "device", "setu", "aq-setu-01", minutes_ago=30)

    async with api.client(None) as anonymous:
        refused = await anonymous.get("/api/v1/wall")
    assert refused.status_code == 401
    async with api.client("operator") as http:
        answer = await http.get("/api/v1/wall")
        assert answer.status_code == 200, answer.text
        wall = answer.json()
        bounded = (await http.get("/api/v1/wall", params={"limit": 1})).json()
        too_many = await http.get("/api/v1/wall", params={"limit": data.MAX_ROWS + 1})

    totals = wall["totals"]
    assert (totals["total"], totals["up"], totals["down"], totals["late"]) == (7, 2, 4, 1)
    assert totals["area_outages"] == 1
    tiles = {t["kecamatan"]: t for t in wall["kecamatan"]}
    assert len(tiles) == 23
    assert (tiles["cibitung"]["state"], tiles["cibitung"]["down"]) == ("area", 3)
    assert tiles["cibitung"]["state_label"] == "Gangguan wilayah"
    assert tiles["setu"]["state"] == "down"
    assert tiles["babelan"]["state"] == "up"
    assert tiles["tarumajaya"]["state"] == "empty"
    assert (tiles["muaragembong"]["row"], tiles["muaragembong"]["column"]) == GRID["muaragembong"]
    assert tiles["setu"]["area_since"] is None
    assert tiles["cibitung"]["area_since"].endswith("+07:00")

    # The area outage first; the three device outages it groups are counted, not listed.
    outages = wall["outages"]
    assert (outages["total"], outages["grouped"]) == (2, 3)
    assert [(o["kind"], o["kecamatan"]) for o in outages["items"]] == [
        ("area", "cibitung"),
        ("device", "setu"),
    ]
    assert outages["items"][0]["area_down"] == 3
    assert outages["items"][1]["cause_label"] == "luring: koneksi ditolak"
    assert outages["items"][1]["since"].endswith("+07:00")
    assert [p["pillar"] for p in wall["pillars"]] == [
        "governance",
        "branding",
        "economy",
        "society",
        "environment",
        "living",
    ]
    env = next(p for p in wall["pillars"] if p["pillar"] == "environment")
    assert (env["total"], env["down"], env["up"]) == (5, 4, 1)
    assert wall["flood"]["total"] == 4
    assert wall["pipeline"]["process"]["database_up"] is True
    assert wall["refresh_seconds"] == 15
    assert wall["version"]
    assert wall["generated_at"].endswith("+07:00")

    # At most `limit` rows per list, with the count of all.
    assert (bounded["outages"]["total"], len(bounded["outages"]["items"])) == (2, 1)
    assert (bounded["flood"]["total"], len(bounded["flood"]["items"])) == (4, 1)
    assert len(bounded["kecamatan"]) == 23  # the map is never cut
    assert too_many.status_code == 422


async def test_the_wall_reads_as_the_read_only_role(api: Api) -> None:
    """Take one view away from pantau_wall and the wall can no longer read: it reads as that
    role, not as Pantau's own user (which still can)."""
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        await conn.execute("REVOKE SELECT ON wall.pipeline FROM pantau_wall")
        try:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await data.read(conn, limit=5, version="v", title="t", refresh_seconds=15)
            await conn.execute("SELECT * FROM wall.pipeline")
        finally:
            await conn.execute("GRANT SELECT ON wall.pipeline TO pantau_wall")
        wall = await data.read(conn, limit=5, version="v", title="t", refresh_seconds=15)
        assert wall.pipeline.process.database_up is None  # no registry: nothing known
        cur = await conn.execute("SELECT current_user <> 'pantau_wall'")
        assert await cur.fetchone() == (True,)  # SET LOCAL: the role ended with the read


async def _camera(conn: psycopg.AsyncConnection, device_id: str, kecamatan: str) -> str:
    await add_device(conn, device_id, "camera", kecamatan)
    cur = await conn.execute(
        "INSERT INTO cameras (device_id, rtsp_url) VALUES (%s, 'rtsp://127.0.0.1:9/x')"
        " RETURNING snapshot_key",
        (device_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def test_snapshots_at_capability_urls(api: Api, tmp_path: Path) -> None:
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        key = await _camera(conn, "cam-setu-01", "setu")
        other_key = await _camera(conn, "cam-setu-02", "setu")
        await add_device(conn, "wl-setu-01", "water_level", "setu")
        await conn.execute(
            "INSERT INTO camera_health (time, device_id, state) VALUES (now(), 'cam-setu-01',"
            " 'ok'), (now(), 'cam-setu-02', 'offline')"
        )
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("SELECT device_id, snapshot_path FROM wall.camera_tiles")
        paths = {r["device_id"]: r["snapshot_path"] for r in await cur.fetchall()}
    folder = tmp_path / "snapshots" / "cam-setu-01"
    folder.mkdir(parents=True)
    (folder / "latest.jpg").write_bytes(JPEG)
    taken = time.time() - 4
    os.utime(folder / "latest.jpg", (taken, taken))
    assert paths["cam-setu-01"] == f"/wall/cameras/cam-setu-01/snapshot.jpg?key={key}"

    async with api.client(None) as anonymous, api.client("operator") as operator:
        served = await anonymous.get(paths["cam-setu-01"])
        via_api = await operator.get("/api/v1/cameras/cam-setu-01/snapshot.jpg")
        placeholder = await anonymous.get(paths["cam-setu-02"])
        placeholder_api = await operator.get("/api/v1/cameras/cam-setu-02/snapshot.jpg")
        refused = {
            "wrong key": await anonymous.get(
                "/wall/cameras/cam-setu-01/snapshot.jpg", params={"key": other_key}
            ),
            "no key": await anonymous.get("/wall/cameras/cam-setu-01/snapshot.jpg"),
            "empty key": await anonymous.get(
                "/wall/cameras/cam-setu-01/snapshot.jpg", params={"key": ""}
            ),
            "no camera": await anonymous.get(
                "/wall/cameras/cam-nowhere-01/snapshot.jpg", params={"key": key}
            ),
            "not a camera": await anonymous.get(
                "/wall/cameras/wl-setu-01/snapshot.jpg", params={"key": key}
            ),
        }
        too_long = await anonymous.get(
            "/wall/cameras/cam-setu-01/snapshot.jpg", params={"key": "k" * 129}
        )

    assert served.status_code == 200
    assert served.content == via_api.content == JPEG
    assert served.headers["content-type"] == "image/jpeg"
    for header in ("X-Camera-State", "X-Snapshot-Age", "Last-Modified"):
        assert served.headers[header] == via_api.headers[header], header
    assert int(served.headers["X-Snapshot-Age"]) >= 4
    assert served.headers["Cache-Control"] == "private, no-cache"
    assert served.headers["Referrer-Policy"] == "no-referrer"

    # An offline camera: the same "KAMERA OFFLINE" placeholder the API serves.
    assert placeholder.status_code == 200
    assert placeholder.headers["X-Placeholder"] == placeholder_api.headers["X-Placeholder"]
    assert placeholder.headers["X-Placeholder"] == "down"
    assert placeholder.content[:2] == b"\xff\xd8"

    # Wrong, missing or any key to no camera: one and the same 404, revealing nothing.
    bodies = {why: (r.status_code, r.json()) for why, r in refused.items()}
    assert len({str(body) for body in bodies.values()}) == 1, bodies
    assert next(iter(bodies.values()))[0] == 404
    assert refused["no camera"].headers["Cache-Control"] == "no-store"
    assert too_long.status_code == 422  # bounded before any lookup

    # Rotating the key: the old URL stops working at once, the new one works.
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        await conn.execute(
            "UPDATE cameras SET snapshot_key = replace(gen_random_uuid()::text, '-', '')"
            " WHERE device_id = 'cam-setu-01' RETURNING snapshot_key"
        )
        cur = await conn.execute(
            "SELECT snapshot_path FROM wall.camera_tiles WHERE device_id = 'cam-setu-01'"
        )
        row = await cur.fetchone()
        assert row is not None
        await registry.retire_device(conn, "cam-setu-02", None, "test")
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        assert (await anonymous.get(paths["cam-setu-01"])).status_code == 404
        assert (await anonymous.get(row[0])).status_code == 200
        assert (await anonymous.get(paths["cam-setu-02"])).status_code == 404  # retired


async def test_the_page_is_self_contained_and_versioned(api: Api) -> None:
    async with api.client(None) as anonymous:
        page = await anonymous.get("/wall")
        slash = await anonymous.get("/wall/")
        version = re.search(r'name="wall-version" content="([0-9a-f]{12})"', page.text)
        assert version is not None
        script = await anonymous.get(f"/wall/wall.js?v={version[1]}")
        style = await anonymous.get(f"/wall/wall.css?v={version[1]}")
    async with api.client("operator") as operator:
        data_version = (await operator.get("/api/v1/wall")).json()["version"]
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert (slash.status_code, slash.headers["location"]) == (307, "../wall")
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert data_version == version[1]  # the page a wall has is the one the data speaks of
    for text in (page.text, script.text, style.text):
        assert "http://" not in text
        assert "https://" not in text  # no CDN, no fonts, nothing from outside

"""The outage history and maintenance windows over HTTP, against a real Pantau: outages written
as the detector writes them, windows planned and ended by a technician, and the window that a
device's `maintenance` status keeps open."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.devices.conftest import Api

NOW = datetime.now(UTC)


def _device(device_id: str, kecamatan: str = "setu") -> dict[str, Any]:
    return {
        "device_id": device_id,
        "name": f"Pos {device_id}",
        "device_type": "water_level",
        "kecamatan": kecamatan,
    }


async def _register(api: Api, *devices: dict[str, Any]) -> None:
    async with api.client("technician") as http:
        for device in devices:
            answer = await http.post("/api/v1/devices", json=device)
            assert answer.status_code == 201, answer.text


async def _outage(
    conn: psycopg.AsyncConnection,
    kind: str,
    device_id: str | None,
    started: datetime,
    ended: datetime | None = None,
    parent: int | None = None,
    kecamatan: str = "setu",
    detail: dict[str, Any] | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO outages (kind, device_id, kecamatan, device_type, pillar, cause, severity,"
        " started_at, ended_at, parent_id, detail)"
        " VALUES (%s, %s, %s, %s, 'environment', %s, 'critical', %s, %s, %s, %s) RETURNING id",
        (
            kind,
            device_id,
            kecamatan,
            None if kind == "area" else "water_level",
            "area" if kind == "area" else "silent",
            started,
            ended,
            parent,
            Jsonb(detail or {}),
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_outages_current_first_filtered_in_wib(api: Api) -> None:
    now = datetime.now(UTC)  # this test's own: a module constant ages on a slow machine
    await _register(
        api, _device("wl-setu-01"), _device("wl-setu-02"), _device("wl-babelan-01", "babelan")
    )
    async with await psycopg.AsyncConnection.connect(api.db, autocommit=True) as conn:
        old = await _outage(
            conn, "device", "wl-setu-01", now - timedelta(days=2), now - timedelta(days=1)
        )
        area = await _outage(
            conn,
            "area",
            None,
            now - timedelta(hours=2),
            detail={"down": 2, "total": 2, "share": 1.0},
        )
        child = await _outage(conn, "device", "wl-setu-02", now - timedelta(hours=2), parent=area)
        late = await _outage(
            conn, "device", "wl-babelan-01", now - timedelta(minutes=5), None, kecamatan="babelan"
        )
        recent_closed = await _outage(
            conn,
            "device",
            "wl-babelan-01",
            now - timedelta(hours=1),
            now - timedelta(minutes=30),
            kecamatan="babelan",
        )

    async with api.client("operator") as http:
        listed = await http.get("/api/v1/outages")
        assert listed.status_code == 200, listed.text
        found = listed.json()
        # current ones first, newest start first; then the ended ones, newest first
        assert [o["id"] for o in found] == [late, child, area, recent_closed, old]
        first = found[0]
        assert first["started_at"].endswith("+07:00")
        assert first["ended_at"] is None
        elapsed = (datetime.now(UTC) - now).total_seconds()
        assert 300 <= first["duration_seconds"] <= 300 + elapsed + 1  # to now
        assert first["device_name"] == "Pos wl-babelan-01"
        closed = next(o for o in found if o["id"] == old)
        assert closed["duration_seconds"] == 86400
        assert closed["ended_at"].endswith("+07:00")
        by_area = next(o for o in found if o["id"] == area)
        assert by_area["grouped"] == 1
        assert by_area["device_id"] is None
        assert by_area["detail"]["share"] == 1.0

        async def ids(**params: Any) -> list[int]:
            answer = await http.get("/api/v1/outages", params=params)
            assert answer.status_code == 200, answer.text
            return [o["id"] for o in answer.json()]

        assert await ids(kind="area") == [area]
        assert await ids(kecamatan="Babelan") == [late, recent_closed]  # by name
        assert await ids(state="current") == [late, child, area]
        assert await ids(state="resolved") == [recent_closed, old]
        assert await ids(type="water_level", state="resolved") == [recent_closed, old]
        window = {
            "from": (now - timedelta(days=3)).isoformat(),
            "to": (now - timedelta(hours=12)).isoformat(),
        }
        assert await ids(**window) == [old]  # overlapping the range
        assert await ids(limit=2, offset=1) == [child, area]

        one = await http.get(f"/api/v1/outages/{area}")
        assert one.status_code == 200, one.text
        assert [c["id"] for c in one.json()["children"]] == [child]
        assert (await http.get(f"/api/v1/outages/{old}")).json()["children"] == []
        missing = await http.get("/api/v1/outages/999999")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no outage 999999"

        backwards = await http.get(
            "/api/v1/outages", params={"from": window["to"], "to": window["from"]}
        )
        assert backwards.status_code == 422
        assert backwards.json()["problems"][0]["field"] == "to"
        naive = await http.get("/api/v1/outages", params={"from": "2026-12-01T08:00"})
        assert naive.status_code == 422
        assert "no offset" in naive.json()["problems"][0]["message"]
        for bad in ({"kind": "storm"}, {"limit": 0}, {"limit": 1001}, {"kecamatan": "Bogor"}):
            answer = await http.get("/api/v1/outages", params=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert answer.json()["problems"]
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/api/v1/outages")).status_code == 401


async def test_maintenance_windows_planned_listed_ended_and_audited(api: Api) -> None:
    await _register(api, _device("wl-setu-01"))
    planned = {
        "device_id": "wl-setu-01",
        "starts_at": (NOW - timedelta(minutes=10)).isoformat(),
        "ends_at": (NOW + timedelta(hours=2)).isoformat(),
        "reason": "ganti  baterai",
    }
    async with api.client("operator") as operator:
        refused = await operator.post("/api/v1/maintenance-windows", json=planned)
        assert refused.status_code == 403
    async with api.client("technician") as http:
        created = await http.post("/api/v1/maintenance-windows", json=planned)
        assert created.status_code == 201, created.text
        window = created.json()
        assert window["current"] is True
        assert window["reason"] == "ganti baterai"
        assert window["starts_at"].endswith("+07:00")
        area = await http.post(
            "/api/v1/maintenance-windows",
            json={
                "kecamatan": "Babelan",
                "starts_at": (NOW + timedelta(days=1)).isoformat(),
                "ends_at": (NOW + timedelta(days=1, hours=4)).isoformat(),
                "reason": "pemadaman listrik terencana",
            },
        )
        assert area.status_code == 201, area.text
        assert area.json()["kecamatan"] == "babelan"
        assert area.json()["current"] is False

        unknown = await http.post(
            "/api/v1/maintenance-windows", json={**planned, "device_id": "wl-nowhere-09"}
        )
        assert unknown.status_code == 404
        assert "wl-nowhere-09" in unknown.json()["detail"]
        backwards = await http.post(
            "/api/v1/maintenance-windows",
            json={**planned, "ends_at": planned["starts_at"]},
        )
        assert backwards.status_code == 422
        assert "ends_at must be after starts_at" in backwards.text
        both = await http.post("/api/v1/maintenance-windows", json={**planned, "kecamatan": "setu"})
        assert both.status_code == 422

        async def ids(**params: Any) -> list[int]:
            answer = await http.get("/api/v1/maintenance-windows", params=params)
            assert answer.status_code == 200, answer.text
            return [w["id"] for w in answer.json()]

        assert await ids() == [area.json()["id"], window["id"]]
        assert await ids(device="wl-setu-01") == [window["id"]]
        assert await ids(kecamatan="setu") == [window["id"]]  # its devices' windows
        assert await ids(current=True) == [window["id"]]
        assert await ids(current=False) == [area.json()["id"]]

        ended = await http.post(f"/api/v1/maintenance-windows/{window['id']}/end")
        assert ended.status_code == 200, ended.text
        assert ended.json()["current"] is False
        assert ended.json()["ends_at"] is not None
        again = await http.post(f"/api/v1/maintenance-windows/{window['id']}/end")
        assert again.status_code == 409
        assert "ended already" in again.json()["detail"]
        assert (await http.post("/api/v1/maintenance-windows/999999/end")).status_code == 404
        assert await ids(current=True) == []
    async with api.client("admin") as admin:
        audit = await admin.get(
            "/api/v1/audit", params={"entity": "maintenance", "entity_id": str(window["id"])}
        )
        assert audit.status_code == 200, audit.text
        entries = audit.json()
        assert [e["action"] for e in entries] == ["end", "create"]
        assert entries[0]["before"]["ends_at"] == window["ends_at"]
        assert entries[1]["after"]["reason"] == "ganti baterai"


async def test_a_device_in_maintenance_has_an_open_window_until_active_again(api: Api) -> None:
    await _register(api, _device("wl-setu-01"), {**_device("wl-setu-04"), "status": "maintenance"})
    async with api.client("operator") as http:
        born = await http.get("/api/v1/maintenance-windows", params={"device": "wl-setu-04"})
    assert [(w["reason"], w["current"]) for w in born.json()] == [("status maintenance", True)]

    async def status_windows() -> list[dict[str, Any]]:
        async with api.client("operator") as http:
            answer = await http.get("/api/v1/maintenance-windows", params={"device": "wl-setu-01"})
        return [w for w in answer.json() if w["reason"] == "status maintenance"]

    async with api.client("technician") as http:

        async def patch(status: str) -> None:
            etag = (await http.get("/api/v1/devices/wl-setu-01")).headers["ETag"]
            answer = await http.patch(
                "/api/v1/devices/wl-setu-01", json={"status": status}, headers={"If-Match": etag}
            )
            assert answer.status_code == 200, answer.text

        await patch("maintenance")
        opened = await status_windows()
        assert len(opened) == 1
        assert opened[0]["ends_at"] is None
        assert opened[0]["current"] is True
        await patch("maintenance")  # unchanged: no second window
        assert len(await status_windows()) == 1
        await patch("active")
        closed = await status_windows()
        assert len(closed) == 1
        assert closed[0]["ends_at"] is not None
        assert closed[0]["current"] is False
        await patch("maintenance")
        etag = (await http.get("/api/v1/devices/wl-setu-01")).headers["ETag"]
        retired = await http.post("/api/v1/devices/wl-setu-01/retire", headers={"If-Match": etag})
        assert retired.status_code == 200, retired.text  # retiring ends it as well
        assert [w["current"] for w in await status_windows()] == [False, False]


async def test_an_import_opens_and_ends_the_status_window(api: Api) -> None:
    async def imported(status: str) -> None:
        async with api.client("technician") as http:
            answer = await http.post(
                "/api/v1/devices/import",
                content=f"device_id,name,device_type,kecamatan,status\n"
                f"wl-setu-03,Pos 3,water_level,setu,{status}\n",
                headers={"Content-Type": "text/csv"},
            )
        assert answer.status_code == 200, answer.text

    async def windows() -> list[dict[str, Any]]:
        async with api.client("operator") as http:
            answer = await http.get("/api/v1/maintenance-windows", params={"device": "wl-setu-03"})
        assert answer.status_code == 200, answer.text
        return list(answer.json())

    await imported("maintenance")  # a new device, in maintenance from the start
    opened = await windows()
    assert [(w["reason"], w["current"]) for w in opened] == [("status maintenance", True)]
    await imported("maintenance")  # the same again: unchanged, no second window
    assert len(await windows()) == 1
    await imported("active")
    assert [w["current"] for w in await windows()] == [False]

"""`pantau wall links` and `pantau wall rotate-key` as an admin runs them, on a real database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from devices import registry
from devices.models import DeviceIn
from tests.fixtures.servers import run_pantau


async def _cameras(db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        for device_id, name in (("cam-setu-01", "CCTV Situ"), ("cam-setu-02", "CCTV Pasar")):
            await registry.create_device(
                conn,
                DeviceIn.model_validate(
                    {"device_id": device_id, "name": name, "device_type": "camera",
                     "kecamatan": "setu"}
                ),
                "test",
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO cameras (device_id, rtsp_url) VALUES (%s, 'rtsp://10.0.0.9/x')",
                (device_id,),
            )


def _keys(db: str) -> dict[str, str]:
    with psycopg.connect(db) as conn:
        return dict(conn.execute("SELECT device_id, snapshot_key FROM cameras").fetchall())


def test_links_and_rotating_a_key(migrated_db: str, tmp_path: Path) -> None:
    asyncio.run(_cameras(migrated_db))
    keys = _keys(migrated_db)
    listed = run_pantau("wall", "links", db=migrated_db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        f"cam-setu-01  http://127.0.0.1:8080/wall/cameras/cam-setu-01/snapshot.jpg"
        f"?key={keys['cam-setu-01']}  (CCTV Situ)",
        f"cam-setu-02  http://127.0.0.1:8080/wall/cameras/cam-setu-02/snapshot.jpg"
        f"?key={keys['cam-setu-02']}  (CCTV Pasar)",
    ]

    rotated = run_pantau("wall", "rotate-key", "cam-setu-01", db=migrated_db, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    after = _keys(migrated_db)
    assert after["cam-setu-01"] != keys["cam-setu-01"]
    assert after["cam-setu-02"] == keys["cam-setu-02"]  # only the one asked for
    assert f"?key={after['cam-setu-01']}" in rotated.stdout
    assert rotated.stdout.startswith("1 new link (the old ones no longer work):")

    everything = run_pantau("wall", "rotate-key", "--all", db=migrated_db, cwd=tmp_path)
    assert everything.returncode == 0, everything.stderr
    last = _keys(migrated_db)
    assert not set(last.values()) & set(after.values())
    with psycopg.connect(migrated_db) as conn:
        audited = conn.execute(
            "SELECT entity_id, after FROM audit_log WHERE action = 'rotate-snapshot-key'"
            " ORDER BY id"
        ).fetchall()
    assert [a[0] for a in audited] == ["cam-setu-01", "cam-setu-01", "cam-setu-02"]
    assert all(a[1] == {"snapshot_key": "***"} for a in audited)  # never the key itself

    for args in (("rotate-key",), ("rotate-key", "cam-setu-01", "--all")):
        wrong = run_pantau("wall", *args, db=migrated_db, cwd=tmp_path)
        assert wrong.returncode == 2
        assert "expected a camera's id or --all" in wrong.stderr
    unknown = run_pantau("wall", "rotate-key", "wl-setu-01", db=migrated_db, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "'wl-setu-01' is not a camera in use" in unknown.stderr
    assert _keys(migrated_db) == last

"""The wall's SQL views (migration 0013) against a real PostgreSQL: what each answers, and that
the read-only role pantau_wall reads them and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from devices import registry
from pantau.cliapp import WIB
from tests.devices.test_availability import H, seed, wib
from tests.grafana.seed import add_device, set_state

VIEWS = (
    "device_state",
    "status_totals",
    "status_by_pillar",
    "status_by_type",
    "status_by_kecamatan",
    "current_outages",
    "active_alarms",
    "device_levels",
    "latest_values",
    "flood_levels",
    "air_quality",
    "rainfall",
    "traffic",
    "series_1m",
    "series_1h",
    "camera_tiles",
    "pipeline",
)


async def _rows(conn: psycopg.AsyncConnection, query: str) -> list[dict[str, object]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query)
        return await cur.fetchall()


async def test_every_view_answers_through_the_read_only_role(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db) as conn:
        await add_device(conn, "wl-setu-01", "water_level", "setu")
        await conn.commit()
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE pantau_wall")
            for view in VIEWS:
                await conn.execute(f"SELECT * FROM wall.{view} LIMIT 1")  # noqa: S608
        for table in ("devices", "api_tokens", "readings", "cameras"):
            async with conn.transaction(force_rollback=True):
                await conn.execute("SET LOCAL ROLE pantau_wall")
                cur = await conn.execute("SELECT has_table_privilege(%s, 'SELECT')", (table,))
                assert await cur.fetchone() == (False,), table
        writable = await _rows(
            conn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'wall' AND (has_table_privilege('pantau_wall', c.oid,"
            " 'INSERT, UPDATE, DELETE, TRUNCATE'))",
        )
        assert writable == []


async def test_status_counts_and_the_kecamatan_tiles(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await add_device(conn, "wl-setu-01", "water_level", "setu")
        await add_device(conn, "wl-setu-02", "water_level", "setu")
        await add_device(conn, "aq-babelan-01", "air_quality", "babelan")
        await add_device(conn, "tc-cibitung-01", "traffic_counter", "cibitung")
        await set_state(conn, "wl-setu-01", "up")
        await set_state(conn, "wl-setu-02", "down")
        await set_state(conn, "aq-babelan-01", "up")
        await add_device(conn, "tc-gone-01", "traffic_counter", "cibitung")
        await registry.retire_device(conn, "tc-gone-01", None, "test")

        totals = (await _rows(conn, "SELECT * FROM wall.status_totals"))[0]
        assert (totals["total"], totals["up"], totals["down"], totals["unknown"]) == (4, 2, 1, 1)

        tiles = {
            r["kecamatan"]: r for r in await _rows(conn, "SELECT * FROM wall.status_by_kecamatan")
        }
        assert len(tiles) == 23
        assert tiles["setu"]["state"] == "down"
        assert tiles["setu"]["state_label"] == "Mati"
        assert tiles["babelan"]["state"] == "up"
        assert tiles["cibitung"]["state"] == "unknown"  # only a never-judged counter left
        assert tiles["tarumajaya"]["state"] == "empty"

        await conn.execute(
            "INSERT INTO outages (kind, kecamatan, cause, severity, started_at, detail)"
            " VALUES ('area', 'setu', 'area', 'critical', now(), '{\"down\": 2, \"total\": 2}')"
        )
        await conn.execute(
            "INSERT INTO outages (kind, device_id, kecamatan, device_type, cause, severity,"
            " started_at) VALUES ('device', 'wl-setu-02', 'setu', 'water_level',"
            " 'offline:auth', 'critical', now() - interval '1 hour')"
        )
        tiles = {
            r["kecamatan"]: r for r in await _rows(conn, "SELECT * FROM wall.status_by_kecamatan")
        }
        assert tiles["setu"]["state"] == "area"
        outages = await _rows(conn, "SELECT * FROM wall.current_outages ORDER BY sort")
        assert [o["kind"] for o in outages] == ["area", "device"]
        assert outages[0]["area_down"] == 2
        assert outages[1]["cause_label"] == "luring: kata sandi ditolak"
        assert outages[1]["duration_seconds"] >= 3599

        pillars = await _rows(conn, "SELECT * FROM wall.status_by_pillar ORDER BY sort")
        assert pillars[0]["pillar"] == "governance"
        env = next(p for p in pillars if p["pillar"] == "environment")
        assert (env["total"], env["up"], env["down"]) == (3, 2, 1)


async def test_values_levels_rain_and_air(migrated_db: str) -> None:
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await add_device(conn, "wl-setu-01", "water_level", "setu")
        await add_device(conn, "rg-setu-01", "rain_gauge", "setu")
        await add_device(conn, "aq-setu-01", "air_quality", "setu")
        await conn.execute(
            "SELECT pantau_ensure_partitions('readings', %s::date, %s::date)",
            ((now - timedelta(days=2)).date(), now.date()),
        )
        rows = [
            ("wl-setu-01", "water_level_cm", now - timedelta(minutes=m), 300.0 + m)
            for m in (1, 2, 3)
        ]
        # 0.05 mm every 10 s for the last hour: 18 mm in the hour, 'Lebat'
        rows += [
            ("rg-setu-01", "rain_mm", now - timedelta(seconds=10 * i), 0.05) for i in range(360)
        ]
        rows += [("rg-setu-01", "rain_mm", now - timedelta(hours=5), 40.0)]
        rows += [
            ("aq-setu-01", "pm25_ugm3", now - timedelta(minutes=1), 60.0),
            ("aq-setu-01", "pm10_ugm3", now - timedelta(minutes=1), 70.0),
        ]
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO readings (device_id, metric, time, value) VALUES (%s, %s, %s, %s)",
                rows,
            )
        await conn.execute(
            "INSERT INTO device_alarm_levels (device_id, metric, rank, name, severity, raise_at,"
            " clear_at, source) VALUES ('wl-setu-01', 'water_level_cm', 1, 'Siaga 3', 'info',"
            " 280, 260, 'BBWS')"
        )

        # Sums over an hour or a day read the rollups, as Pantau's storage worker keeps them.
        await conn.execute("SELECT pantau_refresh_rollups(now() - interval '2 days', now())")

        flood = (await _rows(conn, "SELECT * FROM wall.flood_levels"))[0]
        assert flood["level_cm"] == 301.0  # the latest, not the largest
        assert flood["levels"] == [{"name": "Siaga 3", "raise_at": 280, "severity": "info"}]

        rain = (await _rows(conn, "SELECT * FROM wall.rainfall"))[0]
        assert rain["mm_1h"] == pytest.approx(18.0)
        assert rain["class_1h"] == "Lebat"
        assert rain["mm_24h"] == pytest.approx(58.0)
        assert rain["class_24h"] == "Lebat"

        air = (await _rows(conn, "SELECT * FROM wall.air_quality"))[0]
        assert (air["pm25"], air["category"], air["colour"], air["pm10"]) == (
            60.0,
            "Tidak Sehat",
            "yellow",
            70.0,
        )

        levels = await _rows(
            conn,
            "SELECT * FROM wall.device_levels WHERE device_id = 'aq-setu-01'"
            " AND metric = 'pm25_ugm3' ORDER BY rank",
        )
        assert [lv["name"] for lv in levels] == [
            "Sedang",
            "Tidak Sehat",
            "Sangat Tidak Sehat",
            "Berbahaya",
        ]


async def test_rain_sums_read_the_rollups_and_equal_the_raw_sums_traffic_the_raw(
    migrated_db: str,
) -> None:
    """A gauge reporting every 10 s for 26 h: the rain sums over the last hour and day equal the
    raw readings' sums, though they read the rollups for all but the windows' edges (raising the
    raw readings of the middle hours, after the rollups were refreshed, changes nothing). A
    counter every minute for 2 h: its last hour, from its raw readings."""
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        await add_device(conn, "rg-setu-01", "rain_gauge", "setu")
        await add_device(conn, "tc-setu-01", "traffic_counter", "setu")
        await conn.execute(
            "SELECT pantau_ensure_partitions('readings', %s::date, %s::date)",
            ((now - timedelta(days=2)).date(), (now + timedelta(days=1)).date()),
        )
        async with (
            conn.cursor() as cur,
            cur.copy("COPY readings (device_id, metric, time, value) FROM STDIN") as copy,
        ):
            for i in range(26 * 360):
                at = now - timedelta(seconds=10 * i + 3)
                await copy.write_row(("rg-setu-01", "rain_mm", at, 0.01 * (1 + i % 7)))
            for i in range(120):
                at = now - timedelta(seconds=60 * i + 17)
                await copy.write_row(("tc-setu-01", "vehicles", at, float(i % 13)))
        await conn.execute("SELECT pantau_refresh_rollups(now() - interval '2 days', now())")
        async with conn.transaction(force_rollback=True):  # one now() for every statement
            raw = (
                await _rows(
                    conn,
                    "SELECT sum(value) FILTER (WHERE metric = 'rain_mm'"
                    "                          AND time > now() - interval '1 hour') AS rain_1h,"
                    " sum(value) FILTER (WHERE metric = 'rain_mm') AS rain_24h,"
                    " sum(value) FILTER (WHERE metric = 'vehicles'"
                    "                    AND time > now() - interval '1 hour') AS vehicles_1h"
                    " FROM readings WHERE time > now() - interval '1 day'",
                )
            )[0]
            traffic = (await _rows(conn, "SELECT * FROM wall.traffic"))[0]
            # Away from the windows' raw edges (their first minute, the last 5 minutes).
            await conn.execute(
                "UPDATE readings SET value = value + 100"
                " WHERE time BETWEEN now() - interval '20 hours' AND now() - interval '62 minutes'"
                " OR time BETWEEN now() - interval '58 minutes' AND now() - interval '7 minutes'"
            )
            rain = (await _rows(conn, "SELECT * FROM wall.rainfall"))[0]
        assert rain["mm_1h"] == pytest.approx(raw["rain_1h"])
        assert rain["mm_24h"] == pytest.approx(raw["rain_24h"])
        assert traffic["vehicles_1h"] == pytest.approx(raw["vehicles_1h"])
        assert rain["mm_24h"] > rain["mm_1h"] > 0
        assert rain["time"] == (now - timedelta(seconds=3))
        assert traffic["time"] == (now - timedelta(seconds=17))


# -- availability: the evaluation report's definition, read by the wall -------------------------

AVAILABILITY_RESULT = (
    "TABLE(grp text, label text, devices bigint, expected_seconds double precision,"
    " down_seconds double precision, availability double precision)"
)
DEVICE_AVAILABILITY_RESULT = (
    "TABLE(device_id text, name text, device_type text, type_name text, kecamatan text,"
    " kecamatan_name text, pillar text, pillar_name text, expected_seconds double precision,"
    " down_seconds double precision, availability double precision)"
)


async def _as_wall(
    conn: psycopg.AsyncConnection, query: str, *args: object
) -> list[dict[str, Any]]:
    async with conn.transaction(force_rollback=True), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SET LOCAL ROLE pantau_wall")
        await cur.execute(query, args)
        return await cur.fetchall()


async def test_availability_of_the_hand_computed_day_through_the_read_only_role(
    migrated_db: str,
) -> None:
    """The day of tests/devices/test_availability.py, asked of the SQL functions as the wall asks
    them: the same figures as the report's."""
    await seed(migrated_db)
    day = (wib(0), wib(24))
    async with await psycopg.AsyncConnection.connect(migrated_db) as conn:
        devices = await _as_wall(
            conn, "SELECT * FROM wall.device_availability(%s, %s) ORDER BY device_id", *day
        )
        assert {
            d["device_id"]: (d["expected_seconds"] / H, d["down_seconds"] / H) for d in devices
        } == {
            "wl-setu-01": (24, 6),
            "aq-setu-01": (20, 1),
            "cctv-cibitung-01": (11, 0),
            "tc-babelan-01": (18, 1),
        }
        by_id = {d["device_id"]: d for d in devices}
        assert by_id["wl-setu-01"]["availability"] == 0.75
        assert by_id["aq-setu-01"]["availability"] == pytest.approx(0.95)
        assert by_id["tc-babelan-01"]["availability"] == pytest.approx(17 / 18)
        assert by_id["cctv-cibitung-01"]["type_name"] == "Kamera CCTV"
        assert by_id["cctv-cibitung-01"]["pillar_name"] == "Masyarakat cerdas"

        def figures(rows: list[dict[str, Any]]) -> dict[str | None, tuple[float, float, int]]:
            return {
                r["grp"]: (r["expected_seconds"] / H, r["down_seconds"] / H, r["devices"])
                for r in rows
            }

        query = "SELECT * FROM wall.availability(%s, %s, %s)"
        pillars = await _as_wall(conn, query, *day, "pillar")
        assert figures(pillars) == {
            "environment": (44, 7, 2),
            "society": (11, 0, 1),
            "living": (18, 1, 1),
        }
        assert [p["label"] for p in pillars] == [
            "Kehidupan cerdas",
            "Lingkungan cerdas",
            "Masyarakat cerdas",
        ]
        assert pillars[1]["availability"] == pytest.approx(37 / 44)
        kecamatan = await _as_wall(conn, query, *day, "kecamatan")
        assert figures(kecamatan) == {
            "setu": (44, 7, 2),
            "cibitung": (11, 0, 1),
            "babelan": (18, 1, 1),
        }
        assert [k["label"] for k in kecamatan] == ["Babelan", "Cibitung", "Setu"]
        types = await _as_wall(conn, query, *day, "type")
        assert figures(types) == {
            "water_level": (24, 6, 1),
            "air_quality": (20, 1, 1),
            "camera": (11, 0, 1),
            "traffic_counter": (18, 1, 1),
        }
        (whole,) = await _as_wall(conn, query, *day, "all")
        assert (whole["grp"], whole["devices"]) == ("all", 4)
        assert (whole["expected_seconds"], whole["down_seconds"]) == (73 * H, 8 * H)
        assert whole["availability"] == pytest.approx(65 / 73)

        # Before anything was registered: no device, nothing expected, one 'all' row all the same.
        before = (
            wib(0, datetime(2026, 1, 1, tzinfo=WIB)),
            wib(24, datetime(2026, 1, 1, tzinfo=WIB)),
        )
        (empty,) = await _as_wall(conn, query, *before, "all")
        assert (empty["devices"], empty["expected_seconds"], empty["availability"]) == (0, 0, None)
        assert await _as_wall(conn, query, *before, "pillar") == []

        # The period is cut at now: from an hour ago to tomorrow is an hour of each active device.
        now = datetime.now(UTC)
        (recent,) = await _as_wall(
            conn,
            "SELECT * FROM wall.device_availability(%s, %s) WHERE device_id = 'wl-setu-01'",
            now - timedelta(hours=1),
            now + timedelta(days=1),
        )
        assert recent["expected_seconds"] == pytest.approx(H, abs=60)
        assert recent["availability"] == 1.0

        with pytest.raises(psycopg.errors.InvalidParameterValue, match="pillar, kecamatan, type"):
            await _as_wall(conn, query, *day, "desa")


async def test_the_availability_functions_signatures_and_privileges(migrated_db: str) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn:
        rows = await _rows(
            conn,
            "SELECT p.oid::regprocedure::text AS name, pg_get_function_result(p.oid) AS result,"
            " p.prosecdef AS definer, p.proconfig AS config,"
            " EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner)))"
            "         WHERE grantee = 0) AS public_execute,"
            " has_function_privilege('pantau_wall', p.oid, 'EXECUTE') AS wall_execute"
            " FROM pg_proc p WHERE p.pronamespace = 'wall'::regnamespace"
            " AND p.proname LIKE '%%availability%%' ORDER BY 1",
        )
        by_name = {r["name"].split("(")[0]: r for r in rows}
        assert set(by_name) == {
            "wall.availability",
            "wall.device_availability",
            "wall.device_availability_detail",
        }
        assert by_name["wall.availability"]["result"] == AVAILABILITY_RESULT
        assert by_name["wall.device_availability"]["result"] == DEVICE_AVAILABILITY_RESULT
        # Only the function that reads the registry's tables runs as its owner, with its
        # search_path fixed, and only the wall's role (and the owner) may call it.
        definer = by_name["wall.device_availability_detail"]
        assert [r["name"] for r in rows if r["definer"]] == [definer["name"]]
        assert definer["config"] == ["search_path=pg_catalog, public, pg_temp"]
        assert not definer["public_execute"]
        assert all(r["wall_execute"] for r in rows)

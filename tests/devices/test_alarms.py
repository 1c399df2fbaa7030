"""Value alarms against a real PostgreSQL: readings written as the ingestion writer writes them
(readings, then device_last_seen's arrival), judged by detector passes at chosen times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devices import registry
from devices.models import DeviceIn
from devices.outages.detector import Detector
from devices.outages.settings import OutagesSettings, WebhookSettings

T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
SETTINGS = OutagesSettings(
    alertmanager_urls=["http://127.0.0.1:9"],
    webhooks=[WebhookSettings(name="hook", url="http://127.0.0.1:9/", secret="s")],
)
WIB_AS_UTC = timedelta(hours=7)  # a field clock sending local time marked as UTC


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def _connect(db: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(db, autocommit=True)
    await conn.execute(
        "SELECT pantau_ensure_partitions('readings', %s::date - 2, %s::date + 3)", (T0, T0)
    )
    return conn


async def _add(conn: psycopg.AsyncConnection, device_id: str, device_type: str) -> None:
    await registry.create_device(
        conn,
        DeviceIn.model_validate(
            {
                "device_id": device_id,
                "name": device_id,
                "device_type": device_type,
                "kecamatan": "setu",
            }
        ),
        "test",
    )


async def _send(
    conn: psycopg.AsyncConnection,
    device_id: str,
    metric: str,
    values: list[tuple[datetime, float]],
    arrived: datetime,
    arrive: bool = True,
) -> None:
    """Readings with their device times, then (as the writer does) the device's arrival."""
    await conn.execute(
        "INSERT INTO readings (time, device_id, metric, value)"
        " SELECT t, %s, %s, v FROM unnest(%s::timestamptz[], %s::float8[]) AS u(t, v)",
        (device_id, metric, [t for t, _ in values], [v for _, v in values]),
    )
    if arrive:
        await _arrive(conn, device_id, max(t for t, _ in values), arrived)


async def _arrive(
    conn: psycopg.AsyncConnection, device_id: str, reading_at: datetime, arrived: datetime
) -> None:
    await conn.execute(
        "INSERT INTO device_last_seen (device_id, last_reading_at, last_received_at)"
        " VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE"
        " SET last_reading_at = GREATEST(device_last_seen.last_reading_at,"
        "                                EXCLUDED.last_reading_at),"
        "     last_received_at = EXCLUDED.last_received_at",
        (device_id, reading_at, arrived),
    )


async def _alarms(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT * FROM outages WHERE kind = 'alarm' ORDER BY id")
    return await cur.fetchall()


async def _open(conn: psycopg.AsyncConnection) -> list[tuple[str, str, str]]:
    """The open alarms as (device, level, severity)."""
    return [
        (a["device_id"], a["level"], a["severity"])
        for a in await _alarms(conn)
        if a["ended_at"] is None
    ]


async def _events(conn: psycopg.AsyncConnection, outage_id: int) -> list[tuple[str, str, str]]:
    cur = await conn.execute(
        "SELECT event, receiver, status FROM alert_outbox WHERE outage_id = %s ORDER BY id",
        (outage_id,),
    )
    return await cur.fetchall()


async def test_a_river_level_raises_steps_up_and_clears_with_hysteresis(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    dev, metric = "wl-setu-10", "water_level_cm"
    async with await _connect(migrated_db) as conn:
        await _add(conn, dev, "water_level")

        async def level(t: float, cm: float) -> None:
            await _send(conn, dev, metric, [(at(t), cm)], at(t))
            await detector.run_pass(conn, at(t + 1))

        await level(0, 300)
        assert await _alarms(conn) == []
        await level(60, 360)  # over Siaga 3 (350)
        [siaga3] = await _alarms(conn)
        assert (siaga3["level"], siaga3["cause"], siaga3["severity"]) == (
            "Siaga 3",
            "Siaga 3",
            "info",
        )
        assert siaga3["metric"] == metric
        assert siaga3["started_at"] == at(60)
        assert siaga3["detail"]["value"] == 360
        assert siaga3["detail"]["raise_at"] == 350
        assert siaga3["detail"]["window"] is None
        assert await _events(conn, siaga3["id"]) == [
            ("raised", "alertmanager", "pending"),
            ("raised", "hook", "pending"),
        ]
        # Passes with no news change nothing: one alarm, not one per pass.
        result = await detector.run_pass(conn, at(70))
        assert (result.alarms_opened, result.alarms_closed) == (0, 0)
        assert len(await _alarms(conn)) == 1

        await level(120, 460)  # over Siaga 2: Siaga 3 ends, Siaga 2 begins
        siaga3, siaga2 = await _alarms(conn)
        assert siaga3["ended_at"] == at(120)
        assert (siaga2["level"], siaga2["severity"], siaga2["ended_at"]) == (
            "Siaga 2",
            "warning",
            None,
        )
        assert siaga2["started_at"] == at(120)
        assert [e for e, _, _ in await _events(conn, siaga3["id"])].count("resolved") == 2
        assert [e for e, _, _ in await _events(conn, siaga2["id"])] == ["raised", "raised"]

        await level(180, 440)  # below 450 but above its clear level 430: kept
        assert await _open(conn) == [(dev, "Siaga 2", "warning")]
        await level(240, 420)  # below 430: down to Siaga 3, which 420 still holds
        assert await _open(conn) == [(dev, "Siaga 3", "info")]
        await level(300, 340)  # back to 340: kept (clears below 330)
        assert await _open(conn) == [(dev, "Siaga 3", "info")]
        assert len(await _alarms(conn)) == 3
        await level(360, 320)
        assert await _open(conn) == []
        assert (await _alarms(conn))[-1]["ended_at"] == at(360)

        # Judged from the readings as they are written: once a pass has moved the watermark past
        # the device's last arrival, a reading no arrival announced is not looked at; its
        # arrival is.
        await detector.run_pass(conn, at(401))
        await _send(conn, dev, metric, [(at(420), 600)], at(420), arrive=False)
        await detector.run_pass(conn, at(421))
        assert await _open(conn) == []
        await _arrive(conn, dev, at(420), at(425))
        result = await detector.run_pass(conn, at(426))
        assert result.alarms_opened == 1
        assert await _open(conn) == [(dev, "Siaga 1", "critical")]


async def test_a_device_override_replaces_its_types_levels(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    metric = "water_level_cm"
    async with await _connect(migrated_db) as conn:
        await _add(conn, "wl-setu-11", "water_level")  # its own, lower levels
        await _add(conn, "wl-setu-12", "water_level")  # the type's
        await conn.execute(
            "INSERT INTO device_alarm_levels (device_id, metric, rank, name, severity, raise_at,"
            " clear_at, source) VALUES"
            " ('wl-setu-11', 'water_level_cm', 1, 'Siaga 3', 'info', 180, 160, 'BBWS, pos Setu'),"
            " ('wl-setu-11', 'water_level_cm', 2, 'Siaga 2', 'warning', 240, 220, 'BBWS, pos Setu')"
        )
        for dev in ("wl-setu-11", "wl-setu-12"):
            await _send(conn, dev, metric, [(at(0), 250)], at(0))
        await detector.run_pass(conn, at(1))
        [alarm] = await _alarms(conn)
        assert (alarm["device_id"], alarm["level"], alarm["severity"]) == (
            "wl-setu-11",
            "Siaga 2",
            "warning",
        )
        assert alarm["detail"]["raise_at"] == 240
        # The override is the device's whole ladder: 560 is no "Siaga 1" for it.
        await _send(conn, "wl-setu-11", metric, [(at(60), 560)], at(60))
        await _send(conn, "wl-setu-12", metric, [(at(60), 560)], at(60))
        await detector.run_pass(conn, at(61))
        assert sorted(await _open(conn)) == [
            ("wl-setu-11", "Siaga 2", "warning"),
            ("wl-setu-12", "Siaga 1", "critical"),
        ]


async def test_rainfall_is_judged_over_its_window_not_per_reading(migrated_db: str) -> None:
    """0.05 mm every 10 s is 18 mm in an hour: heavy rain ("lebat"), though no reading is
    large. The gauge's clock sends local time marked as UTC: its window is its own hour."""
    detector = Detector(SETTINGS)
    dev, metric = "rg-setu-01", "rain_mm"
    async with await _connect(migrated_db) as conn:
        await _add(conn, dev, "rain_gauge")
        raised_at = None
        for minute in range(0, 121, 2):  # a batch every 2 minutes: 12 readings
            start = minute * 60
            mm = 0.05 if minute < 60 else 0.0  # rain for an hour, then none
            batch = [(at(start + s) + WIB_AS_UTC, mm) for s in range(10, 121, 10)]
            await _send(conn, dev, metric, batch, at(start + 120))
            await detector.run_pass(conn, at(start + 121))
            if raised_at is None and await _open(conn):
                raised_at = minute
                # at 10 mm: 200 readings of 0.05 mm, 2000 s of rain
                assert minute * 60 + 120 >= 2000
                assert await _open(conn) == [(dev, "Hujan lebat (1 jam)", "warning")]
            if minute == 58:
                [alarm] = await _alarms(conn)
                assert alarm["detail"]["window"] == 3600
                assert round(alarm["detail"]["value"], 2) >= 10
                cur = await conn.execute(
                    "SELECT max(value) FROM readings WHERE device_id = %s", (dev,)
                )
                assert await cur.fetchone() == (0.05,)
        assert raised_at is not None and raised_at <= 34  # noqa: PT018 - both are the point
        # After the rain the hour slides on and the alarm clears below 8 mm.
        [alarm] = await _alarms(conn)
        assert alarm["level"] == "Hujan lebat (1 jam)"
        assert alarm["ended_at"] is not None
        assert at(3600 + 24 * 60) <= alarm["ended_at"] <= at(3600 + 40 * 60)


async def test_pm25_categories_hold_for_their_minimum_duration(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    dev, metric = "aq-setu-01", "pm25_ugm3"
    async with await _connect(migrated_db) as conn:
        await _add(conn, dev, "air_quality")

        async def pm(t: float, value: float) -> None:
            await _send(conn, dev, metric, [(at(t), value)], at(t))
            await detector.run_pass(conn, at(t + 1))

        await pm(0, 40)  # Sedang, but not yet for 10 minutes
        await pm(300, 42)
        assert await _alarms(conn) == []
        await pm(600, 41)
        [sedang] = await _alarms(conn)
        assert (sedang["level"], sedang["severity"]) == ("Sedang", "info")
        assert sedang["started_at"] == at(0)
        # A short spike to "Berbahaya" is no alarm of that level.
        await pm(700, 260)
        await pm(760, 45)
        await detector.run_pass(conn, at(1400))
        assert await _open(conn) == [(dev, "Sedang", "info")]
        # Held for 10 minutes: straight to the highest category reached, past "Tidak Sehat".
        await pm(1500, 160)
        await pm(1800, 170)
        assert await _open(conn) == [(dev, "Sedang", "info")]
        await pm(2100, 165)
        assert await _open(conn) == [(dev, "Sangat Tidak Sehat", "critical")]
        assert (await _alarms(conn))[-1]["started_at"] == at(1500)
        await pm(2400, 60)  # below 140: down to "Tidak Sehat", which 60 still holds
        assert await _open(conn) == [(dev, "Tidak Sehat", "warning")]
        await pm(2700, 10)
        assert await _open(conn) == []
        levels = [a["level"] for a in await _alarms(conn)]
        assert levels == ["Sedang", "Sangat Tidak Sehat", "Tidak Sehat"]


async def test_a_device_in_maintenance_raises_no_alarm(migrated_db: str) -> None:
    detector = Detector(SETTINGS)
    metric = "water_level_cm"
    async with await _connect(migrated_db) as conn:
        await _add(conn, "wl-setu-13", "water_level")
        await _add(conn, "wl-setu-14", "water_level")
        await conn.execute(
            "INSERT INTO maintenance_windows (device_id, starts_at, ends_at, created_by)"
            " VALUES ('wl-setu-13', %s, %s, 'test')",
            (at(0), at(300)),
        )
        for dev in ("wl-setu-13", "wl-setu-14"):
            await _send(conn, dev, metric, [(at(10), 600)], at(10))
        await detector.run_pass(conn, at(11))
        assert await _open(conn) == [("wl-setu-14", "Siaga 1", "critical")]
        # Set to maintenance in the registry: its open alarm ends, no new one is raised.
        await conn.execute(
            "UPDATE devices SET status = 'maintenance' WHERE device_id = 'wl-setu-14'"
        )
        await _send(conn, "wl-setu-14", metric, [(at(60), 610)], at(60))
        await detector.run_pass(conn, at(61))
        assert await _open(conn) == []
        [alarm] = await _alarms(conn)
        assert alarm["ended_at"] == at(61)
        # The window over, the next reading is judged.
        await _send(conn, "wl-setu-13", metric, [(at(320), 600)], at(320))
        await detector.run_pass(conn, at(321))
        assert await _open(conn) == [("wl-setu-13", "Siaga 1", "critical")]

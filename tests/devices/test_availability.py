"""Availability and the evaluation report against a real PostgreSQL, on a fixture computed by
hand: Monday 2 November 2026, 00.00 to 24.00 WIB (UTC+7), four devices.

- wl-setu-01 (water_level, Setu, environment): registered long before; a 6 h outage
  02.00-08.00 grouped under an area outage of Setu 02.00-08.00; one more outage the day before
  (21.00-23.00 on 1 November) that lies outside the period.
  expected 24 h, down 6 h: 18/24 = 75 %.
- aq-setu-01 (air_quality, Setu, environment): a maintenance window 10.00-14.00 (4 h); an
  outage 12.00-15.00, of which 2 h inside the window (not counted) and 1 h outside it.
  expected 24 - 4 = 20 h, down 1 h: 19/20 = 95 %.
- cctv-cibitung-01 (camera, Cibitung, society): registered at 12.00; a kecamatan window
  for Cibitung 23.00-24.00; no outage. expected 12 - 1 = 11 h, down 0: 100 %.
- tc-babelan-01 (traffic_counter, Babelan, living): retired at 18.00 (its audit entry; its
  updated_at is later, to show the audit entry is what counts); an outage 17.00-20.00.
  expected 18 h, down 1 h (17.00-18.00): 17/18 = 94.44 %.

Whole report: expected 24 + 20 + 11 + 18 = 73 h, down 6 + 1 + 0 + 1 = 8 h: 65/73 = 89.04 %.
By pillar: environment 44 h / 7 h down: 37/44 = 84.09 %; society 11 h, 100 %; living
17/18. By kecamatan: Setu 37/44, Cibitung 100 %, Babelan 17/18. By type: one device each.
Coverage: environment 2 active (wl-setu-01 has a reading in the period, aq-setu-01 none):
1 reporting; society 1 active, reporting (device_last_seen in the period); living 0 active
(the counter is retired); the other pillars 0.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from playwright.async_api import Route, async_playwright

from devices import registry
from devices.models import DeviceIn
from devices.outages import report
from devices.outages.availability import Availability, Period, availability, period
from pantau.cliapp import WIB
from tests.devices.conftest import Api
from tests.devices.test_phone_page import ARGS, CHROMIUM
from tests.fixtures.servers import run_pantau

DAY = datetime(2026, 11, 2, tzinfo=WIB)
H = 3600.0
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshots" / "availability-report.png"


def wib(hour: float, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour)


async def _add(conn: psycopg.AsyncConnection, device_id: str, kind: str, kecamatan: str) -> None:
    await registry.create_device(
        conn,
        DeviceIn.model_validate(
            {"device_id": device_id, "name": device_id, "device_type": kind, "kecamatan": kecamatan}
        ),
        "test",
    )


async def _outage(
    conn: psycopg.AsyncConnection,
    device_id: str | None,
    kecamatan: str,
    start: datetime,
    end: datetime | None,
    parent: int | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO outages (kind, device_id, kecamatan, cause, severity, started_at, ended_at,"
        " parent_id) VALUES (%s, %s, %s, %s, 'critical', %s, %s, %s) RETURNING id",
        (
            "area" if device_id is None else "device",
            device_id,
            kecamatan,
            "area" if device_id is None else "silent",
            start,
            end,
            parent,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def seed(db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await _add(conn, "wl-setu-01", "water_level", "setu")
        await _add(conn, "aq-setu-01", "air_quality", "setu")
        await _add(conn, "cctv-cibitung-01", "camera", "cibitung")
        await _add(conn, "tc-babelan-01", "traffic_counter", "babelan")
        await registry.retire_device(conn, "tc-babelan-01", None, "test")
        await conn.execute(
            "UPDATE devices SET created_at = %s", (datetime(2026, 10, 1, tzinfo=WIB),)
        )
        await conn.execute(
            "UPDATE devices SET created_at = %s WHERE device_id = 'cctv-cibitung-01'", (wib(12),)
        )
        await conn.execute(
            "UPDATE devices SET updated_at = %s WHERE device_id = 'tc-babelan-01'", (wib(22),)
        )
        await conn.execute(
            "UPDATE audit_log SET at = %s WHERE entity_id = 'tc-babelan-01'"
            " AND after ->> 'status' = 'retired'",
            (wib(18),),
        )
        area = await _outage(conn, None, "setu", wib(2), wib(8))
        await _outage(conn, "wl-setu-01", "setu", wib(2), wib(8), parent=area)
        await _outage(conn, "wl-setu-01", "setu", wib(-3), wib(-1))
        await _outage(conn, "aq-setu-01", "setu", wib(12), wib(15))
        await _outage(conn, "tc-babelan-01", "babelan", wib(17), wib(20))
        for device, kecamatan, start, end in (
            ("aq-setu-01", None, wib(10), wib(14)),
            (None, "cibitung", wib(23), wib(24)),
        ):
            await conn.execute(
                "INSERT INTO maintenance_windows (device_id, kecamatan, starts_at, ends_at,"
                " created_by) VALUES (%s, %s, %s, %s, 'test')",
                (device, kecamatan, start, end),
            )
        await conn.execute(
            "SELECT pantau_ensure_partitions('readings', %s::date, %s::date)",
            (wib(0).astimezone(UTC).date(), wib(24).astimezone(UTC).date()),
        )
        await conn.execute(
            "INSERT INTO readings (time, device_id, metric, value)"
            " VALUES (%s, 'wl-setu-01', 'water_level_cm', 120)",
            (wib(9),),
        )
        await conn.execute(
            "INSERT INTO device_last_seen (device_id, first_seen_at, last_reading_at,"
            " last_received_at) VALUES ('cctv-cibitung-01', %s, %s, %s)",
            (wib(12), wib(20), wib(20)),
        )


async def _report(db: str, by: str) -> Availability:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        return await availability(conn, Period(wib(0), wib(24)), by)  # type: ignore[arg-type]


def _figures(rows: list[Any]) -> dict[str, tuple[float, float]]:
    return {
        (r.key if hasattr(r, "key") else r.device_id): (r.expected_seconds / H, r.down_seconds / H)
        for r in rows
    }


async def test_the_hand_computed_day(migrated_db: str) -> None:
    await seed(migrated_db)
    figures = await _report(migrated_db, "pillar")
    assert _figures(figures.devices) == {
        "wl-setu-01": (24, 6),
        "aq-setu-01": (20, 1),
        "cctv-cibitung-01": (11, 0),
        "tc-babelan-01": (18, 1),
    }
    by_id = {d.device_id: d for d in figures.devices}
    assert by_id["wl-setu-01"].availability == 0.75
    assert by_id["aq-setu-01"].availability == pytest.approx(0.95)
    assert by_id["cctv-cibitung-01"].availability == 1.0
    assert by_id["tc-babelan-01"].availability == pytest.approx(17 / 18)
    assert by_id["cctv-cibitung-01"].registered_seconds == 12 * H
    assert (figures.expected_seconds, figures.down_seconds) == (73 * H, 8 * H)
    assert figures.availability == pytest.approx(65 / 73)
    assert _figures(figures.groups) == {
        "environment": (44, 7),
        "society": (11, 0),
        "living": (18, 1),
    }
    assert {g.key: g.label for g in figures.groups}["environment"] == "Lingkungan cerdas"
    assert [d.device_id for d in figures.worst] == [
        "wl-setu-01",
        "tc-babelan-01",
        "aq-setu-01",
        "cctv-cibitung-01",
    ]
    assert [(o.kind, o.device_id, o.seconds_in_period / H) for o in figures.timeline] == [
        ("area", None, 6),
        ("device", "wl-setu-01", 6),
        ("device", "aq-setu-01", 3),
        ("device", "tc-babelan-01", 3),
    ]
    assert figures.timeline[1].parent_id == figures.timeline[0].id
    coverage = {c.pillar: (c.active, c.reporting) for c in figures.coverage}
    assert coverage == {
        "environment": (2, 1),
        "society": (1, 1),
        "living": (0, 0),
        "governance": (0, 0),
        "branding": (0, 0),
        "economy": (0, 0),
    }


async def test_grouped_by_kecamatan_and_by_type(migrated_db: str) -> None:
    await seed(migrated_db)
    by_kecamatan = await _report(migrated_db, "kecamatan")
    assert _figures(by_kecamatan.groups) == {
        "setu": (44, 7),
        "cibitung": (11, 0),
        "babelan": (18, 1),
    }
    assert [g.label for g in by_kecamatan.groups] == ["Babelan", "Cibitung", "Setu"]
    assert by_kecamatan.groups[2].availability == pytest.approx(37 / 44)
    by_type = await _report(migrated_db, "type")
    assert _figures(by_type.groups) == {
        "water_level": (24, 6),
        "air_quality": (20, 1),
        "camera": (11, 0),
        "traffic_counter": (18, 1),
    }
    assert {g.label for g in by_type.groups} >= {"Tinggi muka air", "Kamera CCTV"}


def test_a_period_is_checked_and_cut_at_now() -> None:
    now = datetime(2026, 11, 2, 12, tzinfo=WIB)
    assert period(wib(0), wib(24), now) == Period(wib(0), now)
    for start, end in ((wib(24), wib(0)), (wib(0), wib(24 * 800)), (wib(13), wib(14))):
        with pytest.raises(registry.Invalid):
            period(start, end, now)


async def test_the_cli_prints_the_table_writes_csv_and_html_and_refuses_a_wrong_by(
    migrated_db: str, tmp_path: Path
) -> None:
    await seed(migrated_db)
    done = run_pantau(
        "report", "availability", "--from", "2026-11-02", "--to", "2026-11-03T00:00+07:00",
        "--by", "kecamatan", "--csv", "out.csv", "--html", "out.html",
        db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Laporan ketersediaan" in done.stdout
    assert "2 November 2026 00.00 WIB s.d. 3 November 2026 00.00 WIB" in done.stdout
    setu = next(line for line in done.stdout.splitlines() if line.startswith("Setu"))
    assert setu.split()[1:] == ["2", "44,0", "7,0", "84,09", "%"]
    assert "89,04 %" in done.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == report.CSV_COLUMNS
    assert [
        (r["group"], r["device_id"], r["expected_seconds"], r["down_seconds"]) for r in rows
    ] == [
        ("Babelan", "tc-babelan-01", "64800", "3600"),
        ("Cibitung", "cctv-cibitung-01", "39600", "0"),
        ("Setu", "aq-setu-01", "72000", "3600"),
        ("Setu", "wl-setu-01", "86400", "21600"),
    ]
    assert rows[3]["availability"] == "0.750000"
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 3
    assert "Ketersediaan per kecamatan" in page
    assert "<script" not in page
    assert "http://" not in page.replace("http://www.w3.org/", "")

    wrong = run_pantau(
        "report", "availability", "--from", "2026-11-02", "--to", "2026-11-03", "--by", "desa",
        db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "pillar" in wrong.stderr
    assert "kecamatan" in wrong.stderr
    assert "type" in wrong.stderr
    late = run_pantau(
        "report", "availability", "--from", "2026-11-03", "--to", "2026-11-02",
        db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert late.returncode == 2
    assert "--from" in late.stderr


async def test_the_html_report_opens_offline_and_is_screenshot(
    migrated_db: str, tmp_path: Path
) -> None:
    await seed(migrated_db)
    figures = await _report(migrated_db, "kecamatan")
    target = tmp_path / "laporan.html"
    target.write_text(report.to_html(figures, datetime(2026, 11, 3, 8, tzinfo=WIB)), "utf-8")
    outside: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 900})

            async def guard(route: Route) -> None:
                where = urlparse(route.request.url)
                if where.scheme in ("file", "data", "about") or where.hostname == "127.0.0.1":
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await context.route("**/*", guard)
            page = await context.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(target.as_uri(), wait_until="networkidle")
            assert await page.locator("svg").count() == 3
            assert (
                await page.locator("h1").inner_text()
                == "Laporan ketersediaan perangkat kota cerdas"
            )
            rows = await page.locator("table").first.locator("tbody tr").all_inner_texts()
            assert any(r.startswith("Setu") and "84,09 %" in r for r in rows), rows
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert outside == []
    assert requests == [target.as_uri()]


async def test_the_api_answers_the_same_figures(api: Api) -> None:
    await seed(api.db)
    query = {"from": "2026-11-02T00:00+07:00", "to": "2026-11-03T00:00+07:00", "by": "kecamatan"}
    async with api.client("operator") as http:
        response = await http.get("/api/v1/availability", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["from"] == "2026-11-02T00:00:00+07:00"
        assert body["availability"] == pytest.approx(65 / 73)
        groups = {g["key"]: (g["expected_seconds"], g["down_seconds"]) for g in body["groups"]}
        assert groups == {"setu": (44 * H, 7 * H), "cibitung": (11 * H, 0), "babelan": (18 * H, H)}
        assert [w["device_id"] for w in body["worst"]][:2] == ["wl-setu-01", "tc-babelan-01"]
        assert body["timeline"][0]["kind"] == "area"
        assert body["timeline"][0]["started_at"] == "2026-11-02T02:00:00+07:00"
        assert "devices" not in body
        wrong = await http.get("/api/v1/availability", params={**query, "by": "desa"})
        assert wrong.status_code == 422
        naive = await http.get("/api/v1/availability", params={**query, "from": "2026-11-02"})
        assert naive.status_code == 422
        assert naive.json()["problems"][0]["field"] == "from"
    async with api.client(None) as http:
        assert (await http.get("/api/v1/availability", params=query)).status_code == 401

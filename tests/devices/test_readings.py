"""A device's readings history through the API and the CLI, against a real PostgreSQL holding
raw readings and the rollups Pantau refreshes on plain PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from devices import readings
from pantau.cliapp import WIB
from tests.devices.conftest import Api
from tests.fixtures.servers import run_pantau

WL = {
    "device_id": "wl-setu-01",
    "name": "Pintu air Kali CBL",
    "device_type": "water_level",
    "kecamatan": "setu",
}
RG = {
    "device_id": "rg-babelan-01",
    "name": "Hujan",
    "device_type": "rain_gauge",
    "kecamatan": "babelan",
}


def base() -> datetime:
    """Three hours before the last full hour: every fine reading lies in the past."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def seed(db: str, h: datetime) -> None:
    """wl-setu-01: a reading every 10 s for 3 hours from `h` (values 0, 1, 2, ...), one an hour
    for the 40 days before, and a battery voltage its type does not define; rg-babelan-01: one
    a second for 50,001 seconds from a day before `h`, more than one answer may carry."""
    with psycopg.connect(db, autocommit=True) as conn:
        for table in ("readings", "readings_1m"):
            conn.execute(
                "SELECT pantau_ensure_partitions(%s, (%s::timestamptz - interval '41 days')::date,"
                " current_date + 1)",
                (table, h),
            )
        conn.execute(
            "INSERT INTO readings SELECT %(h)s + i * interval '10 seconds', 'wl-setu-01',"
            " 'water_level_cm', i FROM generate_series(0, 1079) i",
            {"h": h},
        )
        conn.execute(
            "INSERT INTO readings SELECT %(h)s - interval '40 days' + k * interval '1 hour',"
            " 'wl-setu-01', 'water_level_cm', 100 + k %% 24 FROM generate_series(0, 959) k",
            {"h": h},
        )
        conn.execute(
            "INSERT INTO readings SELECT %(h)s + i * interval '1 minute', 'wl-setu-01',"
            " 'battery_v', 12.5 FROM generate_series(0, 9) i",
            {"h": h},
        )
        conn.execute(
            "INSERT INTO readings SELECT %(h)s - interval '1 day' + i * interval '1 second',"
            " 'rg-babelan-01', 'rain_mm', 0.05 FROM generate_series(0, 50000) i",
            {"h": h},
        )
        conn.execute(
            "SELECT pantau_refresh_rollups(%s::timestamptz - interval '41 days', now())", (h,)
        )


def iso(t: datetime) -> str:
    return t.isoformat()


@pytest.fixture
async def seeded(api: Api) -> datetime:
    async with api.client("technician") as http:
        assert (await http.post("/api/v1/devices", json=WL)).status_code == 201
        assert (await http.post("/api/v1/devices", json=RG)).status_code == 201
    h = base()
    # Off the event loop: the service runs on it, and may hold a lock the seeding waits for.
    await asyncio.to_thread(seed, api.db, h)
    return h


async def test_raw_1m_and_1h_answers(api: Api, seeded: datetime) -> None:
    h = seeded
    async with api.client("operator") as http:

        async def get(**params: str) -> dict:  # type: ignore[type-arg]
            response = await http.get("/api/v1/devices/wl-setu-01/readings", params=params)
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        raw = await get(
            metric="water_level_cm", resolution="raw", **{"from": iso(h), "to": iso(h + HOUR)}
        )
        assert raw["resolution"] == "raw"
        assert raw["count"] == 360
        assert raw["max_rows"] == readings.MAX_ROWS
        assert raw["from"] == h.astimezone(WIB).isoformat()
        first, last = raw["readings"][0], raw["readings"][-1]
        assert first == {
            "time": h.astimezone(WIB).isoformat(),  # ISO 8601 with its offset, in WIB
            "metric": "water_level_cm",
            "value": 0.0,
            "min": 0.0,
            "max": 0.0,
            "samples": 1,
        }
        assert first["time"].endswith("+07:00")
        assert last["value"] == 359.0
        # "+07:00" typed unescaped in a URL arrives as " 07:00" and still means WIB.
        wib = h.astimezone(WIB)
        typed = await http.get(
            f"/api/v1/devices/wl-setu-01/readings?metric=water_level_cm&resolution=raw"
            f"&from={wib.isoformat()}&to={(wib + HOUR).isoformat()}"
        )
        assert "+07:00&" in str(typed.request.url)
        assert typed.json()["count"] == 360, typed.text

        minutes = await get(
            metric="water_level_cm",
            resolution="1m",
            **{"from": iso(h + timedelta(seconds=30)), "to": iso(h + timedelta(minutes=10))},
        )
        # The bucket holding `from` is included: 10 buckets of 6 readings.
        assert minutes["count"] == 10
        assert minutes["readings"][0] == {
            "time": h.astimezone(WIB).isoformat(),
            "metric": "water_level_cm",
            "value": 2.5,
            "min": 0.0,
            "max": 5.0,
            "samples": 6,
        }
        assert minutes["readings"][9]["value"] == 56.5

        both = await get(resolution="1m", **{"from": iso(h), "to": iso(h + timedelta(minutes=2))})
        assert [(p["metric"], p["samples"]) for p in both["readings"]] == [
            ("battery_v", 1),
            ("water_level_cm", 6),
            ("battery_v", 1),
            ("water_level_cm", 6),
        ]

        hours = await get(
            metric="water_level_cm",
            resolution="1h",
            **{"from": iso(h - timedelta(days=40)), "to": iso(h)},
        )
        assert hours["count"] == 960
        assert {p["samples"] for p in hours["readings"]} == {1}
        assert hours["readings"][5]["value"] == 105.0

        # auto: the finest resolution that covers the range.
        assert (await get(**{"from": iso(h), "to": iso(h + HOUR)}))["resolution"] == "raw"
        ten_days = await get(**{"from": iso(h - timedelta(days=10)), "to": iso(h + HOUR)})
        assert ten_days["resolution"] == "1m"
        long = await get(
            metric="water_level_cm",
            **{"from": iso(h - timedelta(days=40)), "to": iso(h + 3 * HOUR)},
        )
        assert long["resolution"] == "1h"
        assert long["count"] == 963
        assert long["readings"][-1]["samples"] == 360
        # Without from and to: the last 24 hours.
        default = await get(metric="water_level_cm", resolution="raw")
        # The fine readings and the hourly ones of the last day (20 or 21, by the minute now).
        assert default["count"] in (1080 + 20, 1080 + 21)
        # A metric the device reported, though its type does not define it.
        battery = await get(metric="battery_v", **{"from": iso(h), "to": iso(h + HOUR)})
        assert battery["count"] == 10


HOUR = timedelta(hours=1)


async def test_bounds_and_bad_requests_are_clear_422s(api: Api, seeded: datetime) -> None:
    h = seeded
    async with api.client("operator") as http:

        async def problems(device: str = "wl-setu-01", **params: str) -> dict[str, str]:
            response = await http.get(f"/api/v1/devices/{device}/readings", params=params)
            assert response.status_code == 422, response.text
            return {p["field"]: p["message"] for p in response.json()["problems"]}

        assert (
            await problems(resolution="raw", **{"from": iso(h - timedelta(days=3)), "to": iso(h)})
        )["range"] == (
            "from..to spans 3 days; resolution raw answers at most 2 days: ask for "
            "resolution=1m or a shorter range"
        )
        assert (
            "resolution 1m answers at most 31 days: ask for resolution=1h"
            in (
                await problems(
                    resolution="1m", **{"from": iso(h - timedelta(days=40)), "to": iso(h)}
                )
            )["range"]
        )
        assert (
            "resolution 1h answers at most 3660 days: ask for a shorter range"
            in (await problems(**{"from": "2000-01-01T00:00Z", "to": iso(h)}))["range"]
        )
        # More rows than one answer carries: raw refuses, auto falls back to the 1 m rollups.
        day = {"from": iso(h - timedelta(days=1)), "to": iso(h - timedelta(hours=10))}
        assert (await problems("rg-babelan-01", resolution="raw", **day))["rows"] == (
            f"more than {readings.MAX_ROWS} rows at resolution raw: ask for resolution=1m, "
            "a shorter range (from, to) or fewer metrics"
        )
        auto = await http.get("/api/v1/devices/rg-babelan-01/readings", params=day)
        assert auto.status_code == 200
        assert auto.json()["resolution"] == "1m"
        assert auto.json()["count"] == 834  # 50,001 seconds of minutes
        assert sum(p["samples"] for p in auto.json()["readings"]) == 50_001

        assert await problems(resolution="5m", format="xml") == {
            "resolution": "expected one of 'raw', '1m', '1h' or 'auto' (got '5m')",
            "format": "expected one of 'json' or 'csv' (got 'xml')",
        }
        wrong = await problems(**{"from": "2026-12-01 08:00", "to": "soon"})
        assert wrong == {
            "from": "'2026-12-01 08:00' has no offset: expected e.g. 2026-12-01T08:00+07:00 (WIB) "
            "or 2026-12-01T08:00Z (UTC)",
            "to": "'soon': expected an ISO 8601 time, e.g. 2026-12-01T08:00+07:00",
        }
        assert (await problems(metric="water_level"))["metric"] == (
            "'water_level': device 'wl-setu-01' (water_level) has no such metric; expected one "
            "of water_level_cm"
        )
        assert "is not before to" in (await problems(**{"from": iso(h), "to": iso(h)}))["from"]
        assert (await problems(format="xlsx"))[
            "format"
        ] == "expected one of 'json' or 'csv' (got 'xlsx')"
        missing = await http.get("/api/v1/devices/nope/readings")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no device 'nope'"
    async with api.client(None) as anonymous:
        assert (await anonymous.get("/api/v1/devices/wl-setu-01/readings")).status_code == 401


async def test_extreme_dates_are_clear_422s(api: Api) -> None:
    """Year 1 and 9999 once overflowed (`to` minus the default day, or into UTC / WIB): a 500."""
    async with api.client("technician") as http:
        assert (await http.post("/api/v1/devices", json=WL)).status_code == 201
    expected = "expected a time from 1970-01-01 to before 3000-01-01 (UTC)"
    async with api.client("operator") as http:
        for params in (
            {"to": "0001-01-01T00:00Z"},
            {"to": "0001-01-01T00:00+07:00"},
            {"from": "0001-01-01T00:00Z"},
            {"from": "9999-12-31T23:59Z"},
            {"from": "9999-12-31T23:59-07:00"},
            {"from": "0001-01-01T00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
            {"to": "1969-12-31T23:59Z"},
        ):
            response = await http.get("/api/v1/devices/wl-setu-01/readings", params=params)
            assert response.status_code == 422, (params, response.text)
            problems = {p["field"]: p["message"] for p in response.json()["problems"]}
            assert set(problems) == set(params), (params, problems)
            for field, text in params.items():
                assert problems[field] == f"{text!r}: {expected}"
        edge = {"from": "1970-01-01T00:00Z", "to": "1970-01-02T00:00Z"}
        response = await http.get("/api/v1/devices/wl-setu-01/readings", params=edge)
        assert response.status_code == 200, response.text
        assert response.json()["count"] == 0


async def test_the_same_as_csv(api: Api, seeded: datetime) -> None:
    h = seeded
    params = {"metric": "water_level_cm", "from": iso(h), "to": iso(h + timedelta(minutes=5))}
    async with api.client("operator") as http:
        as_json = (await http.get("/api/v1/devices/wl-setu-01/readings", params=params)).json()
        by_format = await http.get(
            "/api/v1/devices/wl-setu-01/readings", params={**params, "format": "csv"}
        )
        by_accept = await http.get(
            "/api/v1/devices/wl-setu-01/readings", params=params, headers={"Accept": "text/csv"}
        )
    assert by_format.status_code == 200
    assert by_format.headers["content-type"] == "text/csv; charset=utf-8"
    assert by_format.headers["content-disposition"].startswith(
        'attachment; filename="wl-setu-01_raw_'
    )
    assert by_format.text == by_accept.text
    rows = list(csv.DictReader(io.StringIO(by_format.text)))
    assert list(rows[0]) == list(readings.CSV_COLUMNS)
    assert len(rows) == as_json["count"] == 30
    assert rows[7] == {
        "device_id": "wl-setu-01",
        "metric": "water_level_cm",
        "time": (h + timedelta(seconds=70)).astimezone(WIB).isoformat(),
        "value": "7.0",
        "min": "7.0",
        "max": "7.0",
        "samples": "1",
    }
    assert datetime.fromisoformat(rows[7]["time"]) == h + timedelta(seconds=70)


def test_cli_readings(migrated_db: str, tmp_path: Path) -> None:
    assert run_pantau(
        "devices", "add", "--id", "wl-setu-01", "--name", "A", "--type", "water_level",
        "--kecamatan", "setu", db=migrated_db, cwd=tmp_path,
    ).returncode == 0  # fmt: skip
    h = base()
    seed(migrated_db, h)
    local = h.astimezone(WIB).replace(tzinfo=None)  # typed as a person in Bekasi would
    table = run_pantau(
        "devices", "readings", "wl-setu-01", "--metric", "water_level_cm",
        "--from", f"{local:%Y-%m-%d %H:%M}",
        "--to", f"{local + timedelta(minutes=3):%Y-%m-%d %H:%M}",
        "--resolution", "1m", db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[0].startswith("wl-setu-01: 3 rows at resolution 1m, ")
    assert lines[1].split() == ["time", "(WIB)", "metric", "avg", "min", "max", "samples"]
    day, clock = f"{local:%Y-%m-%d}", f"{local:%H:%M:%S}"
    assert lines[2].split() == [day, clock, "water_level_cm", "2.5", "0", "5", "6"]
    as_csv = run_pantau(
        "devices", "readings", "wl-setu-01", "--from", local.isoformat(),
        "--to", (local + timedelta(seconds=20)).isoformat(), "--csv", db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert as_csv.stdout.splitlines()[0] == ",".join(readings.CSV_COLUMNS)
    assert len(as_csv.stdout.splitlines()) == 1 + 3  # two water levels and a battery voltage
    wrong = run_pantau(
        "devices", "readings", "wl-setu-01", "--resolution", "raw", "--from", "2026-01-01",
        "--to", "2026-02-01", db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (
        "error: --from/--to: from..to spans 31 days; resolution raw answers at most 2 days: ask "
        "for --resolution 1m or a shorter range"
    )
    bad = run_pantau(
        "devices", "readings", "wl-setu-01", "--resolution", "5m", "--metric", "nope",
        db=migrated_db, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --resolution: '5m': expected one of raw, 1m, 1h or auto"
    unknown = run_pantau(
        "devices", "readings", "wl-setu-01", "--metric", "nope", db=migrated_db, cwd=tmp_path
    )
    assert unknown.stderr.startswith("error: --metric: 'nope': device 'wl-setu-01' (water_level)")

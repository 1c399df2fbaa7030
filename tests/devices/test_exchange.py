"""Device files as a regency office writes them, through the API: an id-ID Excel CSV, XLSX both
ways, formula-shaped text that stays text, and the row limit."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from devices.files import CsvReader, FileInvalid, Record, neutralise, restore
from pantau.settings import Settings
from tests.devices.conftest import Api
from tests.pantau.test_service import running, wait_ready

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HYPERLINK = '=HYPERLINK("http://evil.example/steal","klik")'

# What Excel (id-ID locale) writes with "CSV UTF-8": a BOM, CRLF, `;` between fields, decimal
# commas, day-first dates; a quoted address with a `;` and a line break inside.
ID_EXCEL = (
    "\ufeffdevice_id;name;device_type;kecamatan;latitude;longitude;address_note;install_date;"
    "installed_by\r\n"
    "wl-setu-01;Pintu air Kali CBL;water_level;Setu;-6,35;107,03;+62 21 555 0101;01/11/2026;"
    "Budi\r\n"
    'rg-setu-01;Penakar hujan;rain_gauge;setu;-6,3512;107,0455;"Jl. Raya Setu; RT 02\r\n'
    'RW 03";15/11/2026;Siti\r\n'
    f'aq-setu-01;"{HYPERLINK.replace(chr(34), chr(34) * 2)}";air_quality;Setu;;;;;@budi\r\n'
    ";;;;;;;;\r\n"
)


def records(reader: CsvReader, data: bytes, step: int) -> list[Record]:
    out: list[Record] = []
    for i in range(0, len(data), step):
        out.extend(reader.feed(data[i : i + step]))
    out.extend(reader.feed(b"", final=True))
    return out


def test_csv_reader_reads_an_id_excel_file_the_same_in_any_chunks() -> None:
    data = ID_EXCEL.encode()
    whole = records(CsvReader(), data, len(data))
    assert [(r.row, r.line, r.decimal_comma) for r in whole] == [
        (1, 2, True),
        (2, 3, True),
        (3, 5, True),
    ]
    assert whole[0].values["latitude"] == "-6,35"
    # A line break in a cell is stored as \n, as XLSX (XML) would give it back.
    assert whole[1].values["address_note"] == "Jl. Raya Setu; RT 02\nRW 03"
    assert whole[2].values["name"] == HYPERLINK
    for step in (1, 7, 64):
        assert [(r.row, r.line, r.values) for r in records(CsvReader(), data, step)] == [
            (r.row, r.line, r.values) for r in whole
        ]


def test_csv_reader_comma_file_sep_hint_and_bad_files() -> None:
    comma = records(CsvReader(), b"device_id,name\nwl-1,A\n", 100)
    assert comma[0].values == {"device_id": "wl-1", "name": "A"}
    assert not comma[0].decimal_comma
    hinted = records(CsvReader(), b"sep=;\r\ndevice_id;name\r\nwl-1;A,B\r\n", 100)
    assert hinted[0].values == {"device_id": "wl-1", "name": "A,B"}
    with pytest.raises(FileInvalid) as bad:
        records(CsvReader(), "device_id;name\nwl-1;Pintu\nwl-2;P\xe9tak\n".encode("cp1252"), 5)
    assert bad.value.problem.line == 3
    assert "expected UTF-8" in bad.value.problem.message
    with pytest.raises(FileInvalid) as unclosed:
        records(CsvReader(), b'device_id,name\nwl-1,"A\nwl-2,B\n', 100)
    assert unclosed.value.problem.line == 2
    assert "never closed" in unclosed.value.problem.message
    inch = records(CsvReader(), b'device_id,name\nwl-1,Pipa 5" baja\nwl-2,"B\nC"\nwl-3,D\n', 3)
    assert [(r.line, r.values["name"]) for r in inch] == [
        (2, 'Pipa 5" baja'),
        (3, "B\nC"),
        (5, "D"),
    ]
    inch_end = records(CsvReader(), b'device_id,name\nwl-1,Pipa 5" baja\nwl-2,B\n', 100)
    assert [r.values["name"] for r in inch_end] == ['Pipa 5" baja', "B"]
    with pytest.raises(FileInvalid) as endless:
        records(CsvReader(), b"device_id,name\n" + b"x" * 300_000, 4096)
    assert "longer than" in endless.value.problem.message
    with pytest.raises(FileInvalid) as header:
        records(CsvReader(), b"device_id;lokasi\nwl-1;x\n", 100)
    assert header.value.problem.line == 1
    assert "unknown columns ['lokasi']" in str(header.value)


_CELL = (
    st.text(alphabet="ab \"';,\n\r=", min_size=1, max_size=12)
    .map(str.strip)
    .filter(lambda t: bool(t) and not t.startswith("'"))
)


@given(
    st.lists(st.tuples(_CELL, _CELL), min_size=1, max_size=6),
    st.sampled_from([",", ";"]),
    st.integers(1, 40),
)
def test_csv_reader_reads_what_csv_writes(
    rows: list[tuple[str, str]], delimiter: str, step: int
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["name", "address_note"])
    writer.writerows(rows)
    got = records(CsvReader(), out.getvalue().encode(), step)
    lf = [(a.replace("\r\n", "\n"), b.replace("\r\n", "\n")) for a, b in rows]
    assert [(r.values["name"], r.values["address_note"]) for r in got] == lf


@given(st.text(max_size=30))
def test_neutralise_is_undone_by_restore(text: str) -> None:
    out = neutralise(text)
    assert restore(out) == text
    assert out[:1] not in ("=", "+", "-", "@", "\t", "\r")


async def test_id_excel_csv_imports(api: Api) -> None:
    async with api.client("technician") as http:
        done = await http.post(
            "/api/v1/devices/import",
            content=ID_EXCEL.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert done.status_code == 200, done.text
        assert done.json() == {"created": 3, "updated": 0, "unchanged": 0}
        wl = (await http.get("/api/v1/devices/wl-setu-01")).json()
        assert (wl["latitude"], wl["longitude"]) == (-6.35, 107.03)
        assert wl["install_date"] == "2026-11-01"
        assert wl["address_note"] == "+62 21 555 0101"
        rg = (await http.get("/api/v1/devices/rg-setu-01")).json()
        assert rg["address_note"] == "Jl. Raya Setu; RT 02\nRW 03"
        assert rg["install_date"] == "2026-11-15"
        aq = (await http.get("/api/v1/devices/aq-setu-01")).json()
        assert (aq["name"], aq["installed_by"]) == (HYPERLINK, "@budi")


async def test_problems_name_the_line_column_and_expected_form(api: Api) -> None:
    bad = (
        "device_id;name;device_type;kecamatan;latitude;longitude;install_date\r\n"
        "wl-1;A;water_level;setu;-6,35x;107,03;01/11/2026\r\n"
        'wl-2;"B\r\nbaris dua";water_level;Atlantis;-6,35;107,03;\r\n'
        "wl-3;C;water_level;setu;-6,35;107,03;31/02/2026\r\n"
        "wl-1;D;water_level;setu;;;\r\n"
    )
    async with api.client("technician") as http:
        answer = await http.post(
            "/api/v1/devices/import", content=bad, headers={"Content-Type": "text/csv"}
        )
        assert answer.status_code == 422
        problems = {
            (p["line"], p["row"], p["field"]): p["message"] for p in answer.json()["problems"]
        }
        assert set(problems) == {
            (2, 1, "latitude"),
            (3, 2, "kecamatan"),
            (5, 3, "install_date"),
            (6, 4, "device_id"),
        }
        assert "'-6.35x'" not in problems[(2, 1, "latitude")]
        assert "-6,35x" in problems[(2, 1, "latitude")]
        assert "expected a number of degrees" in problems[(2, 1, "latitude")]
        assert "-6,35" in problems[(2, 1, "latitude")].split("expected")[1]
        assert "expected a date as YYYY-MM-DD" in problems[(5, 3, "install_date")]
        assert problems[(6, 4, "device_id")] == "'wl-1' is also on line 2"
        assert (await http.get("/api/v1/devices")).json() == []
        header = await http.post(
            "/api/v1/devices/import",
            content="device_id;nama\r\nwl-1;A\r\n",
            headers={"Content-Type": "text/csv"},
        )
        assert header.status_code == 422
        [problem] = header.json()["problems"]
        assert (problem["line"], problem["field"]) == (1, "header")
        assert "unknown columns ['nama']" in problem["message"]


def _office_workbook() -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["device_id", "name", "device_type", "kecamatan", "latitude", "longitude"])
    sheet.append(["wl-setu-01", "Pintu air", "water_level", "Setu", -6.35, 107.03])
    sheet.append([])
    sheet.append(["wl-setu-02", "Pintu air 2", "water_level", "setu", -6.36, 107.04])
    sheet["G1"] = "install_date"
    sheet["G2"] = dt.datetime(2026, 11, 1)
    sheet["G2"].number_format = "dd/mm/yyyy"
    sheet["H1"] = "expected_interval_seconds"
    sheet["H4"] = 120
    sheet["I1"] = "address_note"
    sheet["I2"] = "+62 21 555 0101"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def test_xlsx_round_trip_keeps_types_and_text(api: Api) -> None:
    async with api.client("technician") as http:
        done = await http.post(
            "/api/v1/devices/import", content=_office_workbook(), headers={"Content-Type": XLSX}
        )
        assert done.status_code == 200, done.text
        assert done.json() == {"created": 2, "updated": 0, "unchanged": 0}
        wl = (await http.get("/api/v1/devices/wl-setu-01")).json()
        assert (wl["install_date"], wl["address_note"]) == ("2026-11-01", "+62 21 555 0101")
        assert (await http.get("/api/v1/devices/wl-setu-02")).json()[
            "expected_interval_seconds"
        ] == 120
        patch = await http.patch(
            "/api/v1/devices/wl-setu-02",
            json={"name": HYPERLINK, "installed_by": "'=already quoted"},
            headers={"If-Match": '"1"'},
        )
        assert patch.status_code == 200
        before = (await http.get("/api/v1/devices")).json()

        exported = await http.get("/api/v1/devices/export", params={"format": "xlsx"})
        assert exported.headers["content-type"] == XLSX
        sheet = load_workbook(io.BytesIO(exported.content)).worksheets[0]
        header = [c.value for c in sheet[1]]
        cells = {name: sheet.cell(row=2, column=i + 1) for i, name in enumerate(header)}
        assert (cells["latitude"].data_type, cells["latitude"].value) == ("n", -6.35)
        assert cells["install_date"].is_date
        assert cells["install_date"].value.date() == dt.date(2026, 11, 1)
        assert cells["expected_interval_seconds"].value == 60
        assert (cells["address_note"].data_type, cells["address_note"].value) == (
            "s",
            "'+62 21 555 0101",
        )
        name = sheet.cell(row=3, column=header.index("name") + 1)
        assert (name.data_type, name.value) == ("s", "'" + HYPERLINK)  # text, not a formula

        again = await http.post(
            "/api/v1/devices/import", content=exported.content, headers={"Content-Type": XLSX}
        )
        assert again.json() == {"created": 0, "updated": 0, "unchanged": 2}
        after = (await http.get("/api/v1/devices")).json()
    async with api.client("admin") as admin:
        audit = (
            await admin.get("/api/v1/audit", params={"entity": "device", "entity_id": "wl-setu-02"})
        ).json()
    # The workbook imported back changed nothing: no new version, no audit entry.
    assert [e["action"] for e in audit] == ["update", "create"]
    assert all(e["actor"].endswith(":technician for tests") for e in audit)
    _patched, created = audit
    assert created["before"] is None
    assert created["after"]["name"] == "Pintu air 2"
    assert after == before
    assert after[1]["name"] == HYPERLINK
    assert after[1]["installed_by"] == "'=already quoted"


async def test_csv_export_neutralises_formulas_and_imports_back(api: Api) -> None:
    async with api.client("technician") as http:
        created = await http.post(
            "/api/v1/devices",
            json={
                "device_id": "wl-setu-01",
                "name": HYPERLINK,
                "device_type": "water_level",
                "kecamatan": "setu",
                "latitude": -6.35,
                "longitude": 107.03,
                "address_note": "+62 21 555 0101",
                "installed_by": "-Budi-",
            },
        )
        assert created.status_code == 201
        text = (await http.get("/api/v1/devices/export")).text
        [row] = list(csv.DictReader(io.StringIO(text)))
        assert row["name"] == "'" + HYPERLINK
        assert row["address_note"] == "'+62 21 555 0101"
        assert row["installed_by"] == "'-Budi-"
        assert row["latitude"] == "-6.35"  # a number stays a number
        again = await http.post(
            "/api/v1/devices/import", content=text, headers={"Content-Type": "text/csv"}
        )
        assert again.json() == {"created": 0, "updated": 0, "unchanged": 1}
        device = (await http.get("/api/v1/devices/wl-setu-01")).json()
    assert (device["name"], device["address_note"], device["installed_by"]) == (
        HYPERLINK,
        "+62 21 555 0101",
        "-Budi-",
    )
    assert device["latitude"] == -6.35
    async with api.client("technician") as http:
        id_text = (await http.get("/api/v1/devices/export", params={"delimiter": ";"})).text
        assert id_text.splitlines()[0].startswith("device_id;name;device_type;kecamatan;")
        assert ";-6,35;107,03;'+62 21 555 0101;" in id_text
        again = await http.post(
            "/api/v1/devices/import", content=id_text, headers={"Content-Type": "text/csv"}
        )
        assert again.json() == {"created": 0, "updated": 0, "unchanged": 1}
        assert (await http.get("/api/v1/devices/wl-setu-01")).json()["name"] == HYPERLINK
        assert (await http.get("/api/v1/devices/export")).text == text


async def test_rows_past_the_limit_are_refused_whole(settings: Settings) -> None:
    from pantau import auth

    limited = settings.model_copy(
        update={"devices": settings.devices.model_copy(update={"import_max_rows": 3})}
    )
    rows = "".join(f"wl-{i},Pintu {i},water_level,setu\n" for i in range(4))
    async with running(limited) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            await wait_ready(http)
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            settings.database.url, autocommit=True
        ) as conn:
            token = (await auth.create_token(conn, "t", "technician", "test")).token
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            body = "device_id,name,device_type,kecamatan\n" + rows
            refused = await http.post(
                "/api/v1/devices/import", content=body, headers={"Content-Type": "text/csv"}
            )
            assert refused.status_code == 413
            assert "devices.import_max_rows = 3" in refused.json()["detail"]
            assert (await http.get("/api/v1/devices")).json() == []
            three = body.rsplit("wl-3", 1)[0]
            ok = await http.post(
                "/api/v1/devices/import", content=three, headers={"Content-Type": "text/csv"}
            )
            assert ok.json() == {"created": 3, "updated": 0, "unchanged": 0}
            broken = await http.post(
                "/api/v1/devices/import", content=b"PK\x03\x04nope", headers={"Content-Type": XLSX}
            )
            assert broken.status_code == 422
            assert "not an XLSX workbook" in broken.json()["problems"][0]["message"]


async def test_a_device_changed_or_registered_meanwhile_fails_the_import(migrated_db: str) -> None:
    import psycopg

    from devices import exchange, registry
    from devices.models import DeviceIn, DevicePatch

    async with (
        await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(migrated_db, autocommit=True) as other,
    ):
        await registry.create_device(
            conn,
            DeviceIn(device_id="wl-1", name="A", device_type="water_level", kecamatan="setu"),
            "t",
        )

        async def source(meanwhile: object) -> exchange.Source:
            new = {"device_type": "water_level", "kecamatan": "setu"}
            yield [
                Record(1, 2, {"device_id": "wl-1", "name": "B"}),
                Record(2, 3, {"device_id": "wl-2", "name": "C", **new}),
            ]
            await meanwhile  # type: ignore[misc]
            yield [Record(3, 4, {"device_id": "wl-3", "name": "D", **new})]

        edit = registry.update_device(other, "wl-1", DevicePatch(name="edited"), None, "t")
        with pytest.raises(registry.Conflict, match=r"changed while it was imported \(wl-1\)"):
            await exchange.import_devices(conn, source(edit), "t", 10)
        register = registry.create_device(
            other,
            DeviceIn(device_id="wl-2", name="X", device_type="water_level", kecamatan="setu"),
            "t",
        )
        with pytest.raises(registry.Exists, match="registered by someone else"):
            await exchange.import_devices(conn, source(register), "t", 10)
        device = await registry.get_device(conn, "wl-1")
        assert (device.name, device.version) == ("edited", 2)
        assert (await registry.get_device(conn, "wl-2")).name == "X"
        assert [d.device_id for d in await registry.list_devices(conn)] == ["wl-1", "wl-2"]

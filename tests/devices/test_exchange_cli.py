"""`pantau devices import/export` with the files an office sends: id-ID Excel CSV, XLSX, and
problems one per line where the file has them."""

from __future__ import annotations

from pathlib import Path

from openpyxl import load_workbook

from tests.devices.test_exchange import HYPERLINK, ID_EXCEL
from tests.fixtures.servers import run_pantau


def test_id_excel_csv_and_xlsx_round_trip(migrated_db: str, tmp_path: Path) -> None:
    office = tmp_path / "perangkat.csv"
    office.write_bytes(ID_EXCEL.encode())
    done = run_pantau("devices", "import", str(office), db=migrated_db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 created, 0 updated" in done.stdout
    before = run_pantau("devices", "export", db=migrated_db, cwd=tmp_path).stdout
    assert f"'{HYPERLINK}" in before.replace('""', '"')
    assert ",'+62 21 555 0101," in before

    book = tmp_path / "perangkat.xlsx"
    exported = run_pantau(
        "devices", "export", "--format", "xlsx", "-o", str(book), db=migrated_db, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    sheet = load_workbook(book).worksheets[0]
    assert [c.value for c in sheet[1]][:6] == [
        "device_id",
        "name",
        "device_type",
        "kecamatan",
        "pillar",
        "latitude",
    ]
    assert sheet["F2"].data_type == "n"  # latitude, a number
    again = run_pantau("devices", "import", str(book), db=migrated_db, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated, 3 unchanged" in again.stdout
    assert run_pantau("devices", "export", db=migrated_db, cwd=tmp_path).stdout == before
    id_csv = tmp_path / "perangkat-id.csv"
    exported = run_pantau(
        "devices", "export", "--delimiter", ";", "-o", str(id_csv), db=migrated_db, cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    assert ";-6,35;107,03;" in id_csv.read_text()
    assert (
        "0 created, 0 updated, 3 unchanged"
        in run_pantau("devices", "import", str(id_csv), db=migrated_db, cwd=tmp_path).stdout
    )
    assert run_pantau("devices", "export", db=migrated_db, cwd=tmp_path).stdout == before
    named = tmp_path / "no-suffix"
    named.write_bytes(book.read_bytes())
    assert (
        "0 created, 0 updated, 3 unchanged"
        in run_pantau(
            "devices", "import", "--format", "xlsx", str(named), db=migrated_db, cwd=tmp_path
        ).stdout
    )


def test_problems_one_per_line_with_the_file_line(migrated_db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        b"\xef\xbb\xbfdevice_id;name;device_type;kecamatan;latitude;longitude\r\n"
        b"wl-1;A;water_level;setu;-6,35;107,03\r\n"
        b'wl-2;"B\r\nbaris dua";lava_lamp;setu;-6,35;107,03\r\n'
        b"wl-3;C;water_level;Atlantis;-6,35;utara\r\n"
    )
    result = run_pantau("devices", "import", str(bad), db=migrated_db, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: {bad}: nothing imported, 3 problem(s):"
    assert lines[1].startswith(f"{bad}:3: row 2: device_type: 'lava_lamp' is not a device type")
    assert lines[2].startswith(f"{bad}:5: row 3: longitude: 'utara': ")
    assert "expected a number of degrees between -180 and 180" in lines[2]
    assert lines[3].startswith(f"{bad}:5: row 3: kecamatan: 'Atlantis' is not a kecamatan")
    listed = run_pantau("devices", "list", db=migrated_db, cwd=tmp_path).stdout
    assert listed.rstrip().endswith("0 devices")


def test_row_limit_from_the_settings(migrated_db: str, tmp_path: Path) -> None:
    (tmp_path / "pantau.toml").write_text("[devices]\nimport_max_rows = 2\n")
    big = tmp_path / "big.csv"
    big.write_text(
        "device_id,name,device_type,kecamatan\n"
        + "".join(f"wl-{i},P{i},water_level,setu\n" for i in range(3))
    )
    result = run_pantau("devices", "import", str(big), db=migrated_db, cwd=tmp_path)
    assert result.returncode == 2
    assert "more than 2 device rows" in result.stderr
    assert "devices.import_max_rows = 2" in result.stderr
    wrong = run_pantau(
        "devices", "import", str(tmp_path / "pantau.toml"), db=migrated_db, cwd=tmp_path
    )
    assert wrong.returncode == 2
    assert "expected a .csv, .xlsx or .geojson file" in wrong.stderr

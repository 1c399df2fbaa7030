"""Device files as offices write them: CSV (`,` or `;` separated, as Excel writes it in any
locale), XLSX and GeoJSON; read as a stream of records, written with formula-shaped text
neutralised.

A reader yields `Record`s in batches and never holds more than a batch and one unfinished
line, so memory does not grow with the file (GeoJSON, a single JSON document, is the
exception: it is parsed whole). Values stay as the file has them; `devices.exchange` turns them
into devices."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from devices.models import FIELDS, Device, Problem

# Columns an import understands: the export's, and the flag for positions outside the regency.
COLUMNS = (*FIELDS, "allow_outside")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BATCH_ROWS = 2_000
# A line (or a quoted field spanning lines) longer than this is not a device row: refused
# rather than buffered, so a file without line breaks cannot fill the memory.
MAX_RECORD_CHARS = 256 * 1024
# XLSX keeps every distinct text of a sheet in one table that openpyxl reads whole.
MAX_XLSX_SHARED_STRINGS_BYTES = 128 * 1024 * 1024

# OWASP's CSV injection advice: a cell starting with one of these is a formula to Excel,
# LibreOffice and Google Sheets. Such text is exported behind an apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class FileInvalid(Exception):
    """The file as a whole cannot be read (header, encoding, structure)."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(problem.message)


@dataclass
class Record:
    """One data row of a file."""

    row: int  # 1 = the first data row (or feature)
    line: int | None  # the file's own line (CSV) or sheet row (XLSX), the header being 1
    values: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    decimal_comma: bool = False  # a `;`-separated file: numbers may be written `-6,35`


def _needs_quote(text: str) -> bool:
    return text[:1] in _FORMULA_START or (text[:1] == "'" and _needs_quote(text[1:]))


def neutralise(text: str) -> str:
    """Text a spreadsheet will show as text: `=HYPERLINK(...)` becomes `'=HYPERLINK(...)`.
    An apostrophe before such text is doubled, so that `restore` is its exact inverse."""
    return "'" + text if _needs_quote(text) else text


def restore(text: str) -> str:
    """The text `neutralise` was given."""
    return text[1:] if text[:1] == "'" and _needs_quote(text[1:]) else text


def cell_text(text: str) -> str:
    """A cell's text as stored: `restore`d, with line breaks as `\n` (XML, so XLSX, reads a
    CRLF inside a cell as LF: stored as CRLF, an exported workbook would not import back
    unchanged)."""
    return restore(text).replace("\r\n", "\n")


def _checked_header(names: list[str], line: int, expected: str) -> list[str]:
    """The header's column names, or FileInvalid naming unknown or repeated ones; `expected`
    follows the unknown names, `{}` standing for the known columns."""
    unknown = [n for n in names if n and n not in COLUMNS]
    if unknown:
        message = f"unknown columns {unknown}" + expected.format(", ".join(COLUMNS))
        raise FileInvalid(Problem(line=line, field="header", message=message))
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        message = f"columns {repeated} appear more than once; expected each once"
        raise FileInvalid(Problem(line=line, field="header", message=message))
    return names


# ---------------------------------------------------------------------------------------------
# CSV


class CsvReader:
    """A push parser: `feed` it bytes as they arrive, take the records it completes.

    The separator is found from the header (`;` where Excel's locale uses a decimal comma, as
    id-ID does, else `,`; an Excel `sep=;` first line is honoured). A UTF-8 BOM and CRLF line
    ends are accepted. A record is complete when its quotes balance (RFC 4180 doubles quotes
    inside quoted fields), so a quoted field may span lines."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._partial = ""  # text after the last line break
        self._lines: list[str] = []  # the physical lines of the record being read
        self._quoted = False  # the record being read ends inside a quoted field
        self._line = 0  # physical lines read
        self._row = 0
        self._delimiter: str | None = None
        self._header: list[str] | None = None

    def feed(self, data: bytes, final: bool = False) -> list[Record]:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            good = data[: max(exc.start, 0)].decode("utf-8", "replace")
            line = self._line + (self._partial + good).count("\n") + 1
            raise FileInvalid(
                Problem(
                    line=line,
                    field="file",
                    message=f"line {line} is not UTF-8 text (byte {exc.object[exc.start]:#04x});"
                    " expected UTF-8: in Excel, save as 'CSV UTF-8 (Comma delimited) (*.csv)'",
                )
            ) from None
        text = self._partial + text
        pieces = text.split("\n")
        self._partial = pieces.pop()
        if len(self._partial) > MAX_RECORD_CHARS:
            self._too_long()
        records: list[Record] = []
        for piece in pieces:
            self._take_line(piece + "\n", records)
        if final:
            if self._partial:
                self._take_line(self._partial, records)
                self._partial = ""
            if self._lines:
                raise FileInvalid(
                    Problem(
                        line=self._line - len(self._lines) + 1,
                        field="file",
                        message="a quoted field opened on this line is never closed; expected "
                        'a closing " (a quote inside a field is written "")',
                    )
                )
            if self._header is None:
                raise FileInvalid(Problem(field="file", message="the CSV is empty"))
        return records

    def _too_long(self) -> None:
        start = self._line - len(self._lines) + 1
        raise FileInvalid(
            Problem(
                line=start,
                field="file",
                message=f"the row starting on line {start} is longer than "
                f"{MAX_RECORD_CHARS} characters; expected one device per line",
            )
        )

    def _take_line(self, line: str, records: list[Record]) -> None:
        self._line += 1
        self._lines.append(line)
        if self._quoted or '"' in line:
            self._quoted = _in_quotes(line, self._delimiter or ",", self._quoted)
            if self._quoted:
                if sum(map(len, self._lines)) > MAX_RECORD_CHARS:
                    self._too_long()
                return
        lines, self._lines = self._lines, []
        self._take_record(lines, self._line - len(lines) + 1, records)

    def _take_record(self, lines: list[str], start: int, records: list[Record]) -> None:
        if self._header is None:
            self._read_header(lines, start)
            return
        assert self._delimiter is not None  # noqa: S101 - set with the header
        reader = csv.reader(lines, delimiter=self._delimiter)
        before = 0
        for fields in reader:
            self._fields(fields, start + before, records)
            before = reader.line_num

    def _fields(self, fields: list[str], start: int, records: list[Record]) -> None:
        assert self._header is not None  # noqa: S101
        if not any(f.strip() for f in fields):
            return  # a blank line, or Excel's `;;;;` for an empty row
        self._row += 1
        record = Record(self._row, start, {}, decimal_comma=self._delimiter == ";")
        for index, value in enumerate(fields):
            name = self._header[index] if index < len(self._header) else ""
            value = value.strip()
            if not value:
                continue
            if not name:
                record.problems.append(
                    Problem(
                        row=self._row,
                        line=start,
                        field=f"column {index + 1}",
                        message=f"{value!r} is in a column without a header; expected "
                        f"{len([h for h in self._header if h])} columns, as the header names",
                    )
                )
                continue
            record.values[name] = cell_text(value)
        records.append(record)

    def _read_header(self, lines: list[str], start: int) -> None:
        text = "".join(lines).strip()
        if not text:
            return  # blank lines before the header
        if self._delimiter is None and text.lower().startswith("sep=") and len(text) == 5:
            self._delimiter = text[4]  # Excel's hint line, e.g. `sep=;`
            return
        if self._delimiter is None:
            self._delimiter = _delimiter(lines)
        names = [n.strip().lower() for n in next(csv.reader(lines, delimiter=self._delimiter))]
        self._header = _checked_header(
            names, start, "; expected some of {}, separated by ',' or ';'"
        )


def _in_quotes(line: str, delimiter: str, quoted: bool) -> bool:
    """Whether `line` ends inside a quoted field, by the csv module's rules: a quote opens a
    field only at its start, `""` inside is a quote, a quote elsewhere is text."""
    i, n, start = 0, len(line), not quoted
    while i < n:
        if quoted:
            j = line.find('"', i)
            if j < 0:
                return True
            if j + 1 < n and line[j + 1] == '"':
                i = j + 2
                continue
            quoted, start, i = False, False, j + 1
        elif start and line[i] == '"':
            quoted, start, i = True, False, i + 1
        else:
            j = line.find(delimiter, i)
            if j < 0:
                return False
            start, i = True, j + 1
    return quoted


def _delimiter(lines: list[str]) -> str:
    """`;` or `,`: the one whose header cells are all known columns, else the one that splits
    the header into more cells."""
    best, best_count = ",", 0
    for candidate in (",", ";"):
        cells = [c.strip().lower() for c in next(csv.reader(lines, delimiter=candidate))]
        named = [c for c in cells if c]
        if named and all(c in COLUMNS for c in named):
            return candidate
        if len(cells) > best_count:
            best, best_count = candidate, len(cells)
    return best


def to_csv(devices: Sequence[Device], delimiter: str = ",") -> str:
    """`,`-separated, or `;`-separated with decimal commas: what Excel opens as columns where
    the decimal separator is a comma (id-ID). Either imports back unchanged."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(FIELDS)
    for device in devices:
        cells = _cells(device)  # None as "", dates as YYYY-MM-DD
        if delimiter == ";":
            cells = [repr(c).replace(".", ",") if isinstance(c, float) else c for c in cells]
        writer.writerow(cells)
    return out.getvalue()


def _cells(device: Device) -> list[Any]:
    """The export's cells of a device, text neutralised, numbers and dates as they are."""
    return [
        neutralise(value) if isinstance(value, str) else value
        for value in (getattr(device, name) for name in FIELDS)
    ]


# ---------------------------------------------------------------------------------------------
# XLSX


class XlsxReader:
    """The first sheet of a workbook, row by row (openpyxl's read-only mode streams the sheet).
    Blocking: call `take` from a worker thread."""

    def __init__(self, file: IO[bytes]) -> None:
        from openpyxl import load_workbook

        try:
            with zipfile.ZipFile(file) as archive:
                strings = sum(
                    i.file_size
                    for i in archive.infolist()
                    if i.filename.endswith("sharedStrings.xml")
                )
            file.seek(0)
            if strings > MAX_XLSX_SHARED_STRINGS_BYTES:
                raise FileInvalid(
                    Problem(
                        field="file",
                        message=f"the workbook's text table is {strings} bytes; expected at "
                        f"most {MAX_XLSX_SHARED_STRINGS_BYTES}",
                    )
                )
            self._book = load_workbook(file, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise FileInvalid(
                Problem(
                    field="file",
                    message=f"not an XLSX workbook ({exc}); expected a file saved by Excel or "
                    "LibreOffice as .xlsx",
                )
            ) from None
        if not self._book.worksheets:
            raise FileInvalid(Problem(field="file", message="the workbook has no sheet"))
        self._rows = enumerate(self._book.worksheets[0].iter_rows(values_only=True), start=1)
        self._header: list[str] | None = None
        self._row = 0

    def close(self) -> None:
        self._book.close()

    def take(self, count: int) -> list[Record]:
        """Up to `count` records; an empty list at the end."""
        records: list[Record] = []
        while len(records) < count:
            try:
                line, cells = next(self._rows)
            except StopIteration:
                if self._header is None:
                    raise FileInvalid(Problem(field="file", message="the sheet is empty")) from None
                break
            except (ValueError, TypeError, KeyError) as exc:
                raise FileInvalid(
                    Problem(field="file", message=f"the sheet cannot be read: {exc}")
                ) from None
            if self._header is None:
                if any(c not in (None, "") for c in cells):
                    self._read_header(cells, line)
                continue
            record = self._record(cells, line)
            if record is not None:
                records.append(record)
        return records

    def _read_header(self, cells: Sequence[Any], line: int) -> None:
        names = ["" if c is None else str(c).strip().lower() for c in cells]
        self._header = _checked_header(names, line, " in the first row; expected some of {}")

    def _record(self, cells: Sequence[Any], line: int) -> Record | None:
        assert self._header is not None  # noqa: S101
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for index, value in enumerate(cells):
            if isinstance(value, str):
                value = value.strip()
            if value is None or value == "":
                continue
            name = self._header[index] if index < len(self._header) else ""
            if not name:
                problems.append(
                    Problem(
                        line=line,
                        field=f"column {index + 1}",
                        message=f"{value!r} is in a column without a header; expected values "
                        "only under the first row's column names",
                    )
                )
                continue
            values[name] = cell_text(value) if isinstance(value, str) else value
        if not values and not problems:
            return None
        self._row += 1
        for p in problems:
            p.row = self._row
        return Record(self._row, line, values, problems)


def to_xlsx(devices: Sequence[Device]) -> bytes:
    """A workbook Excel opens with typed columns: numbers as numbers, dates as dates."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    sheet = book.create_sheet("devices")
    sheet.freeze_panes = "A2"
    widths = {"device_id": 20, "name": 32, "address_note": 32, "topic": 36}
    for index, name in enumerate(FIELDS):
        letter = chr(ord("A") + index)
        sheet.column_dimensions[letter].width = widths.get(name, 14)
    bold = Font(bold=True)
    header = []
    for name in FIELDS:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    for device in devices:
        row: list[Any] = []
        for value in _cells(device):
            if isinstance(value, dt.date):
                cell = WriteOnlyCell(sheet, value=dt.datetime.combine(value, dt.time()))
                cell.number_format = "yyyy-mm-dd"
                row.append(cell)
            elif isinstance(value, str):
                # openpyxl makes any text starting with "=" a formula: say it is text.
                cell = WriteOnlyCell(sheet, value=value)
                cell.data_type = "s"
                row.append(cell)
            else:
                row.append(value)
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# GeoJSON


def geojson_records(data: bytes) -> Iterator[Record]:
    """The features of a FeatureCollection; `row` is the feature's number (1 = the first)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FileInvalid(Problem(field="file", message=f"not JSON: {exc}")) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise FileInvalid(Problem(field="type", message="expected a GeoJSON FeatureCollection"))
    features = doc.get("features") or []
    if not isinstance(features, list):
        raise FileInvalid(Problem(field="features", message="expected a list of features"))
    for number, feature in enumerate(features, start=1):
        feature = feature if isinstance(feature, dict) else {}
        props = feature.get("properties") or {}
        props = dict(props) if isinstance(props, dict) else {}
        record = Record(number, None, props)
        geometry = feature.get("geometry")
        if geometry:
            coords = (
                geometry.get("coordinates")
                if isinstance(geometry, dict) and geometry.get("type") == "Point"
                else None
            )
            if isinstance(coords, list) and len(coords) >= 2:
                props["longitude"], props["latitude"] = coords[0], coords[1]
            else:
                record.problems.append(
                    Problem(
                        row=number,
                        field="geometry",
                        message="expected a Point with [longitude, latitude]",
                    )
                )
        yield record


def to_geojson(devices: Sequence[Device]) -> bytes:
    features = []
    for device in devices:
        props = device.model_dump(mode="json", include=set(FIELDS) - {"latitude", "longitude"})
        geometry = (
            {"type": "Point", "coordinates": [device.longitude, device.latitude]}
            if device.latitude is not None and device.longitude is not None
            else None
        )
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return orjson.dumps({"type": "FeatureCollection", "features": features})

"""Grafana's PostgreSQL macros and template variables, expanded as Grafana expands them, so a
panel's SQL can be run here exactly as Grafana would send it to PostgreSQL.

Grafana works in two steps, and so does `expand`: the browser first replaces template variables
(`$var`, `${var}`, `${var:format}`, `[[var]]`, and the built-ins `$__interval`,
`$__interval_ms`, `$__from`, `$__to`, `$__range*`); the server then replaces
`$__unixEpochFrom()`/`To()` and the macros `$__name(args)` (`$__timeFilter(col)`,
`$__timeGroup(col, '5m'[, fill])`, ...). Learned from Grafana's
pkg/tsdb/grafana-postgresql-datasource/macros.go, sqleng's Interpolate, the plugin SDK's gtime and
the SQL data sources' interpolateVariable. Two deliberate differences: an unknown `:format` is an
error here (Grafana falls back to `glob`), and SQL comments are left alone (Grafana 12.4 and later
strip them before expanding; Pantau's panels carry none, a test holds them to that).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeAlias

__all__ = [
    "MacroError",
    "VariableValue",
    "auto_interval",
    "expand",
    "format_interval",
    "parse_interval",
    "resolve_time",
]

# A variable's current value: a string (a single-value variable), a number, or a sequence of
# strings (a multi-value variable's selection, or "All": every option's value).
VariableValue: TypeAlias = str | int | float | Sequence[str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The browser's variable syntax (templateSrv's regex): $var, [[var]], [[var:fmt]], ${var},
# ${var.path}, ${var:fmt}; \w as JavaScript has it.
_VARIABLE = re.compile(
    r"\$([A-Za-z0-9_]+)"
    r"|\[\[([A-Za-z0-9_]+?)(?::([A-Za-z0-9_]+))?\]\]"
    r"|\$\{([A-Za-z0-9_]+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
# The server's macro syntax: $name(args), args up to the first ")".
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_DATE_UNIT = re.compile(r"^(\d+)([dwMy])$")
_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),  # Go accepts both micro signs
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown, missing arguments, a bad interval), or a variable
    format `expand` does not know."""


def expand(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    interval: timedelta,
    variables: Mapping[str, VariableValue] | None = None,
    timescaledb: bool = False,
) -> str:
    """`sql` as Grafana's PostgreSQL data source would run it for the time range [start, end],
    the panel's interval (`$__interval`) and the dashboard variables' current values.
    `timescaledb` is the data source's TimescaleDB switch ($__timeGroup becomes time_bucket)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise MacroError("start and end must be timezone-aware")
    sql = _replace_variables(sql, start, end, interval, variables or {})
    # sqleng's global substitutions (the browser has replaced $__interval already)
    sql = sql.replace("$__interval_ms", str(interval // timedelta(milliseconds=1)))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(_unix(start)))
    sql = sql.replace("$__unixEpochTo()", str(_unix(end)))
    return _replace_macros(sql, start, end, timescaledb)


# -- template variables (the browser's step) ---------------------------------------------------


def _replace_variables(
    sql: str,
    start: datetime,
    end: datetime,
    interval: timedelta,
    variables: Mapping[str, VariableValue],
) -> str:
    span = end - start
    builtins: dict[str, VariableValue] = {
        "__interval": format_interval(interval),
        "__interval_ms": interval // timedelta(milliseconds=1),
        "__from": _unix_ms(start),
        "__to": _unix_ms(end),
        "__range": f"{round(span.total_seconds())}s",
        "__range_s": round(span.total_seconds()),
        "__range_ms": span // timedelta(milliseconds=1),
    }

    def one(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[4]
        fmt = m[3] or m[6]
        if m[5]:  # ${var.field}: a field path, for object values Pantau's variables never hold
            return m[0]
        if name in variables:
            value = variables[name]
        elif name in builtins:
            value = builtins[name]
        else:
            return m[0]  # not a variable: left for the server ($__timeFilter ...) or verbatim
        if fmt is None:
            return _interpolate_sql(value)
        if fmt.startswith("date") and name in ("__from", "__to"):
            return _format_date(value, fmt)
        return _format(value, fmt, name)

    return _VARIABLE.sub(one, sql)


def _interpolate_sql(value: VariableValue) -> str:
    """The SQL data sources' own formatting when no `:format` is given: a single string with
    its quotes doubled (not quoted: the panel's SQL quotes it), a number as is, a multi-value
    selection as a list of quoted literals ('a','b')."""
    if isinstance(value, str):
        return value.replace("'", "''")
    if isinstance(value, int | float):
        return _js_number(value)
    return ",".join(_quote_literal(v) for v in value)


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _values(value: VariableValue) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float):
        return [_js_number(value)]
    return list(value)


def _format(value: VariableValue, fmt: str, name: str) -> str:
    values = _values(value)
    multi = not isinstance(value, str | int | float)
    formatters: dict[str, Callable[[], str]] = {
        "raw": lambda: ",".join(values),
        "csv": lambda: ",".join(values),
        "text": lambda: " + ".join(values),
        "sqlstring": lambda: ",".join(_quote_literal(v) for v in values),
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "pipe": lambda: "|".join(values),
        "json": lambda: json.dumps(values if multi else values[0], separators=(",", ":")),
        "glob": lambda: "{" + ",".join(values) + "}" if len(values) > 1 else ",".join(values),
        "regex": lambda: (
            "(" + "|".join(map(_regex_escape, values)) + ")"
            if len(values) > 1
            else _regex_escape(values[0] if values else "")
        ),
    }
    if fmt not in formatters:
        raise MacroError(
            f"${{{name}:{fmt}}}: unknown variable format {fmt!r}; expected one of "
            + ", ".join(sorted(formatters))
        )
    return formatters[fmt]()


def _regex_escape(value: str) -> str:
    return re.sub(r"[\\^$*+?.()|[\]{}/]", lambda m: "\\" + m[0], value)


def _format_date(value: VariableValue, fmt: str) -> str:
    """${__from:date}, ${__from:date:iso}, ${__from:date:seconds} (no moment.js patterns)."""
    ms = int(value) if isinstance(value, int | float) else int(str(value))
    if fmt in ("date", "date:iso"):
        t = _EPOCH + timedelta(milliseconds=ms)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if fmt == "date:seconds":
        return str(ms // 1000)
    raise MacroError(f"${{__from/__to:{fmt}}}: expected date, date:iso or date:seconds")


def _js_number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- macros (the server's step) ----------------------------------------------------------------


def _replace_macros(sql: str, start: datetime, end: datetime, timescaledb: bool) -> str:
    original = sql

    def one(m: re.Match[str]) -> str:
        name = m[1]
        # Before Grafana 5.3, $__timeGroup(...) followed by a comma meant the aliased form;
        # Grafana still reads it so, looking after the first occurrence of the same text.
        if name == "__timeGroup":
            index = original.find(m[0])
            if index >= 0 and original[index + len(m[0]) : index + len(m[0]) + 1] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m[2].split(",")]
        return _macro(name, args, start, end, timescaledb)

    return _MACRO.sub(one, sql)


def _macro(name: str, args: list[str], start: datetime, end: datetime, timescaledb: bool) -> str:
    column = args[0]
    if name == "__time":
        return f'{column} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {column}) as "time"'
    if name == "__timeFilter":
        return f"{column} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
    if name == "__timeFrom":
        return f"'{_rfc3339(start)}'"
    if name == "__timeTo":
        return f"'{_rfc3339(end)}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        seconds = _group_seconds(name, args)
        if name == "__unixEpochGroup":
            return f"floor(({column})/{_go_float(seconds)})*{_go_float(seconds)}"
        if timescaledb:
            return f"time_bucket('{seconds:.3f}s',{column})"
        return f"floor(extract(epoch from {column})/{_go_float(seconds)})*{_go_float(seconds)}"
    if name in ("__timeGroupAlias", "__unixEpochGroupAlias"):
        return _macro(name.removesuffix("Alias"), args, start, end, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        return f"{column} >= {_unix(start)} AND {column} <= {_unix(end)}"
    if name == "__unixEpochNanoFilter":
        return f"{column} >= {_unix_nano(start)} AND {column} <= {_unix_nano(end)}"
    if name == "__unixEpochNanoFrom":
        return str(_unix_nano(start))
    if name == "__unixEpochNanoTo":
        return str(_unix_nano(end))
    raise MacroError(f"unknown macro {name!r}")


def _group_seconds(name: str, args: list[str]) -> float:
    if len(args) < 2:
        raise MacroError(f"macro {name} needs time column and interval and optional fill value")
    try:
        seconds = parse_interval(args[1].strip("'")).total_seconds()
    except MacroError:
        raise MacroError(f"error parsing interval {args[1]}") from None
    if len(args) == 3:  # the fill value: Grafana fills gaps after the query, not in SQL
        fill = args[2]
        if fill.lower() not in ("null", "previous"):
            try:
                float(fill)
            except ValueError:
                raise MacroError(f"error parsing fill value {fill}") from None
    return seconds


def parse_interval(text: str, *, now: datetime | None = None) -> timedelta:
    """An interval as Grafana's gtime.ParseInterval reads it: `5m`, `1h30m`, `500ms` (Go's
    durations), or a whole number of days, weeks, months or years (`7d`, `1M`), the last two
    measured from `now` (UTC) as Grafana measures them."""
    m = _DATE_UNIT.match(text)
    if m:
        count, unit = int(m[1]), m[2]
        if unit == "d":
            return timedelta(days=count)
        if unit == "w":
            return timedelta(weeks=count)
        base = now or datetime.now(UTC)
        months = count if unit == "M" else 12 * count
        return _add_months(base, months) - base
    return _parse_go_duration(text)


def _add_months(t: datetime, months: int) -> datetime:
    # Go's AddDate normalises an overflowing day (Jan 31 + 1 month = Mar 3 or 2).
    month0 = t.month - 1 + months
    year, month = t.year + month0 // 12, month0 % 12 + 1
    first = t.replace(year=year, month=month, day=1)
    return first + timedelta(days=t.day - 1)


def _parse_go_duration(text: str) -> timedelta:
    body = text
    sign = 1
    if body[:1] in "+-" and body:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        raise MacroError(f"invalid duration {text!r}")
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        m = _GO_DURATION.match(body, pos)
        if not m or m[1] in ("", "."):
            raise MacroError(f"invalid duration {text!r}")
        total += Decimal(m[1]) * _GO_UNITS[m[2]]
        pos = m.end()
    return sign * timedelta(microseconds=int(total * 1_000_000))


_RELATIVE = re.compile(r"^now(?:-(\d+)([smhdwMy]))?$")
# Grafana's rangeutil.roundInterval: (below this many ms, round to this many ms)
_ROUND_MS = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
    (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
    (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
    (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
    (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
    (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
)  # fmt: skip


def resolve_time(text: str, now: datetime) -> datetime:
    """A dashboard's relative time (`now`, `now-6h`, `now-30d`) at `now`."""
    m = _RELATIVE.match(text)
    if not m:
        raise MacroError(f"time {text!r}: expected now or now-<number><s|m|h|d|w|M|y>")
    if m[1] is None:
        return now
    if m[2] in "smh":
        return now - _parse_go_duration(m[1] + m[2])
    return now - parse_interval(m[1] + m[2], now=now)


def auto_interval(
    start: datetime,
    end: datetime,
    *,
    max_data_points: int = 1000,
    min_interval: timedelta = timedelta(minutes=1),
) -> timedelta:
    """`$__interval` as Grafana computes it: the range over the panel's data points, rounded to
    a round interval, not below the data source's minimum (the SQL sources' default is 1m)."""
    raw_ms = (end - start) / timedelta(milliseconds=1) / max(1, max_data_points)
    rounded = next((to for below, to in _ROUND_MS if raw_ms < below), 31536000000)
    return max(timedelta(milliseconds=rounded), min_interval)


def format_interval(interval: timedelta) -> str:
    """An interval as Grafana writes `$__interval`: the largest whole unit, 1y ... 1ms."""
    ms = interval // timedelta(milliseconds=1)
    for unit, size in (
        ("y", 365 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def _rfc3339(t: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: fractional seconds without trailing zeros."""
    t = t.astimezone(UTC)
    fraction = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def _unix(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(seconds=1)


def _unix_ms(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(milliseconds=1)


def _unix_nano(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1) * 1000


def _go_float(value: float) -> str:
    """A float64 as Go's %v prints it: the shortest digits that round-trip, in exponent form
    when the exponent is below -4 or at least 6 (%g's rule at the shortest precision): 300,
    0.5, 86400, 1.0368e+06."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, exponent = _shortest_digits(abs(value))
    if exponent < -4 or exponent >= 6:
        return sign + _go_exponent(digits, exponent)
    if exponent < 0:
        return sign + "0." + "0" * (-exponent - 1) + digits
    if len(digits) <= exponent + 1:
        return sign + digits + "0" * (exponent + 1 - len(digits))
    return sign + digits[: exponent + 1] + "." + digits[exponent + 1 :]


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-tripping decimal digits of `value` (Python's repr is shortest too)
    and the exponent of the first digit."""
    _, digit_tuple, exp = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    return digits, int(exp) + len(digits) - 1


def _go_exponent(digits: str, exponent: int) -> str:
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"

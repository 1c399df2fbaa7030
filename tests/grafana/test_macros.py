"""grafana.macros.expand against Grafana's own expectations: the PostgreSQL macro engine's tests
(pkg/tsdb/grafana-postgresql-datasource/macros_test.go), the SQL data sources' variable
interpolation tests (packages/grafana-sql variable-interpolation.test.ts) and the documented
variable formats."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grafana.macros import (
    MacroError,
    auto_interval,
    expand,
    format_interval,
    parse_interval,
    resolve_time,
)

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
TO = FROM + timedelta(minutes=5)
MINUTE = timedelta(minutes=1)


def x(sql: str, **kw: object) -> str:
    args: dict[str, object] = {"start": FROM, "end": TO, "interval": MINUTE} | kw
    return expand(sql, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select $__time(time_column)", 'select time_column AS "time"'),
        ("select min($__time(time_column))", 'select min(time_column AS "time")'),
        (
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
        ),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        (
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
        ),
        (
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
        ),
        (
            "SELECT $__timeGroup(time_column,'5m')",
            "SELECT floor(extract(epoch from time_column)/300)*300",
        ),
        (
            "SELECT $__timeGroupAlias(time_column,'5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
        ),
        ("$__timeGroup(time_column , '5m')", "floor(extract(epoch from time_column)/300)*300"),
        ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
        (
            "select $__unixEpochNanoFilter(time)",
            "select time >= 1523556000000000000 AND time <= 1523556300000000000",
        ),
        ("select $__unixEpochNanoFrom()", "select 1523556000000000000"),
        ("select $__unixEpochNanoTo()", "select 1523556300000000000"),
        (
            "SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')",
            "SELECT floor((time_column+time_adjustment)/300)*300",
        ),
        (
            "SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')",
            'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"',
        ),
        ("select $__timeEpoch(t)", 'select extract(epoch from t) as "time"'),
        ("select $__unixEpochFrom(), $__unixEpochTo()", "select 1523556000, 1523556300"),
        # the fill value is Grafana's business after the query: it only has to parse
        ("$__timeGroupAlias(t, '1h', NULL)", 'floor(extract(epoch from t)/3600)*3600 AS "time"'),
        ("$__timeGroup(t, 1d, previous)", "floor(extract(epoch from t)/86400)*86400"),
        # seconds as Go prints a float64 (%v): exponent form from 1e6 on
        ("$__timeGroup(t, '12d')", "floor(extract(epoch from t)/1.0368e+06)*1.0368e+06"),
        ("$__timeGroup(t, '500ms')", "floor(extract(epoch from t)/0.5)*0.5"),
    ],
)
def test_macros_as_grafana_expands_them(sql: str, expected: str) -> None:
    assert x(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeGroup(time_column,'5m')", "time_bucket('300.000s',time_column)"),
        ("$__timeGroup(time_column , '5m')", "time_bucket('300.000s',time_column)"),
        ("$__timeGroup(time_column , '12d')", "time_bucket('1036800.000s',time_column)"),
        ("$__timeGroup(time_column , '20ms')", "time_bucket('0.020s',time_column)"),
    ],
)
def test_time_group_with_timescaledb(sql: str, expected: str) -> None:
    assert x(f"GROUP BY {sql}", timescaledb=True) == f"GROUP BY {expected}"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (
            datetime(1960, 2, 1, 7, tzinfo=UTC),
            datetime(1965, 2, 3, 8, tzinfo=UTC),
            "WHERE c BETWEEN '1960-02-01T07:00:00Z' AND '1965-02-03T08:00:00Z'",
        ),
        (
            datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC),
            datetime(1980, 2, 3, 8, 0, 0, 500_000, tzinfo=UTC),
            "WHERE c BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'",
        ),
        (  # a WIB time is sent as UTC
            datetime(2026, 1, 2, 7, 0, tzinfo=UTC) + timedelta(hours=0),
            datetime(2026, 1, 2, 14, 0, tzinfo=UTC).astimezone(),
            "WHERE c BETWEEN '2026-01-02T07:00:00Z' AND '2026-01-02T14:00:00Z'",
        ),
    ],
)
def test_time_filter_before_1970_fractions_and_time_zones(
    start: datetime, end: datetime, expected: str
) -> None:
    assert x("WHERE $__timeFilter(c)", start=start, end=end) == expected


def test_unix_epoch_before_1970() -> None:
    start, end = datetime(1960, 2, 1, 7, tzinfo=UTC), datetime(1965, 2, 3, 8, tzinfo=UTC)
    low, high = calendar.timegm(start.utctimetuple()), calendar.timegm(end.utctimetuple())
    assert low < 0
    assert x("$__unixEpochFilter(t)", start=start, end=end) == f"t >= {low} AND t <= {high}"


def test_interval_variables() -> None:
    assert x("$__interval $__interval_ms", interval=timedelta(minutes=10)) == "10m 600000"
    assert x("$__timeGroup(t, $__interval)", interval=timedelta(hours=1)) == (
        "floor(extract(epoch from t)/3600)*3600"
    )
    assert x("${__interval}", interval=timedelta(seconds=30)) == "30s"
    assert x("$__from $__to ${__from:date:iso} ${__to:date:seconds}") == (
        "1523556000000 1523556300000 2018-04-12T18:00:00.000Z 1523556300"
    )
    assert x("$__range $__range_s $__range_ms") == "300s 300 300000"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # a single-value variable: quotes doubled, not quoted (the panel's SQL quotes it)
        ("value1", "value1"),
        ("O'Brien", "O''Brien"),
        ("", ""),
        (42, "42"),
        # several values (or "All"): a list of quoted literals
        (["value1", "value2", "value3"], "'value1','value2','value3'"),
        (["O'Brien", "Smith", "D'Angelo"], "'O''Brien','Smith','D''Angelo'"),
        (["value1"], "'value1'"),
        ([], ""),
    ],
)
def test_variables_as_the_sql_data_sources_interpolate_them(value: object, expected: str) -> None:
    assert x("$v", variables={"v": value}) == expected
    assert x("${v}", variables={"v": value}) == expected
    assert x("[[v]]", variables={"v": value}) == expected


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("csv", ["a", "b"], "a,b"),
        ("csv", "a", "a"),
        ("sqlstring", ["a", "b'c"], "'a','b''c'"),
        ("sqlstring", "O'Brien", "'O''Brien'"),
        ("singlequote", ["a", "b'c"], "'a','b\\'c'"),
        ("doublequote", ["a", 'b"c'], '"a","b\\"c"'),
        ("pipe", ["a", "b"], "a|b"),
        ("raw", ["a", "b"], "a,b"),
        ("json", ["a", "b"], '["a","b"]'),
        ("json", "a", '"a"'),
        ("glob", ["a", "b"], "{a,b}"),
        ("glob", "a", "a"),
        ("regex", ["a.b", "c"], "(a\\.b|c)"),
    ],
)
def test_variable_formats(fmt: str, value: object, expected: str) -> None:
    assert x(f"${{v:{fmt}}}", variables={"v": value}) == expected
    assert x(f"[[v:{fmt}]]", variables={"v": value}) == expected


def test_what_is_not_a_variable_is_left_alone() -> None:
    sql = "SELECT $unknown, '$$quoted$$', $1, ${v.field} WHERE $__timeFilter(t)"
    assert x(sql, variables={"v": "x"}) == (
        "SELECT $unknown, '$$quoted$$', $1, ${v.field} WHERE "
        "t BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    )
    # longest name wins, as JavaScript's \w+ matches: $kecamatan is not $kec followed by "amatan"
    assert x("$kec $kecamatan", variables={"kec": "a", "kecamatan": "b"}) == "a b"


def test_errors_name_what_grafana_would_refuse() -> None:
    with pytest.raises(MacroError, match="unknown macro '__nope'"):
        x("$__nope(t)")
    with pytest.raises(MacroError, match="needs time column and interval"):
        x("$__timeGroup(t)")
    with pytest.raises(MacroError, match="error parsing interval"):
        x("$__timeGroup(t, 'soon')")
    with pytest.raises(MacroError, match="fill value"):
        x("$__timeGroup(t, '5m', maybe)")
    with pytest.raises(MacroError, match="unknown variable format 'nope'"):
        x("${v:nope}", variables={"v": "a"})
    with pytest.raises(MacroError, match="timezone-aware"):
        expand("x", start=datetime(2020, 1, 1), end=TO, interval=MINUTE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("0", timedelta(0)),
    ],
)
def test_parse_interval(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


def test_calendar_intervals_are_measured_from_now() -> None:
    jan31 = datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_interval("1M", now=jan31) == timedelta(days=31)  # Go: Jan 31 + 1 month = Mar 3
    assert parse_interval("1y", now=datetime(2028, 1, 1, tzinfo=UTC)) == timedelta(days=366)
    assert resolve_time("now-30d", jan31) == datetime(2026, 1, 1, tzinfo=UTC)
    assert resolve_time("now-6h", jan31) == jan31 - timedelta(hours=6)
    assert resolve_time("now", jan31) == jan31
    with pytest.raises(MacroError):
        resolve_time("now/d", jan31)


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (timedelta(days=400), "1y"),
        (timedelta(days=1, hours=1), "1d"),
        (timedelta(hours=2), "2h"),
        (timedelta(seconds=90), "1m"),
        (timedelta(seconds=1), "1s"),
        (timedelta(milliseconds=20), "20ms"),
        (timedelta(microseconds=10), "1ms"),
    ],
)
def test_format_interval(interval: timedelta, expected: str) -> None:
    assert format_interval(interval) == expected


def test_auto_interval_rounds_like_grafana_and_keeps_the_sql_minimum() -> None:
    assert auto_interval(FROM, FROM + timedelta(hours=6)) == timedelta(
        minutes=1
    )  # 21.6 s -> 20 s, min 1 m
    assert auto_interval(FROM, FROM + timedelta(days=30)) == timedelta(minutes=30)  # 43.2 min
    assert auto_interval(FROM, FROM + timedelta(days=7), max_data_points=100) == timedelta(hours=2)


@given(st.lists(st.text(max_size=20), max_size=5))
def test_sqlstring_always_yields_sql_string_literals(values: list[str]) -> None:
    """Whatever a variable holds, ${v:sqlstring} is a list of valid SQL literals: split at the
    commas between them, each is '...' with every inner quote doubled."""
    out = x("${v:sqlstring}", variables={"v": values})
    assert out == ",".join("'" + v.replace("'", "''") + "'" for v in values)

"""The dashboards as the SDK builds them: each one's JSON decodes back into the SDK's typed
models and encodes to the same JSON (grafana-foundation-sdk ships no JSON schema; its models are
its schema: from_json keeps only the fields they know, so a round trip that loses nothing means
every field is one of theirs), enum-typed fields hold their enums' values, and what a wall needs:
stable uids, WIB, Indonesian words, panels that fit the grid, no token anywhere."""

from __future__ import annotations

import enum
import json
import typing
from typing import Any

import psycopg
import pytest
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from grafana import postgres, style
from grafana.dashboards import UIDS, WALL, build_all
from grafana.export import to_json

PUBLIC_URL = "https://pantau.bekasikab.go.id"


@pytest.fixture(scope="module")
def boards() -> list[dict[str, Any]]:
    return [json.loads(to_json(b)) for b in build_all(PUBLIC_URL)]


def test_each_dashboard_round_trips_through_the_sdk_models(boards: list[dict[str, Any]]) -> None:
    register_default_plugins()
    postgres.register()
    for data in boards:
        decoded = dm.Dashboard.from_json(data)
        assert json.loads(to_json(decoded)) == data, data["uid"]
        for panel in decoded.panels or []:
            assert isinstance(panel, dm.Panel)
            # typed options and targets, not the SDK's bags for what it does not know
            config = cogruntime.panelcfg_config(panel.type_val)
            assert config is not None, panel.type_val
            if panel.options is not None and config.options_from_json_hook is not None:
                assert not isinstance(panel.options, dict), (panel.title, panel.options)
            for target in panel.targets or []:
                assert isinstance(target, postgres.Dataquery | pm.Dataquery), target
            _check_enums(panel, f"{data['uid']}/{panel.title}")
        _check_enums(decoded, data["uid"])


def _check_enums(obj: object, where: str, depth: int = 0) -> None:
    """Every attribute the SDK types as an enum holds one of that enum's values."""
    if depth > 12 or not hasattr(obj, "to_json"):
        return
    hints = typing.get_type_hints(type(obj).__init__, vars(type(obj).__module__ and _module(obj)))
    for name, value in vars(obj).items():
        hint = hints.get(name)
        for candidate in _enum_types(hint):
            if value is not None and not isinstance(value, candidate):
                assert value in {m.value for m in candidate}, (where, name, value)
        items = value if isinstance(value, list) else [value]
        for item in items:
            _check_enums(item, f"{where}.{name}", depth + 1)


def _module(obj: object) -> Any:
    import sys

    return sys.modules[type(obj).__module__]


def _enum_types(hint: object) -> list[type[enum.Enum]]:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [hint]
    return [t for arg in typing.get_args(hint) for t in _enum_types(arg)]


def test_stable_uids_titles_and_wib(boards: list[dict[str, Any]]) -> None:
    assert tuple(b["uid"] for b in boards) == UIDS
    assert [b["title"] for b in boards] == [
        "Dinding Komando", "Kecamatan", "Kamera", "Evaluasi", "Pipeline",
    ]  # fmt: skip
    assert set(WALL) <= set(UIDS)
    for board in boards:
        assert board["timezone"] == "Asia/Jakarta"
        assert board["editable"] is False
        assert "pantau" in board["tags"]
        assert [p["id"] for p in board["panels"]] == list(range(1, len(board["panels"]) + 1))
    # Same input, same dashboards.
    assert [json.loads(to_json(b)) for b in build_all(PUBLIC_URL)] == boards


def test_panels_fit_the_grid_without_overlapping(boards: list[dict[str, Any]]) -> None:
    for board in boards:
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (board["uid"], panel["title"])
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & area, (board["uid"], panel["title"], pos)
            cells |= area


def test_the_wall_dashboards_fit_one_1080p_screen_with_few_large_panels(
    boards: list[dict[str, Any]],
) -> None:
    """Grafana's grid row is 30 px plus an 8 px gap: 27 rows fill a 1080 px kiosk screen."""
    for board in boards:
        if board["uid"] not in WALL:
            continue
        bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
        assert bottom <= 27, (board["uid"], bottom)
        assert len(board["panels"]) <= 14, board["uid"]
        assert board["refresh"] in ("30s", "1m")
        for panel in board["panels"]:
            assert panel["gridPos"]["h"] >= 4, panel["title"]
            if panel["type"] == "stat":
                assert panel["options"]["text"]["valueSize"] >= 48, panel["title"]


def test_no_token_or_secret_in_any_dashboard(boards: list[dict[str, Any]]) -> None:
    text = json.dumps(boards).lower()
    for word in ("authorization", "bearer", "token", "apikey", "api_key", "password"):
        assert word not in text, word
    kamera = next(b for b in boards if b["uid"] == "pantau-kamera")
    (variable,) = kamera["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "pantau_url",
        "constant",
        PUBLIC_URL,
    )


def test_state_words_and_colours(boards: list[dict[str, Any]]) -> None:
    """The state colours read as the issue asks: up green, late amber, down red, paused blue,
    unknown grey; every state code of the views has a word."""
    assert style.STATES["up"][1] == "green"
    assert style.STATES["late"][1] == "orange"
    assert style.STATES["down"][1] == "red"
    assert style.STATES["paused"][1] == "blue"
    assert style.STATES["unknown"][1] == style.GREY
    dinding = next(b for b in boards if b["uid"] == "pantau-dinding")
    geomap = next(p for p in dinding["panels"] if p["type"] == "geomap")
    options = geomap["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: (v["text"], v["color"]) for k, v in options.items()} == style.STATES


async def test_words_and_levels_are_the_databases(migrated_db: str) -> None:
    """The dashboards' words are those of the wall's SQL functions, and the thresholds they draw
    are the migrations' alarm levels: one definition of each."""
    async with await psycopg.AsyncConnection.connect(migrated_db) as conn:
        for code, (word, _) in style.STATES.items():
            cur = await conn.execute("SELECT wall.state_label(%s)", (code,))
            assert await cur.fetchone() == (word,), code
        for code, (word, _) in style.SEVERITIES.items():
            cur = await conn.execute("SELECT wall.severity_label(%s)", (code,))
            assert await cur.fetchone() == (word,), code
        for category, colour in style.ISPU_COLOURS.items():
            cur = await conn.execute("SELECT wall.ispu_colour(%s)", (category,))
            named = (await cur.fetchone() or ("",))[0]
            assert colour == {"black": style.BLACK}.get(named, named), category
        siaga = await _levels(conn, "water_level", "water_level_cm")
        assert [(at, name) for at, _, name in style.SIAGA[1:]] == siaga
        ispu = await _levels(conn, "air_quality", "pm25_ugm3")
        assert [(at, name) for at, _, name in style.ISPU_PM25[1:]] == ispu
        # Just above each threshold the SQL function says the threshold's name, 0.1 below it (the
        # resolution ISPU and BMKG publish their classes at) the previous one's. (Grafana's
        # thresholds start at their value: at exactly 20 mm BMKG still says lebat.)
        for function, steps in (
            ("ispu_pm25", style.ISPU_PM25),
            ("rain_class_hour", style.BMKG_HOUR),
        ):
            for (lower, _, name), (_, _, before) in zip(steps[1:], steps, strict=False):
                assert lower is not None
                cur = await conn.execute(
                    f"SELECT wall.{function}(%s), wall.{function}(%s)",
                    (lower + 0.001, lower - 0.1),
                )
                assert await cur.fetchone() == (name, before), (function, lower)


async def _levels(conn: psycopg.AsyncConnection, kind: str, metric: str) -> list[tuple[float, str]]:
    cur = await conn.execute(
        "SELECT raise_at, name FROM alarm_levels WHERE device_type = %s AND metric = %s"
        " ORDER BY rank",
        (kind, metric),
    )
    return [(float(at), name) for at, name in await cur.fetchall()]

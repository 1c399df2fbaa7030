"""How a wall panel is made: few, large, legible from across the room, coded columns shown as
coloured Indonesian words. `panel_queries()` (grafana.queries) lists what every panel asks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, geomap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import geomap as gm
from grafana_foundation_sdk.models import prometheus as pm

from grafana import datasources, postgres, style
from grafana.postgres import Format
from grafana.queries import PanelQuery, panel_queries

__all__ = [
    "Column", "Count", "PanelQuery", "bars", "big_value", "counts", "device_map", "grid",
    "panel_queries", "promql", "series", "sql", "timeline",
]  # fmt: skip

Steps = tuple[tuple[float | None, str, str], ...]
Words = dict[str, tuple[str, str]]


# -- queries ------------------------------------------------------------------------------------


def sql(raw_sql: str, fmt: Format = "table", ref_id: str = "A") -> postgres.Query:
    """A PostgreSQL target: reads only wall.* (the one definition shared with /wall)."""
    return (
        postgres.Query(raw_sql.strip())
        .ref_id(ref_id)
        .format(fmt)
        .datasource(datasources.ref("postgres"))
    )


def promql(expr: str, legend: str, ref_id: str = "A", *, instant: bool = False) -> prom.Dataquery:
    query = (
        prom.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .editor_mode(pm.QueryEditorMode.CODE)
        .datasource(datasources.ref("prometheus"))
    )
    return query.instant() if instant else query.range()


# -- panels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """One big number of a counts panel: the query's column, its word, its colour."""

    column: str
    word: str
    colour: str


def state_counts(total_word: str) -> tuple[Count, ...]:
    """The device-state counts every status panel shows: the total under `total_word`, then up,
    late, down, paused and unknown in their words and colours."""
    return (
        Count("total", total_word, "#37474f"),
        Count("up", "Normal", style.GREEN),
        Count("late", "Terlambat", style.AMBER),
        Count("down", "Mati", style.RED),
        Count("paused", "Pemeliharaan", style.BLUE),
        Count("unknown", "Belum ada data", style.GREY),
    )


def counts(
    title: str,
    query: cogbuilder.Builder[cogvariants.Dataquery],
    fields: Sequence[Count],
    *,
    w: int = 24,
    h: int = 5,
    description: str = "",
) -> stat.Panel:
    """Big coloured tiles, one per column of a one-row query (status counts)."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .with_target(query)
        .datasource(datasources.ref("postgres"))
        .span(w)
        .height(h)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .justify_mode(common.BigValueJustifyMode.CENTER)
        .orientation(common.VizOrientation.VERTICAL)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .text(
            cb.VizTextDisplayOptions()
            .title_size(style.STAT_TITLE_SIZE)
            .value_size(style.STAT_VALUE_SIZE)
        )
        .decimals(0)
        .no_value("0")
        .color_scheme(style.fixed_colour(style.GREY))
    )
    for count in fields:
        panel.override_by_name(
            count.column,
            [
                dm.DynamicConfigValue(id_val="displayName", value=count.word),
                dm.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": count.colour}
                ),
            ],
        )
    return panel


def big_value(
    title: str,
    query: cogbuilder.Builder[cogvariants.Dataquery],
    kind: datasources.Kind,
    *,
    w: int,
    h: int,
    unit: str = "none",
    steps: Steps | None = None,
    words: Words | None = None,
    decimals: float | None = None,
    text_fields: bool = False,
    description: str = "",
) -> stat.Panel:
    """One or a few big numbers coloured by thresholds or by value mappings; `text_fields`
    shows text columns too (a state code mapped to its word)."""
    reduce = cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    if text_fields:
        reduce.fields("/.*/")
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .with_target(query)
        .datasource(datasources.ref(kind))
        .span(w)
        .height(h)
        .unit(unit)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.AUTO)
        .justify_mode(common.BigValueJustifyMode.CENTER)
        .reduce_options(reduce)
        .text(
            cb.VizTextDisplayOptions()
            .title_size(style.STAT_TITLE_SIZE)
            .value_size(style.STAT_VALUE_SIZE)
        )
    )
    if decimals is not None:
        panel.decimals(decimals)
    if steps is not None:
        panel.thresholds(style.thresholds(steps)).color_scheme(style.by_thresholds())
    if words is not None:
        panel.mappings(style.value_mapping(words)).color_scheme(style.fixed_colour(style.GREY))
    return panel


def bars(
    title: str,
    query: cogbuilder.Builder[cogvariants.Dataquery],
    name_column: str,
    *,
    w: int,
    h: int,
    unit: str,
    steps: Steps,
    max_value: float | None = None,
    min_value: float = 0,
    decimals: float | None = None,
    description: str = "",
) -> bargauge.Panel:
    """One horizontal bar per row, named by `name_column`, coloured by the named levels."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .with_target(query)
        .datasource(datasources.ref("postgres"))
        .span(w)
        .height(h)
        .unit(unit)
        .min(min_value)
        .display_name(f"${{__data.fields.{name_column}}}")
        .thresholds(style.thresholds(steps))
        .color_scheme(style.by_thresholds())
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .value_mode(common.BarGaugeValueMode.COLOR)
        .orientation(common.VizOrientation.HORIZONTAL)
        .show_unfilled(True)
        .min_viz_height(24)
        .reduce_options(cb.ReduceDataOptions().values(True).calcs([]).limit(12))
        .text(
            cb.VizTextDisplayOptions()
            .title_size(style.BAR_TITLE_SIZE)
            .value_size(style.BAR_VALUE_SIZE)
        )
        .no_value("tidak ada data")
    )
    if max_value is not None:
        panel.max(max_value)
    if decimals is not None:
        panel.decimals(decimals)
    return panel


@dataclass(frozen=True)
class Column:
    """How a table shows one column of its query: a header word, and optionally the words and
    colours of its codes, a unit, thresholds, an image or a width."""

    name: str
    header: str
    words: Words | None = None
    colours: dict[str, str] | None = None
    unit: str | None = None
    steps: Steps | None = None
    image: bool = False
    gauge: bool = False
    width: int | None = None
    hidden: bool = False


def grid(
    title: str,
    query: cogbuilder.Builder[cogvariants.Dataquery],
    columns: Sequence[Column],
    *,
    w: int,
    h: int,
    cell_height: common.TableCellHeight = common.TableCellHeight.MD,
    description: str = "",
) -> table.Panel:
    """A table whose coded columns read as coloured Indonesian words."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .with_target(query)
        .datasource(datasources.ref("postgres"))
        .span(w)
        .height(h)
        .cell_height(cell_height)
        .show_header(True)
        .no_value("-")
    )
    for column in columns:
        props = [dm.DynamicConfigValue(id_val="displayName", value=column.header)]
        if column.words is not None:
            props.append(
                dm.DynamicConfigValue(id_val="mappings", value=style.value_mapping(column.words))
            )
        if column.colours is not None:
            props.append(
                dm.DynamicConfigValue(id_val="mappings", value=style.colour_mapping(column.colours))
            )
        if column.words is not None or column.colours is not None or column.steps is not None:
            cell: object = common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.BASIC
            )
            if column.gauge:
                cell = common.TableBarGaugeCellOptions(mode=common.BarGaugeDisplayMode.BASIC)
            props.append(dm.DynamicConfigValue(id_val="custom.cellOptions", value=cell))
        if column.steps is not None:
            props.append(
                dm.DynamicConfigValue(
                    id_val="thresholds", value=style.thresholds(column.steps).build()
                )
            )
            props.append(dm.DynamicConfigValue(id_val="color", value=style.by_thresholds().build()))
        if column.unit is not None:
            props.append(dm.DynamicConfigValue(id_val="unit", value=column.unit))
        if column.image:
            props.append(
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions", value=common.TableImageCellOptions()
                )
            )
        if column.width is not None:
            props.append(dm.DynamicConfigValue(id_val="custom.width", value=column.width))
        if column.hidden:
            props.append(dm.DynamicConfigValue(id_val="custom.hidden", value=True))
        panel.override_by_name(column.name, props)
    return panel


def series(
    title: str,
    queries: Sequence[cogbuilder.Builder[cogvariants.Dataquery]],
    kind: datasources.Kind,
    *,
    w: int,
    h: int,
    unit: str,
    steps: Steps | None = None,
    decimals: float | None = None,
    min_value: float | None = None,
    time_from: str | None = None,
    description: str = "",
) -> timeseries.Panel:
    """Lines over the dashboard's period; named levels drawn as dashed threshold lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasources.ref(kind))
        .span(w)
        .height(h)
        .unit(unit)
        .line_width(2)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
    )
    for query in queries:
        panel.with_target(query)
    if steps is not None:
        panel.thresholds(style.thresholds(steps)).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    if decimals is not None:
        panel.decimals(decimals)
    if min_value is not None:
        panel.min(min_value)
    if time_from is not None:
        panel.time_from(time_from)
    return panel


def timeline(
    title: str,
    queries: Sequence[cogbuilder.Builder[cogvariants.Dataquery]],
    words: Words,
    *,
    w: int,
    h: int,
    description: str = "",
) -> statetimeline.Panel:
    """States over time as coloured bands (connections: Terhubung / Terputus)."""
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(datasources.ref("prometheus"))
        .span(w)
        .height(h)
        .mappings(style.value_mapping(words))
        .color_scheme(style.fixed_colour(style.GREY))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(90)
        .line_width(0)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )
    for query in queries:
        panel.with_target(query)
    return panel


def device_map(
    title: str,
    query: cogbuilder.Builder[cogvariants.Dataquery],
    *,
    w: int,
    h: int,
    colour_column: str = "state",
    description: str = "",
) -> geomap.Panel:
    """Devices as dots on the map, coloured by their state (the view's codes mapped to words
    and colours); the view fits the devices shown."""
    layer = (
        cb.MapLayerOptions()
        .type("markers")
        .name("Perangkat")
        .location(
            cb.FrameGeometrySource()
            .mode(common.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": colour_column, "fixed": style.GREY},
                    "opacity": 0.9,
                    "size": {"fixed": 9, "min": 4, "max": 15},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "rotation": {"fixed": 0, "max": 360, "min": -360, "mode": "mod"},
                    "symbolAlign": {"horizontal": "center", "vertical": "center"},
                },
            }
        )
    )
    return (
        geomap.Panel()
        .title(title)
        .description(description)
        .with_target(query)
        .datasource(datasources.ref("postgres"))
        .span(w)
        .height(h)
        .view(geomap.MapViewConfig().id("fit").all_layers(True).padding(5).max_zoom(13))
        .controls(
            geomap.ControlsOptions()
            .show_zoom(False)
            .mouse_wheel_zoom(False)
            .show_attribution(True)
            .show_scale(False)
        )
        .basemap(cb.MapLayerOptions().type("default").name("Peta dasar"))
        .layers([layer])
        .tooltip(geomap.TooltipOptions().mode(gm.TooltipMode.DETAILS))
        .mappings(style.value_mapping(style.STATES))
        .color_scheme(style.fixed_colour(style.GREY))
    )

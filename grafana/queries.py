"""What every panel queries: each query of each dashboard with its panel, data source, format
and default range, for the tests that run them and the benchmark that times them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from grafana import datasources, macros, postgres
from grafana.postgres import Format


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel (or of a dashboard variable), as the dashboard stores it."""

    dashboard_uid: str
    panel_title: str
    panel_type: str  # stat, table, timeseries, ...; "variable" for a variable's query
    ref_id: str
    datasource: datasources.Kind
    text: str  # rawSql (macros and variables unexpanded) or PromQL
    format: Format
    time_from: str  # the range the panel shows by default: the dashboard's, or its override
    time_to: str

    @property
    def variables(self) -> tuple[str, ...]:
        """The dashboard variables the query needs (`kecamatan`, `tipe`, `pantau_url`): a value
        each for `expand` (`tipe` takes a list: "All" is every value its own query returns)."""
        names = re.findall(r"\$\{?([A-Za-z0-9_]+)", self.text)
        return tuple(dict.fromkeys(n for n in names if not n.startswith("__")))

    def time_range(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The default range as times, at `now` (default: the clock)."""
        at = now or datetime.now(UTC)
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)  # Grafana sends ms
        return macros.resolve_time(self.time_from, at), macros.resolve_time(self.time_to, at)

    def expand(
        self,
        variables: Mapping[str, macros.VariableValue] | None = None,
        *,
        now: datetime | None = None,
        max_data_points: int = 1000,
    ) -> str:
        """The SQL Grafana would run for this query over its default range (PostgreSQL only)."""
        if self.datasource != "postgres":
            raise ValueError(f"{self.panel_title}: PromQL is expanded by Prometheus' data source")
        start, end = self.time_range(now)
        interval = macros.auto_interval(start, end, max_data_points=max_data_points)
        return macros.expand(
            self.text, start=start, end=end, interval=interval, variables=variables
        )


def panel_queries() -> list[PanelQuery]:
    """Every query of every dashboard `grafana.dashboards.build_all()` builds, in order."""
    from grafana.dashboards import build_all

    return [q for board in build_all() for q in _queries(board)]


def _queries(board: dm.Dashboard) -> Iterator[PanelQuery]:
    uid = board.uid or ""
    time_from = board.time.from_val if board.time else "now-6h"
    time_to = board.time.to if board.time else "now"
    for variable in board.templating.list_val or []:
        if variable.type_val == dm.VariableType.QUERY and isinstance(variable.query, str):
            yield PanelQuery(
                uid, f"${variable.name}", "variable", variable.name, "postgres",
                variable.query, "table", time_from, time_to,
            )  # fmt: skip
    for panel in _panels(board):
        panel_from = f"now-{panel.time_from}" if panel.time_from else time_from
        for target in panel.targets or []:
            if isinstance(target, postgres.Dataquery):
                yield PanelQuery(
                    uid, panel.title or "", panel.type_val, target.ref_id, "postgres",
                    target.raw_sql, target.format_val, panel_from, time_to,
                )  # fmt: skip
            elif isinstance(target, pm.Dataquery):
                fmt: Format = (
                    "table" if target.format_val == pm.PromQueryFormat.TABLE else ("time_series")
                )
                yield PanelQuery(
                    uid, panel.title or "", panel.type_val, target.ref_id, "prometheus",
                    target.expr, fmt, panel_from, time_to,
                )  # fmt: skip


def _panels(board: dm.Dashboard) -> Iterator[dm.Panel]:
    for item in board.panels or []:
        if isinstance(item, dm.RowPanel):
            yield from item.panels
        else:
            yield item

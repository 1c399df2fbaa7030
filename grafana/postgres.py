"""The PostgreSQL query the SDK lacks (it ships Prometheus', not the SQL data sources'): a
Dataquery model with cog's to_json/from_json and its builder, registered with cog's runtime so a
dashboard's JSON decodes back into it."""

from __future__ import annotations

import typing
from typing import Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from grafana.datasources import POSTGRES_TYPE

Format = Literal["table", "time_series"]


class Dataquery(cogvariants.Dataquery):
    """One SQL target as Grafana's PostgreSQL query editor saves it in code mode."""

    def __init__(
        self,
        ref_id: str = "",
        raw_sql: str = "",
        format_val: Format = "table",
        datasource: DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val: Format = format_val
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "editorMode": "code",
            "format": self.format_val,
            "rawQuery": True,
            "rawSql": self.raw_sql,
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> typing.Self:
        datasource = data.get("datasource")
        return cls(
            ref_id=data.get("refId", ""),
            raw_sql=data.get("rawSql", ""),
            format_val=data.get("format", "time_series"),  # Grafana's default
            datasource=DataSourceRef.from_json(datasource) if datasource is not None else None,
            hide=data.get("hide"),
        )


class Query(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, raw_sql: str) -> None:
        self._internal = Dataquery(raw_sql=raw_sql)

    def build(self) -> Dataquery:
        return self._internal

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def format(self, format_val: Format) -> typing.Self:
        self._internal.format_val = format_val
        return self

    def datasource(self, datasource: DataSourceRef) -> typing.Self:
        self._internal.datasource = datasource
        return self


def register() -> None:
    """Decode PostgreSQL targets into Dataquery (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=POSTGRES_TYPE, from_json_hook=Dataquery.from_json)
    )

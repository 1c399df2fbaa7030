"""The `[grafana]` section: the dashboards as code (export, publish) and Pantau's own /wall."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GrafanaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    wall_enabled: bool = Field(
        True, description="serve the command-center wall at /wall (no Grafana needed)"
    )

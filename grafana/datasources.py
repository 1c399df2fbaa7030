"""The two data sources every dashboard names by uid: PostgreSQL (the `wall` views, through a
login role that is a member of pantau_wall) and Prometheus (Pantau's /metrics)."""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.models.dashboard import DataSourceRef

Kind = Literal["postgres", "prometheus"]

POSTGRES_TYPE = "grafana-postgresql-datasource"
PROMETHEUS_TYPE = "prometheus"
POSTGRES_UID = "pantau-postgres"
PROMETHEUS_UID = "pantau-prometheus"

# The environment variables Grafana reads the PostgreSQL login from (provisioning expands them):
# not PANTAU_*, which Pantau's own settings loader would refuse as unknown settings.
DB_USER_ENV = "GRAFANA_PANTAU_DB_USER"
DB_PASSWORD_ENV = "GRAFANA_PANTAU_DB_PASSWORD"  # noqa: S105 - a variable's name


def ref(kind: Kind) -> DataSourceRef:
    if kind == "postgres":
        return DataSourceRef(type_val=POSTGRES_TYPE, uid=POSTGRES_UID)
    return DataSourceRef(type_val=PROMETHEUS_TYPE, uid=PROMETHEUS_UID)

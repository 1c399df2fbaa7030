"""The Prometheus registry of one Pantau process. Every component takes the registry as an
argument, so each test can build a fresh one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, Info

from pantau import __version__


def build_registry() -> CollectorRegistry:
    """A fresh registry with the process-wide series every Pantau exports."""
    registry = CollectorRegistry()
    Info("pantau_build", "Pantau version", registry=registry).info({"version": __version__})
    return registry


def database_up(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "pantau_database_up",
        "1 while PostgreSQL is reachable (checked every database.retry_max_seconds), else 0: "
        "readings are spooled",
        registry=registry,
    )


def database_schema_ready(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "pantau_database_schema_ready",
        "1 once the database's migrations are applied (the workers that need them run), else 0",
        registry=registry,
    )

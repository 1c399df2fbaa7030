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
        "1 when the last readiness check reached PostgreSQL, else 0",
        registry=registry,
    )

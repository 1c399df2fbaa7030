"""Pantau: telemetry ingestion for a smart-city command center (the shell package)."""

__version__ = "0.1.0"

"""Shared fixtures: real PostgreSQL, Mosquitto and RTSP servers started by the tests themselves."""

import os

import pytest
from hypothesis import settings

# Hypothesis in `make test` (and CI): the same examples at every run (a fixed seed per test), so a
# red run is the change's, not a new draw's; no per-example deadline, since two workers share two
# cores and a slow example is no failure. PANTAU_HYPOTHESIS=explore draws new examples each run.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("PANTAU_HYPOTHESIS", "repeatable"))

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.rtsp"]

# The suite runs the service with one ingest process (today's in-process path) unless a test asks
# for more (tests/ingest/test_processes.py): the default, the machine's cores, would give each
# test's `pantau run` a varying number of sessions and spools.
os.environ.setdefault("PANTAU_INGEST__PROCESSES", "1")

# The longest files first (seconds on 2 cores, 2026-12-08): `make test` runs two workers, a file
# per worker at a time, in collection order; a long file started last keeps one worker busy
# after the other has finished. Within a file, and for every other file, the order stays.
LONGEST_FIRST = (
    "tests/pantau/test_api_contract.py",  # 115
    "tests/ingest/test_faults.py",  # 88
    "tests/scale/test_instances.py",  # 63
    "tests/streams/test_probe.py",  # 46
    "tests/ingest/test_retire.py",  # 39 (alone, 2026-12-08)
    "tests/ingest/test_quarantine_bounds.py",  # 35
    "tests/ingest/test_processes.py",  # 35
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable

"""Shared fixtures: real PostgreSQL, Mosquitto and RTSP servers started by the tests themselves."""

import os

import pytest

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

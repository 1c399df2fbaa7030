"""Shared fixtures: real PostgreSQL, Mosquitto and RTSP servers started by the tests themselves."""

import os

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.rtsp"]

# The suite runs the service with one ingest process (today's in-process path) unless a test asks
# for more (tests/ingest/test_processes.py): the default, the machine's cores, would give each
# test's `pantau run` a varying number of sessions and spools.
os.environ.setdefault("PANTAU_INGEST__PROCESSES", "1")

"""Shared fixtures: real PostgreSQL, Mosquitto and RTSP servers started by the tests themselves."""

pytest_plugins = ["tests.fixtures.servers", "tests.fixtures.rtsp"]

"""Shared fixtures: real PostgreSQL and Mosquitto servers started by the tests themselves."""

pytest_plugins = ["tests.fixtures.servers"]

"""No poison pill: arbitrary payloads (bytes, and JSON with any Unicode in keys and values, deep
and wide) on every default mapping's topic go through the real decoders, the real writer and the
real spool into a real PostgreSQL, each followed by a valid message in the same batch. Nothing
raises, and every valid reading is stored.

`make test` runs a bounded number of examples; `make bench` runs many more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.batch import Message, Processor
from ingest.spool import Spool
from ingest.writer import Writer
from pantau.mappings import default_mappings

# Topics come from the broker as valid UTF-8 (the subscriber escapes anything else), so they hold
# no lone surrogates; payloads may hold anything, escaped in JSON as a device would send it.
_topic_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
_any_text = st.text(max_size=30)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | _any_text
    | st.sampled_from(["41", " 7.5 ", "1e308", "-0", "NaN", "true", "2026-12-01T10:00:00"])
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=12) | st.dictionaries(_any_text, children, max_size=12)
    ),
    max_leaves=80,
)
_wide_readings = st.dictionaries(_any_text, _scalars, min_size=0, max_size=60)
_senml_record = st.dictionaries(
    st.sampled_from(["bn", "bt", "bu", "bv", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t"])
    | _any_text,
    _scalars,
    max_size=8,
)
_documents = st.one_of(
    _json,
    st.fixed_dictionaries({"ts": _scalars, "readings": _wide_readings | _json}),
    st.lists(_senml_record, max_size=20),
)
_deep = st.integers(1, 400).map(lambda n: "[" * n + "1" + "]" * n)  # nesting past parsers' limits


def _encode(doc: Any) -> bytes:
    # The stdlib escapes lone surrogates and NUL as \uXXXX (and writes NaN), as a sloppy device
    # might; orjson would refuse to write them at all.
    return json.dumps(doc).encode()


_payloads = st.one_of(
    st.binary(max_size=3000),
    _documents.map(_encode),
    _deep.map(str.encode),
)
_topics = st.one_of(
    st.builds("bekasi/{}/{}/{}".format, _topic_text, _topic_text, _topic_text),
    st.builds("bekasi-json/{}/{}".format, _topic_text, _topic_text),
    st.builds("bekasi-senml/{}/{}".format, _topic_text, _topic_text),
    st.sampled_from(["bekasi/setu/wl-1/level", "bekasi-json/setu/aq-1", "bekasi-senml/setu/s-1"]),
    _topic_text,
)


class Target:
    """The real writer and spool on a migrated database; `feed` checks one fuzzed message."""

    def __init__(self, db: str, spool_dir: Path) -> None:
        self.writer = Writer(db)
        self.spool = Spool(spool_dir, 1 << 30)
        self.spool.open()
        self.processor = Processor.from_settings(default_mappings(), 300, 7)
        self.conn = psycopg.connect(db, autocommit=True)
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        self.n = 0

    def feed(self, topic: str, payload: bytes) -> None:
        self.n += 1
        now = datetime.now(UTC)
        when = self.base + timedelta(milliseconds=self.n)
        valid = orjson.dumps({"ts": int(when.timestamp() * 1000), "readings": {"pm25": self.n}})
        batch = self.processor.batch(
            [
                Message(topic, payload, now, mid=1, qos=1),
                Message("bekasi-json/setu/fz-ok", valid, now, mid=2, qos=1),
            ]
        )
        self.writer.write(batch)
        # The same batch as it comes back from the spool after a database outage.
        self.spool.append(batch)
        for segment in self.spool.segments():
            for spooled in self.spool.read(segment):
                self.writer.write(spooled)
            self.spool.consumed(segment)
        row = self.conn.execute(
            "SELECT value FROM readings WHERE device_id = 'fz-ok' AND time = %s", (when,)
        ).fetchone()
        assert row == (float(self.n),), (topic, payload)

    def close(self) -> None:
        self.writer.close()
        self.spool.close()
        self.conn.close()


@pytest.fixture
def target(migrated_db: str, tmp_path: Path) -> Iterator[Target]:
    t = Target(migrated_db, tmp_path / "spool")
    yield t
    t.close()


def _fuzz(target: Target, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(topic=_topics, payload=_payloads)
    def run(topic: str, payload: bytes) -> None:
        target.feed(topic, payload)

    run()


def test_no_payload_stops_the_writer(target: Target) -> None:
    _fuzz(target, 200)
    assert target.n >= 200
    with target.conn.cursor() as cur:
        quarantined = cur.execute("SELECT count(*) FROM quarantine").fetchone()
    assert quarantined is not None
    assert quarantined[0] > 0  # the fuzz did reach the quarantine


@pytest.mark.bench
def test_no_payload_stops_the_writer_long_run(target: Target) -> None:
    _fuzz(target, 5000)

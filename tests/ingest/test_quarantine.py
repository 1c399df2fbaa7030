"""Quarantine end to end: bad payloads kept whole, listed, replayed after the mapping is fixed."""

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from ingest.batch import Message, Processor
from ingest.quarantine import Policy, list_entries, replay, summaries
from ingest.writer import Writer, WriteResult
from pantau.mappings import MappingSettings, default_mappings
from tests.fixtures.servers import run_pantau

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def db(migrated_db: str) -> str:
    return migrated_db


def store(db: str, *messages: tuple[str, bytes]) -> None:
    processor = Processor.from_settings(default_mappings(), 300, 7)
    writer = Writer(db)
    writer.write(processor.batch(Message(t, p, NOW) for t, p in messages))
    writer.close()


VENDOR = MappingSettings(
    name="vendor-x",
    topic="vendorx/{device}",
    format="json",
    metrics={"level_cm": "$.lvl"},
    convert={"level_cm": "m->cm"},
)


def test_replay_after_the_mapping_is_fixed(db: str) -> None:
    # vendorx/... is covered by no mapping yet; the number payload is simply bad.
    store(db, ("vendorx/wl-9", b'{"lvl": 1.5}'), ("bekasi/setu/wl-1/level", b"n/a"))
    with psycopg.connect(db) as conn:
        entries = list_entries(conn)
    assert {(e.topic, e.reason) for e in entries} == {
        ("vendorx/wl-9", "no_mapping"),
        ("bekasi/setu/wl-1/level", "malformed_payload"),
    }
    assert {e.payload for e in entries} == {b'{"lvl": 1.5}', b"n/a"}

    fixed = Processor.from_settings([*default_mappings(), VENDOR], 300, 7)
    writer = Writer(db)
    with psycopg.connect(db) as conn:
        report = replay(conn, writer, fixed)
        assert (report.replayed, report.resolved, report.readings) == (2, 1, 1)
        assert report.still == {"malformed_payload": 1}
        assert [e.topic for e in list_entries(conn)] == ["bekasi/setu/wl-1/level"]
        assert len(list_entries(conn, include_resolved=True)) == 2
        reading = conn.execute("SELECT time, device_id, metric, value FROM readings").fetchall()
    assert reading == [(NOW, "wl-9", "level_cm", 150.0)]
    # Replaying again finds nothing new to do.
    with psycopg.connect(db) as conn:
        again = replay(conn, writer, fixed)
    assert (again.replayed, again.resolved) == (1, 0)
    writer.close()


def test_replay_by_reason(db: str) -> None:
    store(db, ("vendorx/wl-9", b'{"lvl": 1}'), ("bekasi/setu/wl-1/level", b"n/a"))
    fixed = Processor.from_settings([*default_mappings(), VENDOR], 300, 7)
    writer = Writer(db)
    with psycopg.connect(db) as conn:
        report = replay(conn, writer, fixed, reasons=["malformed_payload"])
    assert (report.replayed, report.resolved) == (1, 0)
    writer.close()


cli = run_pantau


def test_quarantine_commands(db: str, tmp_path: Path) -> None:
    store(db, ("vendorx/wl-9", b'{"lvl": 2}'))
    listed = cli("quarantine", "list", db=db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "no_mapping  vendorx/wl-9" in listed.stdout
    assert 'payload: {"lvl": 2}' in listed.stdout
    assert listed.stdout.rstrip().endswith("1 in quarantine (no_mapping: 1)")

    bad = cli("quarantine", "replay", "--reason", "typo", db=db, cwd=tmp_path)
    assert bad.returncode == 2
    assert "--reason 'typo': expected one of no_mapping" in bad.stderr

    (tmp_path / "pantau.toml").write_text(
        '[[ingest.mappings]]\nname = "vendor-x"\ntopic = "vendorx/{device}"\nformat = "json"\n'
        'metrics = { level_cm = "$.lvl" }\nconvert = { level_cm = "m->cm" }\n'
    )
    replayed = cli("quarantine", "replay", "--reason", "no_mapping", db=db, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1: 1 resolved (1 new readings)" in replayed.stdout
    assert cli("quarantine", "list", db=db, cwd=tmp_path).stdout.strip() == "0 in quarantine"


async def test_old_quarantine_is_purged(db: str) -> None:
    from ingest.quarantine import purge

    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO quarantine (received_at, topic, payload, reason) VALUES"
            " (now() - interval '100 days', 'old', 'x', 'bad_value'),"
            " (now() - interval '10 days', 'recent', 'y', 'bad_value')"
        )
        assert await purge(conn, 90) == 1
        rows = await (await conn.execute("SELECT topic FROM quarantine")).fetchall()
    assert rows == [("recent",)]


# --- storable text, one row per message, and the quarantine's bounds ---------------------------

NUL_PAYLOAD = b'{"readings":{"pm25":41,"t\\u0000":"x"}}'


def write(db: str, *messages: Message, policy: Policy | None = None, **limits: int) -> WriteResult:
    processor = Processor.from_settings(default_mappings(), 300, 7, **limits)
    writer = Writer(db, policy=policy)
    try:
        return writer.write(processor.batch(messages))
    finally:
        writer.close()


def test_nul_in_a_key_is_quarantined_visibly_and_the_rest_written(db: str) -> None:
    result = write(
        db,
        Message("bekasi-json/setu/aq-1", NUL_PAYLOAD, NOW),
        Message("bekasi-json/setu/aq-2", b'{"readings":{"pm25":7}}', NOW),
    )
    assert [q.reason for q in result.quarantined] == ["bad_value"]
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT device_id, value FROM readings ORDER BY 1").fetchall() == [
            ("aq-1", 41.0),
            ("aq-2", 7.0),
        ]
        (entry,) = list_entries(conn)
    assert entry.payload == NUL_PAYLOAD  # the bytes as they came
    assert "aq-1/t\\u0000: value 'x' is not a number" in entry.detail
    assert entry.source == "aq-1"


def test_text_postgres_refuses_never_reaches_a_text_column_raw(db: str) -> None:
    # Topics with NUL and a lone surrogate (as if a broker let them through) and a device id
    # taken from the payload that holds a NUL.
    gateway = MappingSettings(name="gw", topic="gw/{x}", format="json", device="$.id", values="$.v")
    processor = Processor.from_settings([*default_mappings(), gateway], 300, 7)
    writer = Writer(db)
    batch = processor.batch(
        [
            Message("bekasi-json/setu/a\x00b", b'{"readings":{"pm25":1}}', NOW),
            Message("nowhere/\ud800", b"1", NOW),
            Message("gw/1", b'{"id":"d\\u0000","v":{"pm25":"x"}}', NOW),
            Message("bekasi-json/setu/aq-3", b'{"readings":{"pm25":3}}', NOW),
        ]
    )
    writer.write(batch)
    writer.close()
    with psycopg.connect(db) as conn:
        topics = [e.topic for e in list_entries(conn)]
        readings = conn.execute("SELECT device_id FROM readings").fetchall()
    assert sorted(topics) == ["bekasi-json/setu/a\\u0000b", "gw/1", "nowhere/\\ud800"]
    assert readings == [("aq-3",)]


def test_a_row_the_database_still_refuses_is_kept_unstorable(db: str) -> None:
    # A database that refuses a quarantine row for a reason Pantau cannot foresee (here a check
    # constraint on the detail): the row is kept with its raw bytes, the rest is written.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE quarantine ADD CONSTRAINT refuses CHECK (strpos(detail, 'poison') = 0)"
        )
    result = write(
        db,
        Message("bekasi/setu/wl-1/poison", b"poison", NOW),
        Message("bekasi/setu/wl-1/level", b"n/a", NOW),
        Message("bekasi/setu/wl-1/level", b"12", NOW),
    )
    assert sorted(q.reason for q in result.quarantined) == ["malformed_payload", "unstorable"]
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT reason, payload, topic FROM quarantine ORDER BY reason"
        ).fetchall()
        assert conn.execute("SELECT value FROM readings").fetchall() == [(12.0,)]
    assert rows[0][:2] == ("malformed_payload", b"n/a")
    assert rows[1][:2] == ("unstorable", b"poison")
    assert bytes.fromhex(rows[1][2].removeprefix("hex:")) == b"bekasi/setu/wl-1/poison"


def test_one_row_per_message_across_redeliveries_and_replays(db: str) -> None:
    bad = Message("bekasi/setu/wl-1/level", b"n/a", NOW)
    write(db, bad)
    write(db, bad, bad)  # redelivered, twice in one batch
    processor = Processor.from_settings(default_mappings(), 300, 7)
    writer = Writer(db)
    with psycopg.connect(db) as conn:
        for _ in range(2):  # replays that still fail
            assert replay(conn, writer, processor).still == {"malformed_payload": 1}
        write(db, Message("vendorx/wl-9", b"{}", NOW))
        write(db, Message("vendorx/wl-9", b"{}", NOW + timedelta(seconds=5)))
        entries = list_entries(conn)
    writer.close()
    assert [(e.topic, e.repeats) for e in entries] == [
        ("vendorx/wl-9", 1),
        ("bekasi/setu/wl-1/level", 2),
    ]


def test_identical_bytes_sent_again_are_replayed_at_each_receive_time(db: str) -> None:
    # A steady sensor whose payload has no time of its own: the same bytes every 10 s are
    # three readings. Quarantined (no mapping yet), they share one row; the replay after the
    # fix writes all three, and a spooled batch stored twice adds no time.
    sent = [NOW - timedelta(seconds=s) for s in (20, 10, 0)]
    for when in sent:
        write(db, Message("vendorx/wl-9", b'{"lvl": 1.5}', when))
    write(db, Message("vendorx/wl-9", b'{"lvl": 1.5}', sent[1]))  # the same message again
    fixed = Processor.from_settings([*default_mappings(), VENDOR], 300, 7)
    writer = Writer(db)
    with psycopg.connect(db) as conn:
        (entry,) = list_entries(conn)
        report = replay(conn, writer, fixed)
        rows = conn.execute("SELECT time, value FROM readings ORDER BY time").fetchall()
    writer.close()
    assert entry.repeats == 3
    assert (report.replayed, report.resolved, report.readings) == (1, 1, 3)
    assert rows == [(when, 150.0) for when in sent]


def test_per_device_hourly_cap_keeps_a_few_whole_and_summarises_the_rest(
    db: str, tmp_path: Path
) -> None:
    policy = Policy(max_per_source_hour=5)
    hour = NOW.replace(minute=0, second=0)
    for start in range(0, 50, 10):
        at = hour + timedelta(seconds=start)
        result = write(
            db,
            *[
                Message("bekasi/setu/wl-flood/level", f"bad-{i}".encode(), at)
                for i in range(start, start + 10)
            ],
            Message("bekasi/setu/wl-other/level", f"x-{start}".encode(), at),
            Message("bekasi/setu/wl-other/level", f"{start}".encode(), at),
            policy=policy,
        )
    assert result.stored.summarised == {"malformed_payload": 10}
    with psycopg.connect(db) as conn:
        per_source = conn.execute(
            "SELECT source, count(*) FROM quarantine GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (5,)
        (summary,) = summaries(conn)
    assert per_source == [("wl-flood", 5), ("wl-other", 5)]
    assert (summary.source, summary.kept, summary.summarised) == ("wl-flood", 5, 45)
    assert summary.reasons == {"malformed_payload": 45}
    assert summary.hour == hour

    listed = cli("quarantine", "list", db=db, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "45 more payloads from wl-flood (malformed_payload: 45), not kept whole" in listed.stdout
    assert listed.stdout.rstrip().endswith(
        "10 in quarantine (malformed_payload: 10), 45 more only counted"
    )


def test_size_cap_drops_the_oldest(db: str) -> None:
    policy = Policy(max_bytes=10_000)
    dropped: dict[str, int] = {}
    for i in range(30):
        result = write(db, Message(f"nowhere/{i}", bytes([65 + i % 26]) * 1000, NOW), policy=policy)
        for reason, n in result.quarantine_dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
    with psycopg.connect(db) as conn:
        topics = [e.topic for e in list_entries(conn, limit=100)]
        (row,) = conn.execute(
            "SELECT octet_length(payload) + octet_length(topic) + octet_length(detail)"
            " FROM quarantine LIMIT 1"
        ).fetchall()
    # A row counts its payload and the text beside it: about 1,040 bytes, so nine fit.
    assert 10_000 // 10 < row[0] <= 10_000 // 9
    assert topics == [f"nowhere/{i}" for i in range(29, 20, -1)]  # the newest nine
    assert dropped == {"no_mapping": 21}


# 300 kB passes the embedded broker's message_size_limit; 20 MB (a camera's JPEGs on a sensor
# topic) is what a broker without such a limit hands over; on a topic no mapping covers too.
@pytest.mark.parametrize(
    ("pad", "topic"),
    [
        (300_000, "bekasi-json/setu/aq-1"),
        (20_000_000, "bekasi-json/setu/aq-1"),
        (20_000_000, "cctv/setu/cam-1/jpeg"),
    ],
    ids=["300kB", "20MB", "20MB-unmapped"],
)
def test_payload_over_the_limit_keeps_its_head_size_and_hash(db: str, pad: int, topic: str) -> None:
    big = b'{"readings":{"pm25":1},"pad":"' + b"x" * pad + b'"}'
    write(
        db,
        Message(topic, big, NOW),
        Message("bekasi-json/setu/aq-2", b'{"readings":{"pm25":2}}', NOW),
    )
    with psycopg.connect(db) as conn:
        (entry,) = list_entries(conn)
        size, sha = conn.execute("SELECT payload_size, payload_sha256 FROM quarantine").fetchone()
        assert conn.execute("SELECT device_id FROM readings").fetchall() == [("aq-2",)]
        writer = Writer(db)
        report = replay(conn, writer, Processor.from_settings(default_mappings(), 300, 7))
        writer.close()
    assert entry.reason == "payload_too_large"
    assert entry.payload == big[:4096]
    assert (size, bytes(sha)) == (len(big), hashlib.sha256(big).digest())
    assert (
        f"payload of {len(big):,} bytes is over ingest.max_payload_bytes (262,144)" in entry.detail
    )
    assert hashlib.sha256(big).hexdigest() in entry.detail
    assert (report.replayed, report.cut) == (0, 1)  # a head is not replayed


def test_too_many_readings_in_one_message(db: str) -> None:
    def message(n: int, device: str) -> Message:
        body = orjson.dumps({"readings": {f"m{i}": i for i in range(n)}})
        return Message(f"bekasi-json/setu/{device}", body, NOW)

    result = write(db, message(11, "aq-over"), message(10, "aq-at"), max_readings=10)
    assert [q.reason for q in result.quarantined] == ["too_many_readings"]
    assert "11 readings in one message, over ingest.max_readings_per_message (10)" in (
        result.quarantined[0].detail
    )
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT device_id, count(*) FROM readings GROUP BY 1").fetchall() == [
            ("aq-at", 10)
        ]


def test_a_spooled_batch_keeps_what_the_quarantine_needs(db: str, tmp_path: Path) -> None:
    from ingest.spool import Spool

    big = b"[" + b"1," * 200_000 + b"1]"
    processor = Processor.from_settings(default_mappings(), 300, 7)
    batch = processor.batch(
        [Message("bekasi-json/setu/aq-1", big, NOW), Message("bekasi/setu/wl-2/level", b"?", NOW)]
    )
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.open()
    spool.append(batch)
    (segment,) = spool.segments()
    (back,) = list(spool.read(segment))
    spool.close()
    assert back.quarantine == batch.quarantine
    assert [(q.source, q.size) for q in back.quarantine] == [("aq-1", len(big)), ("wl-2", None)]
    writer = Writer(db)
    writer.write(batch)
    writer.write(back)  # a replay of the same batch adds no row
    writer.close()
    with psycopg.connect(db) as conn:
        assert [(e.source, e.repeats) for e in list_entries(conn)] == [("wl-2", 1), ("aq-1", 1)]


def test_migration_folds_rows_inserted_again_before_it(database_url: str) -> None:
    from pantau.migrate import shipped_migrations

    with psycopg.connect(database_url, autocommit=True) as conn:
        later = []
        for migration in shipped_migrations():
            if migration.version < 4:
                conn.execute(migration.script("plain"))
            else:
                later.append(migration)
        # What redeliveries left on older versions: the same message three times, another once.
        conn.execute(
            "INSERT INTO quarantine (received_at, topic, payload, reason) VALUES"
            " (now(), 'a/b', 'x', 'bad_value'), (now(), 'a/b', 'x', 'bad_value'),"
            " (now(), 'a/b', 'x', 'bad_value'), (now(), 'a/c', 'x', 'bad_value')"
        )
        conn.execute(later[0].script("plain"))
        rows = conn.execute(
            "SELECT topic, repeats, digest, payload_size FROM quarantine ORDER BY id"
        ).fetchall()
    assert [(t, r, s) for t, r, _, s in rows] == [("a/b", 2, 1), ("a/c", 0, 1)]
    # The digest the migration computed is the one the writer computes.
    from ingest.quarantine import digest

    assert bytes(rows[0][2]) == digest("a/b", hashlib.sha256(b"x").digest())

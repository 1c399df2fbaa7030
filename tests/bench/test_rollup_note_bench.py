"""What noting late batches for the rollups costs the writer (issue 17.4): the statement
`Writer._transaction` adds (`pantau_note_written` with the batch's min/max time), as a share of
the same run's whole batch write. `make bench` runs it; `make test` skips it."""

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.batch import Batch
from ingest.writer import Writer
from pantau import migrate
from pantau.settings import StorageSettings
from pantau.storage import PlainStorage

pytestmark = pytest.mark.bench
BATCH = 5_000  # ingest.batch_size's default
BATCHES = 30


def batch(number: int, start: datetime) -> list[tuple[datetime, str, str, float]]:
    return [
        (start + timedelta(microseconds=number * BATCH + i), f"dev-{i % 500:04d}", "level", 1.0)
        for i in range(BATCH)
    ]


async def test_noting_late_batches_costs_little(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate.migrate(conn, "plain")
        await PlainStorage(StorageSettings()).apply_policies(conn)
    now = datetime.now(UTC)
    print("\n| batches of 5,000 | whole write (ms/batch) | note (ms/batch) | share |")
    print("|---|---|---|---|")
    for label, start in (
        ("on time", now - timedelta(minutes=1)),
        ("late", now - timedelta(hours=6)),
    ):
        writer = Writer(database_url)
        batches = [batch(n, start) for n in range(BATCHES)]
        try:
            writer.write(Batch(readings=batch(BATCHES, start), origins=[0] * BATCH))  # warm up
            began = time.perf_counter()
            for readings in batches:
                writer.write(Batch(readings=readings, origins=[0] * BATCH))
            whole = (time.perf_counter() - began) / BATCHES
        finally:
            writer.close()
        # Inside one transaction, as in the writer (no commit of its own).
        with psycopg.connect(database_url) as sync, sync.transaction(force_rollback=True):
            began = time.perf_counter()
            for readings in batches:
                times = [r[0] for r in readings]
                sync.execute("SELECT pantau_note_written(%s, %s)", (min(times), max(times)))
            note = (time.perf_counter() - began) / BATCHES
        share = note / whole
        print(f"| {label} | {whole * 1e3:.1f} | {note * 1e3:.2f} | {share:.1%} |")
        assert share < 0.05

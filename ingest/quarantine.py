"""Quarantine: payloads that could not be decoded or mapped, kept whole with their reason.

`replay` runs stored payloads through the current mappings (after a fix): what now decodes is
written (idempotently) and marked resolved; what still fails stays, with its new reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from ingest.batch import Batch, Message, Processor
from ingest.writer import Writer


@dataclass(frozen=True)
class Entry:
    id: int
    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str
    mapping: str | None
    resolved_at: datetime | None


@dataclass
class ReplayReport:
    replayed: int = 0
    resolved: int = 0
    readings: int = 0
    still: dict[str, int] = field(default_factory=dict)  # reason -> count


async def purge(conn: psycopg.AsyncConnection, retention_days: int) -> int:
    """Delete quarantined payloads older than the retention; return how many."""
    cur = await conn.execute(
        "DELETE FROM quarantine WHERE received_at < now() - make_interval(days => %s)",
        (retention_days,),
    )
    return cur.rowcount


def list_entries(
    conn: psycopg.Connection,
    *,
    reasons: Sequence[str] = (),
    limit: int = 50,
    include_resolved: bool = False,
) -> list[Entry]:
    rows = conn.execute(
        """
        SELECT id, received_at, topic, payload, reason, detail, mapping, resolved_at
        FROM quarantine
        WHERE (%(all)s OR resolved_at IS NULL)
          AND (cardinality(%(reasons)s::text[]) = 0 OR reason = ANY(%(reasons)s::text[]))
        ORDER BY id DESC
        LIMIT %(limit)s
        """,
        {"all": include_resolved, "reasons": list(reasons), "limit": limit},
    ).fetchall()
    return [Entry(*row) for row in rows]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT reason, count(*) FROM quarantine WHERE resolved_at IS NULL GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return dict(rows)


def replay(
    conn: psycopg.Connection,
    writer: Writer,
    processor: Processor,
    *,
    reasons: Sequence[str] = (),
    chunk: int = 500,
) -> ReplayReport:
    """Re-decode unresolved entries (oldest first) with `processor`; write what decodes now."""
    report = ReplayReport()
    last_id = 0
    while True:
        rows = conn.execute(
            """
            SELECT id, topic, payload, received_at FROM quarantine
            WHERE resolved_at IS NULL AND id > %(after)s
              AND (cardinality(%(reasons)s::text[]) = 0 OR reason = ANY(%(reasons)s::text[]))
            ORDER BY id LIMIT %(chunk)s
            """,
            {"after": last_id, "reasons": list(reasons), "chunk": chunk},
        ).fetchall()
        conn.commit()
        if not rows:
            return report
        last_id = rows[-1][0]
        batch = Batch()
        resolved: list[int] = []
        still: list[tuple[str, str, int]] = []
        for entry_id, topic, payload, received_at in rows:
            before = len(batch.quarantine)
            processor.add(batch, Message(topic, bytes(payload), received_at))
            if len(batch.quarantine) > before:
                problem = batch.quarantine.pop()
                still.append((problem.reason, problem.detail, entry_id))
                report.still[problem.reason] = report.still.get(problem.reason, 0) + 1
            else:
                resolved.append(entry_id)
        result = writer.write(batch)
        report.replayed += len(rows)
        report.resolved += len(resolved)
        report.readings += result.written
        with conn.transaction():
            conn.execute(
                "UPDATE quarantine SET resolved_at = now() WHERE id = ANY(%s)", (resolved,)
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE quarantine SET reason = %s, detail = %s WHERE id = %s", still
                )

"""Quarantine: payloads that could not be decoded or mapped, kept whole with their reason.

`store` is the writer's side: one row per message (a digest of topic and payload; identical
bytes again count a repeat, with its receive time, so a replay writes receive-time readings of
each), at most `max_per_source_hour` payloads kept whole per device (or topic) and
hour, the rest counted in that hour's summary row, and every text made storable (a row the
database still refuses is kept as raw bytes with the reason `unstorable`). `trim` keeps the
whole quarantine under `max_bytes`, dropping the oldest first.

`replay` runs stored payloads through the current mappings (after a fix): what now decodes is
written (idempotently) and marked resolved; what still fails stays, with its new reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg.types.json import Jsonb

from ingest.batch import Batch, Message, Processor, Quarantined
from ingest.decoders import UNSTORABLE
from ingest.text import visible

if TYPE_CHECKING:
    from ingest.writer import Writer
    from pantau.settings import IngestSettings

log = logging.getLogger(__name__)

# Receive times of repeats kept per row: a replay writes the message once for each of them.
REPEAT_TIMES_KEPT = 1000

# What a refused row may raise: the database's refusal, or psycopg's own when it cannot encode.
REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError, ValueError)

_INSERT = """
INSERT INTO quarantine (received_at, topic, payload, reason, detail, mapping, digest, source,
                        payload_size, payload_sha256, repeats, repeated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (digest) DO UPDATE
    SET repeats = quarantine.repeats + 1 + EXCLUDED.repeats,
        last_received_at = EXCLUDED.received_at,
        repeated_at = pantau_repeat_times(
            quarantine.received_at, quarantine.repeated_at,
            EXCLUDED.received_at || EXCLUDED.repeated_at)
"""
# One row per (digest, receive time) in; the times are added to the row's repeats.
_REPEATED = """
UPDATE quarantine q
SET repeats = q.repeats + u.n,
    last_received_at = GREATEST(q.last_received_at, u.last),
    repeated_at = pantau_repeat_times(q.received_at, q.repeated_at, u.times)
FROM (
    SELECT digest, count(*) AS n, max(received_at) AS last, array_agg(received_at) AS times
    FROM unnest(%s::bytea[], %s::timestamptz[]) AS x (digest, received_at)
    GROUP BY digest
) AS u
WHERE q.digest = u.digest
"""
# Takes the hour's row lock, so concurrent writers share one budget.
_BUDGET = """
INSERT INTO quarantine_hourly (source, hour) VALUES (%s, %s)
ON CONFLICT (source, hour) DO UPDATE SET source = EXCLUDED.source
RETURNING kept, reasons
"""
_SPENT = """
UPDATE quarantine_hourly
SET kept = %s, summarised = summarised + %s, summarised_bytes = summarised_bytes + %s,
    reasons = %s, last_at = GREATEST(last_at, %s)
WHERE source = %s AND hour = %s
"""
# Newest first, keep rows while their running total fits; the rest (the oldest) go.
_TRIM = """
WITH ranked AS (
    -- A row's bytes: its payload, and the text beside it (a topic may be 64 KiB long).
    SELECT id, sum(
        octet_length(payload) + octet_length(topic) + octet_length(detail)
        + 8 * cardinality(repeated_at)
    ) OVER (ORDER BY id DESC) AS newer
    FROM quarantine
), gone AS (
    DELETE FROM quarantine q USING ranked r
    WHERE q.id = r.id AND r.newer > %(max)s
    RETURNING q.source, q.received_at, q.reason
), counted AS (
    UPDATE quarantine_hourly h SET dropped = h.dropped + g.n
    FROM (
        SELECT source, date_trunc('hour', received_at, 'UTC') AS hour, count(*) AS n
        FROM gone GROUP BY 1, 2
    ) AS g
    WHERE h.source = g.source AND h.hour = g.hour
)
SELECT reason, count(*) FROM gone GROUP BY 1
"""


@dataclass(frozen=True)
class Policy:
    """The quarantine's bounds (ingest.quarantine_max_per_source_hour, _max_bytes)."""

    max_per_source_hour: int = 100
    max_bytes: int = 1 << 30

    @classmethod
    def from_settings(cls, s: IngestSettings) -> Policy:
        return cls(s.quarantine_max_per_source_hour, s.quarantine_max_bytes)


def processor_limits(s: IngestSettings) -> dict[str, int]:
    """The Processor's keyword arguments for the payload and readings bounds."""
    return {"max_payload_bytes": s.max_payload_bytes, "max_readings": s.max_readings_per_message}


@dataclass
class Stored:
    kept: int = 0  # new rows, payloads kept whole (or their head, when too large)
    repeats: int = 0  # messages already in quarantine (redeliveries, replays)
    summarised: dict[str, int] = field(default_factory=dict)  # reason -> only counted
    unstorable: int = 0
    lost: int = 0  # refused even as bare bytes (logged); counted as unstorable too
    bytes: int = 0  # bytes added: payloads and the text beside them (what the size cap counts)


def digest(topic: str, payload_sha256: bytes) -> bytes:
    """One message's identity in quarantine (the migration computes the same for old rows)."""
    return hashlib.sha256(visible(topic).encode() + b"\x00" + payload_sha256).digest()


def _hour(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def store(conn: psycopg.Connection, entries: Sequence[Quarantined], policy: Policy) -> Stored:
    """Write `entries` inside the caller's transaction. An entry whose row the database refuses
    even after its text was made storable gets the reason `unstorable` (changed in place, so
    the caller's metrics see it)."""
    out = Stored()
    if not entries:
        return out
    unique: dict[bytes, list[Quarantined]] = {}
    for q in entries:
        unique.setdefault(digest(q.topic, q.payload_sha256()), []).append(q)
    with conn.cursor() as cur:
        cur.execute("SELECT digest FROM quarantine WHERE digest = ANY(%s)", (list(unique),))
        existing = [bytes(row[0]) for row in cur.fetchall()]
        if existing:
            pairs = [(d, q.received_at) for d in existing for q in unique[d]]
            cur.execute(_REPEATED, ([d for d, _ in pairs], [t for _, t in pairs]))
            out.repeats += sum(len(unique[d]) for d in existing)
        groups: dict[tuple[str, datetime], list[tuple[bytes, list[Quarantined]]]] = {}
        for d, same in unique.items():
            if d not in existing:
                q = same[0]
                groups.setdefault((visible(q.source or q.topic), _hour(q.received_at)), []).append(
                    (d, same)
                )
        for (source, hour), items in sorted(groups.items(), key=lambda kv: kv[0]):
            row = cur.execute(_BUDGET, (source, hour)).fetchone()
            kept, reasons = (row[0], dict(row[1])) if row else (0, {})
            room = max(0, policy.max_per_source_hour - kept)
            whole, over = items[:room], items[room:]
            _insert(conn, cur, whole, source, out)
            over_bytes = 0
            for _, same in over:
                reason = same[0].reason
                reasons[reason] = reasons.get(reason, 0) + len(same)
                out.summarised[reason] = out.summarised.get(reason, 0) + len(same)
                over_bytes += same[0].whole_size * len(same)
            out.repeats += sum(len(same) - 1 for _, same in whole)
            last = max(q.received_at for _, same in items for q in same)
            cur.execute(
                _SPENT,
                (
                    kept + len(whole),
                    sum(len(same) for _, same in over),
                    over_bytes,
                    Jsonb(reasons),
                    last,
                    source,
                    hour,
                ),
            )
    return out


def _row(d: bytes, same: list[Quarantined], source: str) -> tuple[object, ...]:
    q = same[0]
    return (
        q.received_at,
        visible(q.topic),
        q.payload,
        q.reason,
        visible(q.detail),
        visible(q.mapping) if q.mapping is not None else None,
        d,
        source,
        q.whole_size,
        q.payload_sha256(),
        len(same) - 1,
        [other.received_at for other in same[1 : REPEAT_TIMES_KEPT + 1]],
    )


def _insert(
    conn: psycopg.Connection,
    cur: psycopg.Cursor,
    items: list[tuple[bytes, list[Quarantined]]],
    source: str,
    out: Stored,
) -> None:
    if not items:
        return
    rows = [_row(d, same, source) for d, same in items]
    try:
        with conn.transaction():
            cur.executemany(_INSERT, rows)
    except REFUSED:
        # Find the refused rows one by one; each is kept as raw bytes with the reason
        # `unstorable`, around as little text as it takes for the database to take it.
        for (_, same), row in zip(items, rows, strict=True):
            try:
                with conn.transaction():
                    cur.execute(_INSERT, row)
                continue
            except REFUSED as exc:
                log.warning("quarantine row refused (%s); keeping it as unstorable", exc)
                refusal = exc
            for variant in _unstorable(row, refusal):
                try:
                    with conn.transaction():
                        cur.execute(_INSERT, variant)
                    break
                except REFUSED as exc:
                    refusal = exc
            else:
                log.error("quarantine row for %r refused in every form: %s", row[1], refusal)
                out.lost += 1
            for q in same:
                q.reason = UNSTORABLE
            out.unstorable += 1
    out.kept += len(items)
    out.bytes += sum(
        len(q.payload) + len(q.topic) + len(q.detail) for q in (s[0] for _, s in items)
    )


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\x00", "\\x00")


def _unstorable(row: tuple[object, ...], exc: Exception) -> list[tuple[object, ...]]:
    """The same message with only ASCII text around its raw payload bytes: first with what
    was known about it, then with nothing but its topic in hex."""
    received_at, topic, payload, reason, detail, _mapping, d, source, size, sha, repeats, times = (
        row
    )
    why = _ascii(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:300]
    told = (
        received_at,
        _ascii(str(topic)),
        payload,
        UNSTORABLE,
        f"the database refused this row ({why}); it was {_ascii(str(reason))}: "
        f"{_ascii(str(detail))[:500]}",
        None,
        d,
        _ascii(str(source)),
        size,
        sha,
        repeats,
        times,
    )
    bare = (
        received_at,
        "hex:" + str(topic).encode("utf-8", "backslashreplace").hex(),
        payload,
        UNSTORABLE,
        "the database refused this row; topic in hex",
        None,
        d,
        "unstorable",
        size,
        sha,
        repeats,
        times,
    )
    return [told, bare]


def trim(conn: psycopg.Connection, max_bytes: int) -> dict[str, int]:
    """Delete the oldest rows until the payloads fit in `max_bytes`; count them by reason."""
    with conn.transaction():
        rows = conn.execute(_TRIM, {"max": max_bytes}).fetchall()
    return dict(rows)


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
    source: str
    repeats: int  # times it came again after the first (redeliveries, replays)
    payload_size: int  # of the whole payload; more than len(payload) when only its head is kept

    @property
    def cut(self) -> bool:
        return self.payload_size > len(self.payload)


@dataclass(frozen=True)
class Summary:
    """One source's hour: payloads kept whole, more only counted (by reason), dropped later."""

    source: str
    hour: datetime
    kept: int
    summarised: int
    summarised_bytes: int
    reasons: dict[str, int]
    dropped: int


@dataclass
class ReplayReport:
    replayed: int = 0
    resolved: int = 0
    readings: int = 0
    still: dict[str, int] = field(default_factory=dict)  # reason -> count
    cut: int = 0  # entries holding only the head of a too large payload: not replayable


async def purge(conn: psycopg.AsyncConnection, retention_days: int) -> int:
    """Delete quarantined payloads older than the retention; return how many."""
    cur = await conn.execute(
        "DELETE FROM quarantine WHERE received_at < now() - make_interval(days => %s)",
        (retention_days,),
    )
    await conn.execute(
        "DELETE FROM quarantine_hourly WHERE hour < now() - make_interval(days => %s)",
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
        SELECT id, received_at, topic, payload, reason, detail, mapping, resolved_at,
               source, repeats, payload_size
        FROM quarantine
        WHERE (%(all)s OR resolved_at IS NULL)
          AND (cardinality(%(reasons)s::text[]) = 0 OR reason = ANY(%(reasons)s::text[]))
        ORDER BY id DESC
        LIMIT %(limit)s
        """,
        {"all": include_resolved, "reasons": list(reasons), "limit": limit},
    ).fetchall()
    return [Entry(*row) for row in rows]


def summarised_total(conn: psycopg.Connection) -> int:
    """Payloads only counted (over the hourly cap) in the hours still kept."""
    row = conn.execute("SELECT coalesce(sum(summarised), 0) FROM quarantine_hourly").fetchone()
    return int(row[0]) if row else 0


def summaries(conn: psycopg.Connection, *, limit: int = 50) -> list[Summary]:
    """Hours in which a source sent more than was kept whole (or lost rows to the size cap)."""
    rows = conn.execute(
        """
        SELECT source, hour, kept, summarised, summarised_bytes, reasons, dropped
        FROM quarantine_hourly
        WHERE summarised > 0 OR dropped > 0
        ORDER BY hour DESC, summarised DESC, source
        LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [Summary(*row) for row in rows]


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
    # A head alone would decode to nothing, or to wrong readings: such entries are not replayed.
    row = conn.execute(
        """
        SELECT count(*) FROM quarantine
        WHERE resolved_at IS NULL AND octet_length(payload) < payload_size
          AND (cardinality(%(reasons)s::text[]) = 0 OR reason = ANY(%(reasons)s::text[]))
        """,
        {"reasons": list(reasons)},
    ).fetchone()
    report.cut = row[0] if row else 0
    last_id = 0
    while True:
        rows = conn.execute(
            """
            SELECT id, topic, payload, received_at, repeated_at FROM quarantine
            WHERE resolved_at IS NULL AND id > %(after)s AND octet_length(payload) = payload_size
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
        for entry_id, topic, payload, received_at, repeated_at in rows:
            # Once per time it came: identical bytes whose readings take the receive time are
            # several readings; those with their own time are written once (idempotently).
            before = len(batch.quarantine)
            for when in (received_at, *repeated_at):
                processor.add(batch, Message(topic, bytes(payload), when))
            if len(batch.quarantine) > before:
                problem = batch.quarantine[before]
                del batch.quarantine[before:]
                still.append((problem.reason, visible(problem.detail), entry_id))
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

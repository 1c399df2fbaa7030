from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest import spool as spool_module
from ingest.batch import Batch, Message, Quarantined
from ingest.spool import Spool, SpoolFull

NOW = datetime(2026, 11, 24, 3, 0, 0, 123456, tzinfo=UTC)


def batch(n: int) -> Batch:
    return Batch(
        readings=[(NOW, f"dev-{n}", "m", float(n)), (NOW, f"dev-{n}", "k", -1.5)],
        origins=[0, 0],
        messages=[Message(f"t/{n}", bytes([n % 256, 0, 255]), NOW)],
        quarantine=[Quarantined(NOW, f"q/{n}", b"\x00bad", "bad_value", "detail", "map")],
    )


def test_round_trip_in_order_across_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_SEGMENT_BYTES", 600)  # a few batches per segment
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    for n in range(20):
        spool.append(batch(n))
    assert not spool.empty
    segments = spool.segments()
    assert len(segments) > 2
    seen = [b for segment in segments for b in spool.read(segment)]
    assert [b.readings[0][3] for b in seen] == [float(n) for n in range(20)]
    assert seen[7] == batch(7)
    for segment in segments:
        spool.consumed(segment)
    assert spool.empty
    assert spool.size == 0
    assert list(tmp_path.glob("*.spool")) == []


def test_survives_a_restart_and_cuts_a_torn_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    spool.append(batch(1))
    spool.append(batch(2))
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    with segment.open("ab") as fh:
        fh.write(b"\x50\x00\x00\x00garbage")  # a crash in the middle of an append
    again = Spool(tmp_path, 1 << 20)
    again.open()
    assert [b.readings[0][1] for s in again.segments() for b in again.read(s)] == ["dev-1", "dev-2"]
    again.append(batch(3))
    assert [b.readings[0][1] for s in again.segments() for b in again.read(s)] == [
        "dev-1",
        "dev-2",
        "dev-3",
    ]


def fill(spool: Spool) -> int:
    """Append until the spool refuses; return how many it took."""
    for n in range(1000):
        try:
            spool.append(batch(n))
        except SpoolFull:
            return n
    raise AssertionError("the spool never filled up")


def test_full_spool_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 4096)
    spool.open()
    appended = fill(spool)
    assert appended > 1
    assert spool.size <= 4096
    with pytest.raises(SpoolFull, match="spool at"):
        spool.append(batch(0))
    assert sum(1 for s in spool.segments() for _ in spool.read(s)) == appended


def test_oldest_age(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    assert spool.oldest_age() == 0.0
    spool.append(batch(1))
    assert 0.0 <= spool.oldest_age() < 5.0

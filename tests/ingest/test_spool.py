import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest import spool as spool_module
from ingest.batch import Batch, Message, Quarantined
from ingest.spool import Spool, SpoolDiskFull, SpoolFull

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


def three(tmp_path: Path) -> tuple[Spool, Path]:
    spool = Spool(tmp_path, 1 << 20)
    spool.open()
    for n in (1, 2, 3):
        spool.append(batch(n))
    spool.close()
    return spool, next(tmp_path.glob("*.spool"))


def test_a_corrupt_record_in_the_middle_is_set_aside_and_the_rest_read(tmp_path: Path) -> None:
    _, segment = three(tmp_path)
    data = bytearray(segment.read_bytes())
    second = len(data) // 3 + 40  # inside the second record's body
    data[second] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path, 1 << 20)
    again.open()  # not cut off: only a torn *tail* is
    assert segment.stat().st_size == len(data)
    records = list(again.records(segment))
    assert [r.batch.readings[0][1] if r.batch else None for r in records] == [
        "dev-1",
        None,
        "dev-3",
    ]
    bad = records[1]
    assert "corrupt" in bad.problem
    assert bad.raw == bytes(data[bad.offset : records[2].offset])
    again.set_aside(segment, bad, bad.problem)
    again.set_aside(segment, bad, bad.problem)  # a replay started over keeps one file
    letters = again.dead.entries()
    assert len(letters) == 1
    assert (letters[0].kind, letters[0].raw, letters[0].batch()) == ("corrupt", bad.raw, None)
    assert again.dead.size == letters[0].path.stat().st_size
    limited = Spool(tmp_path, again.size + again.dead.size + 10)  # dead letters count too
    limited.open()
    with pytest.raises(SpoolFull, match="spool_max_bytes"):
        limited.append(batch(4))


def test_a_complete_last_record_with_a_bad_checksum_is_kept(tmp_path: Path) -> None:
    _, segment = three(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF  # a flipped bit, not a torn write: the length is all there
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path, 1 << 20)
    again.open()
    records = list(again.records(segment))
    assert segment.stat().st_size == len(data)
    assert [r.batch is not None for r in records] == [True, True, False]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB filesystem (tmpfs) to fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def big(n: int) -> Batch:
    b = batch(n)
    b.messages[0].payload = bytes(range(256)) * 12  # ~4 KiB encoded: a few short writes
    return b


def test_a_full_disk_leaves_whole_records_only(tiny_disk: Path) -> None:
    spool = Spool(tiny_disk / "spool", 1 << 30)  # the disk fills long before the limit
    spool.open()
    filler = tiny_disk / "filler"
    filler.write_bytes(b"x" * 8192)
    appended = 0
    refused: SpoolDiskFull | None = None
    for n in range(100):
        try:
            spool.append(big(n))
        except SpoolDiskFull as exc:
            refused = exc
            break
        appended += 1
    assert appended > 2
    assert "spool disk full (No space left on device)" in str(refused)
    (segment,) = spool.segments()
    assert segment.stat().st_size == spool.size  # rolled back to the last whole record
    assert [b.readings[0][3] for b in spool.read(segment)] == [float(n) for n in range(appended)]
    with pytest.raises(SpoolDiskFull):
        spool.append(big(999))  # still full: still nothing torn
    assert segment.stat().st_size == spool.size
    filler.unlink()  # room again: appending goes on in the same spool
    spool.append(big(appended))
    assert spool.disk_error is None
    again = Spool(tiny_disk / "spool", 1 << 30)
    again.open()
    got = [b.readings[0][3] for s in again.segments() for b in again.read(s)]
    assert got == [float(n) for n in range(appended + 1)]

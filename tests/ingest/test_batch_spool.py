"""What a batch costs the spool: a message that yields no readings is kept with only its head."""

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from ingest.batch import KEPT_HEAD_BYTES, Message, Processor
from ingest.decoders import PAYLOAD_TOO_LARGE
from ingest.spool import Spool
from pantau.mappings import default_mappings

NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def test_a_5_mb_payload_costs_the_spool_its_head_only(tmp_path: Path) -> None:
    huge = b'{"readings":{"pm25":' + b"1" * (5 << 20) + b"}}"
    good = b'{"readings":{"pm25":7}}'
    processor = Processor.from_settings(default_mappings(), 300, 7)
    batch = processor.batch(
        [
            Message("bekasi-json/setu/aq-1", huge, NOW, mid=1, qos=1, generation=3),
            Message("bekasi-json/setu/aq-2", good, NOW, mid=2, qos=1, generation=3),
        ]
    )
    # What is quarantined is unchanged: the head, with the whole payload's size and hash.
    (held,) = batch.quarantine
    assert held.reason == PAYLOAD_TOO_LARGE
    assert held.payload == huge[:KEPT_HEAD_BYTES]
    assert (held.size, held.sha256) == (len(huge), hashlib.sha256(huge).digest())
    # Both messages are still acknowledged; the one with readings keeps its whole payload.
    assert batch.acks == [(1, 1, 3), (2, 1, 3)]
    assert [m.payload for m in batch.messages] == [huge[:KEPT_HEAD_BYTES], good]
    assert [r[1] for r in batch.readings] == ["aq-2"]

    spool = Spool(tmp_path, 64 << 20)
    spool.open()
    spool.append(batch)
    # Two 4 KiB heads in base64 (the message's and the quarantined one's) and a little JSON;
    # with the whole payload kept in the message it was 7 MB (5 MB in base64).
    assert spool.size < 16 * 1024, spool.size
    (segment,) = spool.segments()
    (back,) = list(spool.read(segment))
    assert back.readings == batch.readings
    assert back.quarantine == batch.quarantine
    assert [m.payload for m in back.messages] == [huge[:KEPT_HEAD_BYTES], good]
    spool.close()


def test_a_message_without_readings_keeps_its_head_whatever_the_reason(tmp_path: Path) -> None:
    """Unmapped, or refused by its decoder: quarantined as before, kept in the batch as a head."""
    unmapped = b"x" * 100_000
    bad = b'{"readings":{"pm25":"' + b"y" * 100_000 + b'"}}'
    processor = Processor.from_settings(default_mappings(), 300, 7)
    batch = processor.batch(
        [Message("nowhere/at/all", unmapped, NOW), Message("bekasi-json/setu/aq-1", bad, NOW)]
    )
    assert [q.payload for q in batch.quarantine] == [unmapped, bad]  # whole, as before
    assert [m.payload for m in batch.messages] == [
        unmapped[:KEPT_HEAD_BYTES],
        bad[:KEPT_HEAD_BYTES],
    ]
    assert batch.readings == []

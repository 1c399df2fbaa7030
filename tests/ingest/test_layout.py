"""ingest/layout.py: a change of `ingest.processes` adopts the spools the old layout left and
records the sessions to retire (no servers: the drains are tested in test_retire.py)."""

from __future__ import annotations

from pathlib import Path

import orjson

from ingest.layout import Record, members, prepare
from pantau.settings import Settings


def _settings(spool: Path, processes: int, client_id: str = "pantau-1") -> Settings:
    settings = Settings(
        mqtt={"client_id": client_id},  # type: ignore[arg-type]
        ingest={"spool_dir": spool},  # type: ignore[arg-type]
    )
    # (tests/conftest.py sets PANTAU_INGEST__PROCESSES, which wins over init values)
    ingest = settings.ingest.model_copy(update={"processes": processes})
    return settings.model_copy(update={"ingest": ingest})


def _segment(directory: Path, number: int, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{number:012d}.spool"
    path.write_bytes(data)
    return path


def _contents(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.spool"))}


def test_members_match_the_pipelines(tmp_path: Path) -> None:
    one = members(_settings(tmp_path, 1))
    assert [(m.client_id, m.spool_dir) for m in one] == [("pantau-1", tmp_path)]
    two = members(_settings(tmp_path, 2))
    assert [(m.client_id, m.spool_dir) for m in two] == [
        ("pantau-1-0", tmp_path / "0"),
        ("pantau-1-1", tmp_path / "1"),
    ]


def test_two_to_one_adopts_both_spools_without_overwriting(tmp_path: Path) -> None:
    prepare(_settings(tmp_path, 2))  # the record of a two-process layout
    _segment(tmp_path, 1, b"own-1")  # the N = 1 spool already has a segment of its own
    _segment(tmp_path / "0", 1, b"zero-1")
    _segment(tmp_path / "0", 2, b"zero-2")
    _segment(tmp_path / "1", 1, b"one-1")
    (tmp_path / "1" / "dead").mkdir()
    (tmp_path / "1" / "dead" / "000000000001-0000000000-deadbeef.json").write_bytes(b"{}")

    prepared = prepare(_settings(tmp_path, 1))

    assert sorted(_contents(tmp_path).values()) == [b"one-1", b"own-1", b"zero-1", b"zero-2"]
    assert _contents(tmp_path)["000000000001.spool"] == b"own-1"  # never overwritten
    assert prepared.adopted_segments == 3
    assert not (tmp_path / "0").exists()  # retired directories removed once empty
    assert not (tmp_path / "1").exists()
    assert [p.name for p in (tmp_path / "dead").iterdir()] == [
        "000000000001-0000000000-deadbeef.json"
    ]
    assert sorted(prepared.retiring) == ["pantau-1-0", "pantau-1-1"]
    assert all(f.startswith("$share/pantau/") for f in prepared.retiring["pantau-1-0"])
    doc = orjson.loads((tmp_path / "layout.json").read_bytes())
    assert list(doc["sessions"]) == ["pantau-1"]
    assert sorted(doc["retiring"]) == ["pantau-1-0", "pantau-1-1"]


def test_one_to_two_and_four_to_two(tmp_path: Path) -> None:
    prepare(_settings(tmp_path, 1))
    _segment(tmp_path, 7, b"top")
    prepared = prepare(_settings(tmp_path, 2))
    assert _contents(tmp_path) == {}
    assert list(_contents(tmp_path / "0").values()) == [b"top"]
    assert list(prepared.retiring) == ["pantau-1"]

    prepare(_settings(tmp_path, 4))
    _segment(tmp_path / "2", 1, b"two")
    _segment(tmp_path / "3", 1, b"three")
    prepared = prepare(_settings(tmp_path, 2))
    assert sorted(_contents(tmp_path / "0").values()) == [b"top", b"two"]
    assert list(_contents(tmp_path / "1").values()) == [b"three"]
    # pantau-1 was never drained (no pipeline ran here): still to retire, with the new ones.
    assert sorted(prepared.retiring) == ["pantau-1", "pantau-1-2", "pantau-1-3"]


def test_unchanged_layout_does_nothing(tmp_path: Path) -> None:
    prepare(_settings(tmp_path, 2))
    Record(tmp_path).done("pantau-1")  # the guess of a first start (below), drained
    _segment(tmp_path / "0", 3, b"mine")
    prepared = prepare(_settings(tmp_path, 2))
    assert prepared.adopted_segments == 0
    assert prepared.retiring == {}
    assert _contents(tmp_path / "0") == {"000000000003.spool": b"mine"}


def test_a_session_back_in_the_layout_is_not_retired(tmp_path: Path) -> None:
    prepare(_settings(tmp_path, 2))
    Record(tmp_path).done("pantau-1")
    assert sorted(prepare(_settings(tmp_path, 1)).retiring) == ["pantau-1-0", "pantau-1-1"]
    assert list(prepare(_settings(tmp_path, 2)).retiring) == ["pantau-1"]


def test_done_forgets_only_that_session(tmp_path: Path) -> None:
    prepare(_settings(tmp_path, 3))
    prepare(_settings(tmp_path, 1))
    record = Record(tmp_path)
    record.done("pantau-1-1")
    assert sorted(record.retiring()) == ["pantau-1-0", "pantau-1-2"]
    # A restart before the others are done keeps them to retire.
    assert sorted(prepare(_settings(tmp_path, 1)).retiring) == ["pantau-1-0", "pantau-1-2"]


def test_without_a_record_the_spool_directories_tell(tmp_path: Path) -> None:
    """The first start after an upgrade: no layout.json yet."""
    _segment(tmp_path / "0", 1, b"zero")
    (tmp_path / "1").mkdir()
    prepared = prepare(_settings(tmp_path, 1))
    assert sorted(prepared.retiring) == ["pantau-1-0", "pantau-1-1"]
    assert list(_contents(tmp_path).values()) == [b"zero"]
    # Unknown whether the filters were shared: both forms are unsubscribed.
    assert any(f.startswith("$share/") for f in prepared.retiring["pantau-1-0"])
    assert any(not f.startswith("$share/") for f in prepared.retiring["pantau-1-0"])

    other = tmp_path / "other"
    _segment(other, 1, b"n1")
    prepared = prepare(_settings(other, 2))
    assert list(prepared.retiring) == ["pantau-1"]  # probed: one connection if it never was
    assert list(_contents(other / "0").values()) == [b"n1"]


def test_a_changed_client_id_retires_the_old_sessions(tmp_path: Path) -> None:
    prepare(_settings(tmp_path, 1, "pantau-abc123"))
    prepared = prepare(_settings(tmp_path, 1, "pantau-1"))
    assert list(prepared.retiring) == ["pantau-abc123"]

"""Text PostgreSQL can store: whatever a device sends, `visible` makes it storable and keeps
what was safe unchanged."""

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from ingest.text import topic_text, visible


@given(st.text())
def test_visible_text_has_no_nul_and_encodes(text: str) -> None:
    out = visible(text)
    assert "\x00" not in out
    out.encode("utf-8")  # no lone surrogate left
    if "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert out == text


def test_what_is_escaped_stays_readable() -> None:
    assert visible("t\x00") == "t\\u0000"
    assert visible("a\ud800b") == "a\\ud800b"
    assert visible("Cikarang Pusat · é") == "Cikarang Pusat · é"
    assert topic_text(b"bekasi/\xff/wl-1\x00") == "bekasi/\\xff/wl-1\\u0000"


def test_postgres_takes_it(database_url: str) -> None:
    nasty = "k\x00ey \ud800 \udfff end"
    with psycopg.connect(database_url) as conn:
        (back,) = conn.execute("SELECT %s::text", (visible(nasty),)).fetchone() or ("",)
    assert back == "k\\u0000ey \\ud800 \\udfff end"

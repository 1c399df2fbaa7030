"""Text that PostgreSQL can store: U+0000 and lone surrogates are escaped visibly (`\\u0000`).

PostgreSQL's text type refuses NUL and psycopg cannot encode a lone surrogate to UTF-8; either
in a quarantine row would fail the whole transaction, so every text that came from a device
(topics, keys copied into a detail) passes through `visible` before it reaches a text column.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def visible(text: str) -> str:
    """`text` with NUL and lone surrogates written as `\\uXXXX`; unchanged (and fast) when it
    holds neither."""
    if "\x00" not in text:
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return text
    return _UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def topic_text(raw: bytes) -> str:
    """A topic as text: invalid UTF-8 (which MQTT forbids and brokers should refuse) is kept
    visible as `\\xNN` escapes instead of failing the message."""
    return visible(raw.decode("utf-8", "backslashreplace"))

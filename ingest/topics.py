"""Topic patterns: which mapping reads a topic, and the segments it captures."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pantau.mappings import MappingSettings, topic_filter

_VAR = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")
_CACHE_LIMIT = 200_000  # distinct topics remembered; a regency has far fewer


@dataclass(frozen=True)
class Pattern:
    """A compiled topic pattern: literal segments, named {captures}, + and a final #."""

    segments: tuple[tuple[str, str | None], ...]  # (literal or "+" or "#", capture name)

    @classmethod
    def compile(cls, pattern: str) -> Pattern:
        out = []
        for segment in pattern.split("/"):
            var = _VAR.match(segment)
            out.append(("+", var[1]) if var else (segment, None))
        return cls(tuple(out))

    def match(self, levels: Sequence[str]) -> dict[str, str] | None:
        captured: dict[str, str] = {}
        for i, (literal, name) in enumerate(self.segments):
            if literal == "#":
                return captured
            if i >= len(levels):
                return None
            level = levels[i]
            if name is not None:
                if not level:
                    return None
                captured[name] = level
            elif literal != "+" and literal != level:
                return None
        return captured if len(levels) == len(self.segments) else None


def covers(wide: str, narrow: str) -> bool:
    """Whether every topic that filter `narrow` matches is matched by filter `wide` too."""
    a, b = wide.split("/"), narrow.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(b) or b[i] == "#" or (level != "+" and (b[i] == "+" or level != b[i])):
            return False
    return len(a) == len(b)


class Router:
    """First mapping (in configuration order) whose pattern matches a topic wins."""

    def __init__(self, mappings: Sequence[MappingSettings]) -> None:
        self.mappings = list(mappings)
        self._patterns = [Pattern.compile(m.topic) for m in self.mappings]
        self._cache: dict[str, tuple[int, dict[str, str]] | None] = {}

    def filters(self, shared_group: str | None = None) -> list[str]:
        """The MQTT subscriptions that cover every mapping, without repeats, and without a
        filter another one covers (bekasi/+/+/status under bekasi/+/+/+): overlapping
        subscriptions would have the broker deliver such a message once per filter."""
        seen = list(dict.fromkeys(topic_filter(m.topic) for m in self.mappings))
        kept = [
            f
            for i, f in enumerate(seen)
            if not any(covers(other, f) for j, other in enumerate(seen) if j != i)
        ]
        prefix = f"$share/{shared_group}/" if shared_group else ""
        return [prefix + f for f in kept]

    def route(self, topic: str) -> tuple[int, dict[str, str]] | None:
        """(index of the mapping, captured segments), or None when no mapping matches."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        levels = topic.split("/")
        found = None
        for index, pattern in enumerate(self._patterns):
            captured = pattern.match(levels)
            if captured is not None:
                found = (index, captured)
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = found
        return found

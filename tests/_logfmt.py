"""A strict logfmt parser for the tests, written from the format (go-logfmt), not from exporter/logfmt.py.

A line is ``key=value`` pairs separated by single spaces; a key is one or more characters other than
space, ``=`` and ``"``; a value is bare (no space, ``=`` or ``"``) or a double-quoted string whose
escapes are JSON's (``\\"`` ``\\\\`` ``\\n`` ``\\t`` ``\\uXXXX``), so ``json.loads`` decodes it.
"""

from __future__ import annotations

import json
import re

_PAIR = re.compile(r'([^\s="]+)=("(?:[^"\\\x00-\x1f]|\\.)*"|[^\s="]*)(?: |$)')


class NotLogfmt(ValueError):
    pass


def parse(line: str) -> dict[str, str]:
    """The pairs of one line; raises NotLogfmt when any part of it is not a pair."""
    if not line.isprintable():  # a raw tab, CR, U+2028...: a log viewer may break or hide it
        raise NotLogfmt(f"unprintable character in {line!r}")
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        m = _PAIR.match(line, pos)
        if m is None:
            raise NotLogfmt(f"not logfmt at column {pos}: {line!r}")
        key, value = m.group(1), m.group(2)
        if key in pairs:
            raise NotLogfmt(f"duplicate key {key!r}: {line!r}")
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise NotLogfmt(f"bad quoted value for {key!r} ({exc}): {line!r}") from None
        pairs[key] = value
        pos = m.end()
    if not pairs or line.endswith(" "):
        raise NotLogfmt(f"empty or trailing space: {line!r}")
    return pairs


def records(text: str) -> list[dict[str, str]]:
    """Every line of a log (split on \\n only: a record must never hold one), each parsed."""
    return [parse(line) for line in text.split("\n") if line]

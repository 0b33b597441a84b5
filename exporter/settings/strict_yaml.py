"""Strict YAML reading shared by the config (config.py) and the web config (web_config.py).

Why one strict reader: both files are edited by hand, reloaded while the exporter runs, and the web
config holds credentials. PyYAML's SafeLoader accepts things that silently change meaning or take
the process down, so this reader refuses them with one line each:

* duplicate keys (the second ``kinds:`` or user would silently win);
* aliases, and with them merge keys ``<<`` and the "billion laughs" expansion bomb;
* nesting deeper than MAX_NESTING (the composer recurses per level: 64 KiB of ``[`` would end in a
  RecursionError), unhashable keys, values Python cannot convert (a 5000-digit int);
* files over the caller's size cap and files that are not UTF-8;
* paths that are not regular files (a FIFO, a device, a directory, a socket), at once: see
  :func:`read_regular`.

Example: ``load("a: 1\\na: 2\\n")`` raises ``YamlRefused("invalid YAML: line 2: duplicate key 'a'")``;
the caller prefixes the file name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable
from typing import Any

import yaml

#: Nodes deep (the top mapping is 1). Our schemas need 4 (per_process -> labels -> item).
MAX_NESTING = 8
#: Bad values and keys are shown with repr(), cut to this many characters: one line, readable.
MAX_SHOWN = 60


class YamlRefused(Exception):
    """A file this reader will not accept. str() is one line, without the file name."""


def show(value: Any) -> str:
    """repr() cut to MAX_SHOWN characters: a 60 KB string or a key holding a newline stays one short line."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, duplicate and unhashable keys, deep nesting and bad values."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(None, None, "YAML aliases are not allowed", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_NESTING} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. int() refusing more than 4300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"bad value ({str(exc)[:MAX_SHOWN]})", node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse YAML text strictly; every refusal is a one-line YamlRefused."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlRefused(one_line(f"invalid YAML: {at}{problem}")) from None
    except RecursionError:  # MAX_NESTING stops the composer first; this is the belt to those braces
        raise YamlRefused("invalid YAML: nested too deeply") from None


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


def read_regular(path: str, max_bytes: int) -> bytes:
    """Up to ``max_bytes + 1`` bytes of a regular file; anything else is refused at once, one line.

    Why ``O_NONBLOCK`` then ``fstat``, not ``open()`` then ``read()``: opening a FIFO for reading
    blocks until a writer comes (forever, and a reload thread with it), and ``/dev/zero`` or a tty
    reads without end or blocks. Opened non-blocking, a FIFO or device open returns at once, and the
    fstat of *that* descriptor (no race with a rename between a stat and the open) says what it is.
    The flag stays on for the read: regular files ignore it, and a pseudo-file that calls itself
    regular but would block (some /proc and /sys files) fails with EAGAIN instead of hanging.

    >>> for path in ("/dev/zero", "/"):
    ...     try:
    ...         read_regular(path, 10)
    ...     except YamlRefused as exc:
    ...         print(exc)
    not a regular file: a character device
    not a regular file: a directory
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise YamlRefused(f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise YamlRefused(f"not a regular file: {what}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise YamlRefused(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_capped(path: str, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and text, refusing unreadable, oversized, non-regular and non-UTF-8 files."""
    raw = read_regular(path, max_bytes)
    if len(raw) > max_bytes:
        raise YamlRefused(f"file larger than {max_bytes} bytes; refusing to parse it")
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"not UTF-8 at byte {exc.start}") from None

"""Fuzzing the parsers: garbage in gives the typed error (or an exact result), never a crash or a hang.

Netlink dumps are built message by message with every field free to go wrong and checked against an
oracle (tests/_fuzz.py says why); /proc/net lines, fake /proc/PID trees and comm contents are checked
for exact results where the right answer is known and for "typed error or result" everywhere else.
Every call runs under :func:`tests._fuzz.bounded`, which turns a loop that never ends into a failure.
Profile: derandomized, no example database, so CI runs the same examples every time (~15 s).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.model.table import Table
from exporter.owners.scan import parse_comm, scan_owners
from exporter.settings.config import ConfigError, parse_config
from exporter.sources.procfs import parse_unix_lines, read_tables
from exporter.sources.procfs_lines import ProcParseError, parse_inet_lines
from tests._fuzz import bounded, decoded, dump, reference
from tests.test_procfs_net import TCP_HEADER, TCP_ROW, UNIX_HEADER, UNIX_ROW

FUZZ = settings(deadline=None, derandomize=True, database=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.data(), st.sampled_from(list(Table)))
def test_netlink_dump_decodes_exactly_as_netlink_7_says(data: st.DataObject, table: Table) -> None:
    chunks = data.draw(dump(table))
    assert decoded(chunks, table) == reference(chunks, table)


@FUZZ
@given(st.data(), st.sampled_from(list(Table)))
def test_netlink_dump_cut_anywhere_is_a_typed_error_or_a_result(data: st.DataObject, table: Table) -> None:
    """Chunks cut mid-message (a truncated recv, an oversized nlmsg_len): typed error, never a crash."""
    blob = b"".join(data.draw(dump(table)))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(blob)), max_size=5)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    result = decoded(chunks, table)
    assert isinstance(result, list) or result[0] in ("error", "interrupted")


# -- /proc/net ---------------------------------------------------------------------------------------
#: Lines no parser may accept as a socket entry: fewer fields than any entry has.
GARBAGE = st.one_of(st.integers(0, 200).map(lambda n: b"\0" * n),
                    st.binary(max_size=80).map(lambda b: b.translate(None, b" \t\n\r\x0b\x0c")),
                    st.integers(0, 8).map(lambda n: b" ".join((TCP_ROW % (0, 1, 1)).split()[:n])))
ROWS = st.lists(st.tuples(st.sampled_from([1, 2, 6, 8, 10]), st.integers(0, 2**32 - 1)), max_size=8)


@FUZZ
@given(ROWS, GARBAGE, st.integers(0, 8))
def test_proc_inet_garbage_line_is_reported_at_its_line(rows: list[tuple[int, int]], bad: bytes, at: int) -> None:
    lines = [TCP_HEADER] + [TCP_ROW % (i, s, ino) for i, (s, ino) in enumerate(rows)]
    at = 1 + at % len(lines)
    lines.insert(at, bad)
    with bounded(), pytest.raises(ProcParseError) as err:
        parse_inet_lines(lines, Table.TCP4)
    assert err.value.lineno == at + 1 and err.value.path == "/proc/net/tcp"


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=10), st.sampled_from(list(Table)))
def test_proc_random_lines_parse_or_raise_the_typed_error(lines: list[bytes], table: Table) -> None:
    header = UNIX_HEADER if table is Table.UNIX else TCP_HEADER
    try:
        with bounded():
            if table is Table.UNIX:
                got = sum(map(len, parse_unix_lines([header, *lines])))
            else:
                got = len(parse_inet_lines([header, *lines], table))
    except ProcParseError as exc:
        assert 2 <= exc.lineno <= len(lines) + 1
    else:
        assert got <= len(lines)


@FUZZ
@given(st.lists(st.one_of(st.tuples(st.sampled_from([b"0001", b"0002", b"0005"]), st.integers(0, 2**32 - 1),
                                    st.sampled_from([b"", b" /run/a.sock", b" @abstract", b" /a b"])),
                          GARBAGE), max_size=10))
def test_proc_unix_garbage_is_continuation_only_after_a_path(lines: list[tuple[bytes, int, bytes] | bytes]) -> None:
    text, entries, in_path, error_at = [UNIX_HEADER], 0, False, None
    for i, line in enumerate(lines):
        if isinstance(line, tuple):
            text.append(UNIX_ROW % line[:2] + line[2])
            entries, in_path = entries + 1, bool(line[2])
        else:
            text.append(line)
            if not in_path and error_at is None:
                error_at = i + 2
    with bounded():
        if error_at is None:
            assert sum(map(len, parse_unix_lines(text))) == entries
        else:
            with pytest.raises(ProcParseError) as err:
                parse_unix_lines(text)
            assert err.value.lineno == error_at


def test_nul_filled_proc_files_raise_the_typed_error(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    for table in Table:
        (tmp_path / "net" / table.value).write_bytes(b"\0" * 4096)
        with pytest.raises(ProcParseError, match="line 1"):
            read_tables(str(tmp_path), [table])


# -- /proc/PID/fd and comm -----------------------------------------------------------------------------
TARGETS = st.one_of(st.integers(1, 12).map(lambda i: f"socket:[{i}]"),
                    st.sampled_from(["socket:[]", "socket:[12a]", "socket:[99999999999999999999]", "socket:[007]",
                                     "socket:[\u0663]", "pipe:[3]", "/dev/null", "anon_inode:[eventfd]"]),
                    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), min_size=1,
                            max_size=30))
FD = st.one_of(TARGETS, st.sampled_from([None, "dir"]))  # None: a regular file, "dir": a directory
PROCESS = st.tuples(st.one_of(st.none(), st.lists(FD, max_size=5)),  # None: exited, no fd dir left
                    st.one_of(st.none(), st.binary(max_size=24)))  # comm content, None: no comm file
SOCKET_LINK = re.compile(r"socket:\[([0-9]+)\]")


@settings(FUZZ, max_examples=60)
@given(st.dictionaries(st.integers(1, 60), PROCESS, max_size=12), st.sets(st.integers(0, 12), max_size=8),
       st.lists(st.sampled_from(["self", "net", "sys", "1a", "-1", " 2", "\u0663"]), max_size=3))
def test_owner_scan_of_odd_trees_is_exact(
    tree: dict[int, tuple[list[str | None] | None, bytes | None]], wanted: set[int], others: list[str]
) -> None:
    """Vanished pids (no fd dir), vanished and odd fds, odd link targets and comm values: the lowest
    pid holding each wanted inode, comm for the owners, nothing raised."""
    with tempfile.TemporaryDirectory() as root:
        for name in others:
            os.makedirs(f"{root}/{name}", exist_ok=True)
        for pid, (fds, comm) in tree.items():
            os.makedirs(f"{root}/{pid}")
            if comm is not None:
                Path(f"{root}/{pid}/comm").write_bytes(comm)
            if fds is not None:
                os.makedirs(f"{root}/{pid}/fd")
                for fd, target in enumerate(fds):
                    path = f"{root}/{pid}/fd/{fd}"
                    if target is None:
                        Path(path).write_bytes(b"")
                    elif target == "dir":
                        os.mkdir(path)
                    else:
                        os.symlink(target, path)
        with bounded():
            scan = scan_owners(root, wanted)
    owner: dict[int, int] = {}
    for pid in sorted(tree):
        for target in tree[pid][0] or []:
            match = SOCKET_LINK.fullmatch(target or "")
            if match and int(match[1]) in wanted - {0}:
                owner.setdefault(int(match[1]), pid)
    assert scan.owner == owner
    owners = set(owner.values())
    assert scan.comm == {pid: parse_comm(tree[pid][1] or b"") for pid in owners if tree[pid][1] is not None}
    assert not any(ord(c) < 32 or ord(c) == 127 for name in scan.comm.values() for c in name)


@settings(FUZZ, max_examples=500)
@given(st.binary(max_size=40))
def test_comm_of_any_bytes_is_one_printable_line(raw: bytes) -> None:
    name = parse_comm(raw)
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    assert len(name) <= len(raw)


def test_owner_scan_skips_names_that_are_digits_only_to_unicode(tmp_path: Path) -> None:
    """Regression: ``name.isdigit()`` is true for '²' (U+00B2), which int() refuses; scan_owners raised
    ValueError, which scrape.py does not catch (it expects OSError), so a --path.procfs tree holding
    such a name failed the whole scrape (HTTP 500) instead of skipping the name."""
    (tmp_path / "\u00b2").mkdir()
    (tmp_path / "5" / "fd").mkdir(parents=True)
    os.symlink("socket:[7]", tmp_path / "5" / "fd" / "3")
    assert scan_owners(str(tmp_path), {7}).owner == {7: 5}


# -- the YAML config -------------------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=12),
                    st.sampled_from(["tcp", "all", "pid", "process", "proc", "info", ":9731", "/m"]))
ANY = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(SCALARS, kids, max_size=3),
                   max_leaves=12)


def _shaped(**fields: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """A mapping with some of the schema's keys (each value well-typed or anything) plus stray keys."""
    known = st.fixed_dictionaries({}, optional={k: st.one_of(v, ANY) for k, v in fields.items()})
    return st.one_of(ANY, st.tuples(known, st.dictionaries(SCALARS, ANY, max_size=1)).map(
        lambda kd: {**kd[1], **kd[0]}))


def _items(*good: str) -> st.SearchStrategy[object]:
    return st.lists(st.one_of(st.sampled_from(good), ANY), max_size=3)


CONFIGS = _shaped(kinds=_items("tcp", "udp6", "all"), source=st.sampled_from(["auto", "proc"]),
                  per_process=_shaped(enabled=st.booleans(), labels=_items("pid", "process"),
                                      max_owners=st.integers(-2, 10**30)),
                  web=_shaped(listen_address=st.sampled_from([":9731", "[::1]:1", ":99999", ":\u00b2"]),
                              telemetry_path=st.sampled_from(["/m", "/", "x"])),
                  path=_shaped(procfs=st.text(max_size=5)), log=_shaped(level=st.sampled_from(["info", "x"])))


@settings(FUZZ, max_examples=500)
@given(st.one_of(CONFIGS.map(yaml.safe_dump), st.text(max_size=200)))
def test_any_yaml_gives_a_config_or_a_one_line_config_error(text: str) -> None:
    """Whatever the document (lists as kinds items, mappings as keys, 31-digit ints...): a Config or
    the one-line ConfigError a reload logs, never another exception that would take reload down."""
    try:
        with bounded():
            parse_config(text, "f.yml")
    except ConfigError as exc:
        assert str(exc).startswith("f.yml: ") and str(exc).isprintable() and len(str(exc)) < 400

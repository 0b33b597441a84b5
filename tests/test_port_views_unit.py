"""Pure parts of the listeners, ports and ephemeral views: counting rules, bounds, config. No root.

The rules are checked against a plain per-socket re-statement written here (loops over Python rows),
which is what the columnar code must equal; the system tests (test_listeners_ports.py) hold both to ss.
"""

from __future__ import annotations

import socket
from array import array
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.aggregate.ephemeral import ephemeral_use
from exporter.aggregate.listeners import DropsCounter, ListenQueues, cap_listeners
from exporter.aggregate.ports import count_ports
from exporter.model.table import InetColumns, ListenTable, SocketTable, Table, status_name
from exporter.settings.config import ConfigError, parse_config
from exporter.sources.procfs_inet import listeners_of, parse_inet_detail_lines
from exporter.sources.procfs_lines import ProcParseError
from exporter.sources.sysctl import parse_port_range, parse_reserved

Row = tuple[int, int, int, int, int, int]  # state, sport, dport, rqueue, wqueue, remote address word
rows_st = st.lists(st.tuples(st.sampled_from([1, 2, 3, 6, 8, 10, 12, 13]), st.integers(0, 12), st.integers(0, 12),
                             st.integers(0, 3), st.integers(0, 3), st.integers(1, 3)), max_size=80)


def table(rows: list[Row], t: Table = Table.TCP4) -> SocketTable:
    """Ports drawn from a small set (mapped onto 1000 + n) so that listeners, clients and folds collide."""
    width = 1 if t is Table.TCP4 else 4
    cols = InetColumns(array("H", [1000 + r[1] for r in rows]), array("H", [1000 + r[2] if r[0] != 10 else 0
                                                                              for r in rows]),
                       array("I", [r[3] for r in rows]), array("I", [r[4] for r in rows]),
                       tuple(array("I", [7] * len(rows)) for _ in range(width)),
                       tuple(array("I", [r[5] for r in rows]) for _ in range(width)))
    return SocketTable(t, socket.SOCK_STREAM, bytes(r[0] for r in rows), array("I", range(len(rows))), cols)


def restated(tables: list[SocketTable]) -> tuple[Counter[tuple[str, str, Table, str]], Counter[tuple[str, str, Table]]]:
    listened = {sp for t in tables for s, sp in zip(t.states, t.inet.sports, strict=True) if s == 10}  # type: ignore[union-attr]
    conns: Counter[tuple[str, str, Table, str]] = Counter()
    rx: Counter[tuple[str, str, Table]] = Counter()
    for t in tables:
        assert t.inet is not None
        for s, sp, dp, rq in zip(t.states, t.inet.sports, t.inet.dports, t.inet.rqueue, strict=True):
            key = ("inbound", str(sp)) if sp in listened else ("outbound", str(dp))
            conns[(*key, t.table, status_name(t.table, s))] += 1
            if s != 10:
                rx[(*key, t.table)] += rq
    return conns, rx


@settings(max_examples=200, deadline=None)
@given(rows_st, rows_st)
def test_ports_equal_the_per_socket_rule_when_nothing_folds(v4: list[Row], v6: list[Row]) -> None:
    tables = [table(v4), table(v6, Table.TCP6)]
    got = count_ports(tables, max_ports=1000)
    conns, rx = restated(tables)
    assert got.connections == dict(conns) and got.folded == 0
    assert got.receive_bytes == dict(rx)


@settings(max_examples=200, deadline=None)
@given(rows_st, rows_st, st.integers(0, 5), st.lists(st.integers(1000, 1012), max_size=3, unique=True))
def test_folding_keeps_sums_exact_and_bounds_the_ports(v4: list[Row], v6: list[Row], cap: int,
                                                        always: list[int]) -> None:
    tables = [table(v4), table(v6, Table.TCP6)]
    got = count_ports(tables, always, cap)
    per_status: Counter[tuple[Table, str]] = Counter()
    for (_d, _p, t, s), n in got.connections.items():
        per_status[(t, s)] += n
    want: Counter[tuple[Table, str]] = Counter()
    for t in tables:
        for s in t.states:
            want[(t.table, status_name(t.table, s))] += 1
    assert per_status == want
    named = {(d, p) for d, p, _, _ in got.connections if p != "other"}
    assert len({k for k in named if int(k[1]) not in always}) <= cap
    conns, _ = restated(tables)
    for key in conns:  # every socket of an `always` port keeps its port
        if int(key[1]) in always:
            assert got.connections[key] == conns[key]
    assert sum(got.receive_bytes.values()) == sum(rq for t in tables if t.inet for s, rq in
                                                  zip(t.states, t.inet.rqueue, strict=True) if s != 10)


def test_ephemeral_counts_ports_in_range_per_tuple_and_skips_reserved() -> None:
    rows = [(6, 5, 1, 0, 0, 1), (1, 6, 1, 0, 0, 1), (1, 7, 1, 0, 0, 2), (10, 8, 0, 0, 0, 1), (1, 9, 1, 0, 0, 1)]
    use = ephemeral_use([table(rows)], 1005, 1009, {1009}, top=5)
    assert use.range_size == 4
    assert use.max_in_use == 2  # 1005 (TIME_WAIT) and 1006 towards address 1; 1009 reserved; LISTEN never
    assert [(k[3], n) for k, n in use.top] == [(1001, 2), (1001, 1)]
    assert ephemeral_use([table(rows)], 1005, 1009, set(), top=0).top == []


@pytest.mark.parametrize(("text", "error"), [("1 2 3", "two port numbers"), ("9 5", "not a range"),
                                             ("0 5", "not a range"), ("a b", "two port numbers")])
def test_bad_port_range_is_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_port_range(text)


def test_reserved_ports_parse_and_refuse() -> None:
    assert parse_reserved("\n") == set() and parse_reserved("1,3-4") == {1, 3, 4}
    with pytest.raises(ValueError, match="bad item"):
        parse_reserved("1,x")


def listen(ids: list[int], drops: list[int], port: int = 80) -> ListenTable:
    n = len(ids)
    return ListenTable(Table.TCP4, array("H", [port] * n), array("I", [0] * n), array("I", [3] * n),
                       array("I", drops), array("Q", ids))


def test_drops_counter_never_decreases_across_restarts_and_reuseport_groups() -> None:
    c = DropsCounter()
    seen = [c.update("", [listen([1, 2], [5, 5])])[Table.TCP4][80],  # a reuseport pair: 10
            c.update("", [listen([1, 2], [6, 9])])[Table.TCP4][80],  # +1 +4
            c.update("", [listen([2], [9])])[Table.TCP4][80],  # one member closed: no decrease
            c.update("", [listen([], [])])[Table.TCP4].get(80),  # no listener: no series
            c.update("", [listen([3], [2])])[Table.TCP4][80]]  # restarted: continues
    assert seen == [10, 15, 15, None, 17]
    assert c.update("other-netns", [listen([3], [2])]) == {Table.TCP4: {80: 2}}  # scopes never mix
    unknown = ListenTable(Table.TCP4, array("H", [80]), array("I", [0]), None, None, array("Q", [9]))
    assert c.update("", [unknown]) == {}


HEADER = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"


def test_proc_detail_reads_ports_queues_and_v6_addresses() -> None:
    v6 = (b"   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
          b"00000000:00000005 00:00000000 00000000     0        0 4242 1")
    t = parse_inet_detail_lines([HEADER, v6], Table.TCP6)
    assert t.inet is not None and t.inet.sports.tolist() == [8080] and t.inet.rqueue.tolist() == [5]
    addr = b"".join(w[0].to_bytes(4, "little") for w in t.inet.src)
    assert socket.inet_ntop(socket.AF_INET6, addr) == "::1"
    lt = listeners_of(t)
    assert (lt.sports.tolist(), lt.rqueue.tolist(), lt.limits, lt.drops) == ([8080], [5], None, None)


@pytest.mark.parametrize("line", [
    b"   0: 0100007F:1F90 0000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 1 1",  # short address
    b"   0: 0100007F:1F90 00000000:0000 0A 00000000-00000000 00:00000000 00000000  0  0 1 1",  # queues
    b"   0: 0100007F:XYZ0 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0  0 1 1",  # port
])
def test_proc_detail_refuses_bad_lines_with_their_number(line: bytes) -> None:
    with pytest.raises(ProcParseError, match="line 2"):
        parse_inet_detail_lines([HEADER, line], Table.TCP4)


@pytest.mark.parametrize(("text", "error"), [
    ("ports: {max_ports: -1}\n", "ports.max_ports: got -1; want an integer 0..1000"),
    ("ports: {always: [80, 80]}\n", "ports.always: port 80 listed twice"),
    ("ports: {always: [70000]}\n", "ports.always[0]: got 70000; want an integer 1..65535"),
    ("ports: {always: 80}\n", "ports.always: got 80 (int); want a list of port numbers"),
    ("ports: {enabled: yes please}\n", "ports.enabled: got 'yes please' (str); want true or false"),
    ("listeners: {enable: true}\n", "listeners.enable: unknown key; allowed here: enabled, max_ports"),
    ("ephemeral: {top: 101}\n", "ephemeral.top: got 101; want an integer 0..100"),
    ("ephemeral: []\n", "ephemeral: got [] (list); want a mapping"),
])
def test_bad_view_config_is_one_line_naming_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yml")
    assert str(info.value) == f"x.yml: {error}"


def test_view_config_defaults_off_and_parses() -> None:
    c = parse_config("ports: {enabled: true, always: [443], max_ports: 0}\n", "x.yml")
    assert (c.listeners.enabled, c.ports.enabled, c.ports.always, c.ports.max_ports, c.ephemeral.top) == (
        False, True, (443,), 0, 5)


def test_listener_cap_keeps_saturated_and_dropping_ports_first() -> None:
    t4, t6 = Table.TCP4, Table.TCP6
    lengths = {t4: {p: 0 for p in range(2000, 4000)} | {3999: 9, 3998: 2}, t6: {p: 0 for p in range(10, 20)}}
    limits = {t4: dict.fromkeys(lengths[t4], 128) | {3999: 8}, t6: dict.fromkeys(lengths[t6], 128)}
    queues = ListenQueues(lengths, limits)
    drops = {t4: dict.fromkeys(lengths[t4], 0) | {3000: 7}, t6: dict.fromkeys(lengths[t6], 0)}
    kept = cap_listeners(queues, drops, 5)
    assert {(t, p) for t, ports in queues.length.items() for p in ports} == {
        (t4, 3999), (t4, 3000), (t6, 10), (t6, 11), (t6, 12)}  # full, dropping, then the lowest ports
    assert kept[t4] == {3999: 0, 3000: 7} and queues.folded == 2010 - 5
    assert set(queues.limit[t4]) == {3999, 3000}

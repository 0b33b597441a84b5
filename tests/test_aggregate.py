"""Aggregation rules: zeros for every possible series, lowest-pid owners, buckets, the owner cap."""

from __future__ import annotations

import socket
from array import array

from exporter.aggregate.counts import count_by_owner, count_totals
from exporter.model.kinds import possible_series, tables_for
from exporter.model.table import SocketTable, Table

LISTEN, ESTAB, TIME_WAIT, CLOSE_WAIT = 10, 1, 6, 8
STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM


def tcp4(states: list[int], inodes: list[int]) -> SocketTable:
    return SocketTable(Table.TCP4, STREAM, bytes(states), array("I", inodes))


def test_totals_include_zero_series_and_map_states() -> None:
    tables = [tcp4([LISTEN, ESTAB, TIME_WAIT, 12, 13], [1, 2, 0, 0, 5]),
              SocketTable(Table.UDP4, DGRAM, bytes([7, 1]), array("I", [8, 9]))]
    totals = count_totals(tables, [Table.TCP4, Table.UDP4])
    assert set(totals) == set(possible_series([Table.TCP4, Table.UDP4]))
    assert totals[(Table.TCP4, STREAM, "LISTEN")] == 1
    assert totals[(Table.TCP4, STREAM, "SYN_RECV")] == 1  # NEW_SYN_RECV
    assert totals[(Table.TCP4, STREAM, "CLOSE")] == 1  # BOUND_INACTIVE
    assert totals[(Table.TCP4, STREAM, "CLOSING")] == 0
    assert totals[(Table.UDP4, DGRAM, "NONE")] == 2
    assert sum(totals.values()) == 7


def test_possible_series_for_all_is_27() -> None:
    assert len(possible_series(tables_for(["all"]))) == 2 * 11 + 2 + 3


def test_owner_split_sums_to_totals_with_buckets() -> None:
    tables = [tcp4([LISTEN, ESTAB, ESTAB, TIME_WAIT, CLOSE_WAIT], [1, 2, 3, 0, 99])]
    owner = {1: 100, 2: 100, 3: 200}
    counts = count_by_owner(tables, owner, {100: "nginx", 200: "curl"}, ["pid", "process"], 10)
    assert counts.by_owner == {
        ((Table.TCP4, STREAM, "LISTEN"), ("100", "nginx")): 1,
        ((Table.TCP4, STREAM, "ESTABLISHED"), ("100", "nginx")): 1,
        ((Table.TCP4, STREAM, "ESTABLISHED"), ("200", "curl")): 1,
        ((Table.TCP4, STREAM, "TIME_WAIT"), ("unowned", "(unowned)")): 1,
        ((Table.TCP4, STREAM, "CLOSE_WAIT"), ("unowned", "(unowned)")): 1,
    }
    assert counts.unowned_no_inode == 1 and counts.unowned_not_found == 1
    assert sum(counts.by_owner.values()) == len(tables[0])


def test_cap_folds_smallest_owners_into_other() -> None:
    tables = [tcp4([ESTAB] * 6, [1, 2, 3, 4, 5, 6])]
    owner = {1: 10, 2: 10, 3: 10, 4: 20, 5: 20, 6: 30}
    counts = count_by_owner(tables, owner, {}, ["pid"], 2)
    key = (Table.TCP4, STREAM, "ESTABLISHED")
    assert counts.by_owner == {(key, ("10",)): 3, (key, ("20",)): 2, (key, ("other",)): 1}
    assert counts.owners_folded == 1


def test_process_label_only_merges_pids_with_same_comm() -> None:
    tables = [tcp4([ESTAB] * 3, [1, 2, 3])]
    counts = count_by_owner(tables, {1: 10, 2: 11, 3: 12}, {10: "worker", 11: "worker", 12: "db"}, ["process"], 5)
    key = (Table.TCP4, STREAM, "ESTABLISHED")
    assert counts.by_owner == {(key, ("worker",)): 2, (key, ("db",)): 1}

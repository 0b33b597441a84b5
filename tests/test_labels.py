"""Owner label values: escaped in the exposition, valid UTF-8, capped, and never duplicated by the cap.

The process name is set by the process itself (``prctl(PR_SET_NAME)`` or writing /proc/self/comm),
so it can hold quotes, backslashes, newlines and invalid UTF-8; with ``--path.procfs`` pointing at a
copied tree it can be anything at all. One test runs a real process with such a name in a namespace
and reads the real exposition; the property test feeds arbitrary strings (lone surrogates included)
straight into the collector.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from exporter.aggregate.counts import Counts
from exporter.exposition.sockets import MAX_LABEL_LENGTH, SocketMetricsCollector
from exporter.model.table import Table
from exporter.owners.scan import OwnerScan, parse_comm
from exporter.pipeline.collection import Collection, Pipeline
from exporter.pipeline.single_flight import SharedCollection
from exporter.pipeline.state import ExporterState
from exporter.settings.config import Config, PerProcessConfig
from tests._require import require_tool
from tests.exposition import run_once, samples
from tests.netns import Netns

ODD_COMM = b'q"\\\n\xff\tz{}=,xxxxxxxx'  # the kernel keeps 15 bytes: q " \ LF 0xff TAB z { } = , x x x x
_HOLDER = r"""
import socket, sys, time
with open("/proc/self/comm", "wb") as f:
    f.write(bytes.fromhex(sys.argv[1]))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(120)
"""
KEY = (Table.TCP4, 1, "LISTEN")


def exposition(owners: dict[str, int], labels: tuple[str, ...] = ("process",)) -> str:
    """The collector's text for one LISTEN series split between owners named ``owners`` (pids 1..n)."""
    config = Config(kinds=("tcp4",), per_process=PerProcessConfig(labels=labels))
    by_owner = {(KEY, tuple(str(pid) if label == "pid" else name for label in labels)): n
                for pid, (name, n) in enumerate(owners.items(), 1)}
    counts = Counts(totals={KEY: sum(owners.values())}, by_owner=by_owner)
    collection = Collection(config=config, counts=counts, source_of={Table.TCP4: "netlink"}, owner_scan=OwnerScan())
    state = ExporterState(config, Pipeline(config), SharedCollection(lambda: collection))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SocketMetricsCollector(lambda: state))
    return generate_latest(registry).decode("utf-8")  # strict: raises on anything that is not UTF-8


def test_real_process_with_hostile_name_round_trips(netns: Netns) -> None:
    holder = netns.popen([sys.executable, "-c", _HOLDER, ODD_COMM.hex()], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip().isdigit()
    text = run_once(netns, "--source", "netlink")
    expected = parse_comm(ODD_COMM[:15] + b"\n")
    assert expected == 'q"\\?\ufffd?z{}=,xxxx'
    rows = [labels for labels, _ in samples(text)["socket_process_connections"] if labels["pid"] == str(holder.pid)]
    assert [r["process"] for r in rows] == [expected] and rows[0]["status"] == "LISTEN"
    assert f'pid="{holder.pid}",process="q\\"\\\\?\ufffd?z{{}}=,xxxx"' in text  # escaped: \" and \\
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


NAMES = st.lists(st.integers(0, 0x10FFFF), max_size=MAX_LABEL_LENGTH + 40).map(lambda cs: "".join(map(chr, cs)))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(NAMES, st.integers(1, 5), min_size=1, max_size=4))
def test_any_owner_name_is_escaped_capped_and_parses_back(owners: dict[str, int]) -> None:
    text = exposition(owners)
    got = samples(text)["socket_process_connections"]
    want: Counter[str] = Counter()
    for name, n in owners.items():  # names equal once made valid and capped share one series
        want[name.encode("utf-8", "replace").decode()[:MAX_LABEL_LENGTH]] += n
    assert len(got) == len(want)  # no duplicate series
    assert Counter({labels["process"]: int(v) for labels, v in got}) == want


def test_names_equal_once_capped_are_summed_not_duplicated() -> None:
    long = "w" * MAX_LABEL_LENGTH
    got = samples(exposition({long + "-a": 2, long + "-b": 3}))["socket_process_connections"]
    assert [(x["process"], v) for x, v in got] == [(long, 5.0)]
    got = samples(exposition({long + "-a": 2, long + "-b": 3}, ("pid", "process")))["socket_process_connections"]
    assert sorted((x["pid"], x["process"], v) for x, v in got) == [("1", long, 2.0), ("2", long, 3.0)]


"""The real exporter against ss and psutil, in a namespace holding sockets in every state.

For each source, ``--once`` runs inside the namespace and its numbers must equal what ``ss`` and
``psutil.net_connections`` report there, taken just before and just after (retried if the two
differ, e.g. because a TIME_WAIT socket expired in between). The expected differences are exact:

* netlink also sees the bound-only TCP sockets (status CLOSE), one per family, owned by sockpop-tcp;
* psutil gives a socket shared by several processes to the highest pid (its inode map is
  ``dict.update``d in pid order); the exporter gives it to the lowest, as documented. The population
  has one such socket: an IPv4 listener shared by sockpop-hub and its child sockpop-kid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests import reference
from tests.exposition import connection_counts, owner_counts, run_once, samples
from tests.population import HIDDEN_FROM_SS, Population

T = TypeVar("T")
SOURCES = ("netlink", "proc")
#: Which families' bound-only TCP sockets each kind includes (netlink only; psutil has none).
BOUND_ONLY_FAMILIES = {"all": ("AF_INET", "AF_INET6"), "inet": ("AF_INET", "AF_INET6"), "tcp": ("AF_INET", "AF_INET6"),
                       "inet4": ("AF_INET",), "tcp4": ("AF_INET",), "inet6": ("AF_INET6",), "tcp6": ("AF_INET6",)}


def stable(take_reference: Callable[[], T], measure: Callable[[], str], tries: int = 4) -> tuple[T, str]:
    """Measure between two identical references, so both saw the same socket table."""
    for _ in range(tries):
        before = take_reference()
        text = measure()
        if take_reference() == before:
            return before, text
    pytest.fail(f"socket table kept changing during {tries} measurements")


def psutil_as_owner_counts(pop: Population, counts: Counter[reference.PsKey]) -> Counter[tuple[str, ...]]:
    """psutil's rows keyed like the exporter's series, with the shared listener moved to the lowest pid."""
    out: Counter[tuple[str, ...]] = Counter()
    for (fam, typ, status, pid), n in counts.items():
        out[(fam, typ, status, "unowned" if pid is None else str(pid))] += n
    hub, kid = pop.pids["sockpop-hub"], pop.pids["sockpop-kid"]
    shared = ("AF_INET", "SOCK_STREAM", "LISTEN")
    if kid > hub:
        out[(*shared, str(kid))] -= 1
        out[(*shared, str(hub))] += 1
    return +out


def bound_only(pop: Population) -> Counter[tuple[str, ...]]:
    return Counter({(*key, str(pop.pids["sockpop-tcp"])): 1 for key in HIDDEN_FROM_SS})


@pytest.mark.parametrize("source", SOURCES)
def test_totals_equal_ss(population: Population, source: str) -> None:
    ns = population.ns
    ss, text = stable(lambda: reference.ss_counts(ns), lambda: run_once(ns, "--source", source))
    expected = Counter(ss)
    if source == "netlink":
        expected.update(dict.fromkeys(HIDDEN_FROM_SS, 1))
    assert connection_counts(text) == expected
    assert f'socket_scrape_source{{source="{source}",table="tcp"}} 1.0' in text


@pytest.mark.parametrize("source", SOURCES)
def test_owners_equal_psutil(population: Population, source: str) -> None:
    ns = population.ns
    ps, text = stable(lambda: reference.psutil_counts(ns, "all"), lambda: run_once(ns, "--source", source))
    expected = psutil_as_owner_counts(population, ps)
    if source == "netlink":
        expected += bound_only(population)
    got = owner_counts(text)
    assert got == expected
    assert len({key[3] for key in got} - {"unowned"}) >= 3
    # per (family, type, status) the owner split sums to the total
    totals: Counter[tuple[str, ...]] = Counter()
    for (fam, typ, status, _), n in got.items():
        totals[(fam, typ, status)] += n
    assert totals == connection_counts(text)


@pytest.mark.parametrize("source", SOURCES)
def test_each_kind_selects_psutils_subset(population: Population, source: str, tmp_path: Path) -> None:
    ns = population.ns
    for kind in reference.PSUTIL_KINDS:
        config = tmp_path / f"{kind}.yml"
        config.write_text(f"kinds: [{kind}]\nper_process: {{enabled: false}}\n")
        ps, text = stable(lambda k=kind: reference.psutil_kind_counts(ns, [k])[k],  # type: ignore[misc]
                          lambda c=config: run_once(ns, "--source", source, "--config", str(c)))
        expected = reference.without_pid(ps)
        if source == "netlink":
            expected.update({key: 1 for key in HIDDEN_FROM_SS if key[0] in BOUND_ONLY_FAMILIES.get(kind, ())})
        assert connection_counts(text) == expected, kind
        assert "socket_process_connections" not in samples(text)  # the family; the budget still names it

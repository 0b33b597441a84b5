"""The series budget (``limits.max_series``): give up detail, never totals, until an exposition fits.

Why: Prometheus' ``sample_limit`` fails the *whole* scrape of a target that exceeds it, so an
exporter whose per-process, per-namespace or per-port families grow with the host would blind its
operator on exactly the busy day. Here the families that grow with the host are folded, in this
order, until the exposition holds at most ``limit`` samples:

1. ``tuples``: the top-N ``socket_ephemeral_ports_in_use`` tuples, smallest first. They are a top
   list, not parts of a sum, so they are dropped (``socket_ephemeral_ports_max_in_use`` keeps the
   one number alerts use).
2. ``ports``: service ports into ``port="other"`` of their direction (and namespace), for
   ``socket_port_connections`` and its two queue-byte families together.
3. ``listeners``: listening ports into ``port="other"`` of their family (and namespace), for queue
   length, queue limit and drops together (the ``other`` drops counter sums whichever ports are
   folded into it, so it can step back when that set changes).
4. ``owners``: processes into ``pid="other"`` / ``process="(other)"``, where
   ``per_process.max_owners`` folds too.
5. ``namespaces``: network namespaces into ``netns="other"`` (identity labels empty), for
   ``socket_namespace_connections`` and every per-namespace view series; counts and queues are
   summed, ``socket_ephemeral_ports_max_in_use`` and the tuples keep the maximum and the range size
   the minimum (the ``other`` namespace reports its fullest, never a calmer picture).

Within a step the smallest groups (by sockets: connections, queue length, ports in use) go first,
ties by label values, so the same host folds the same way every scrape; a group that would be alone
in its bucket (the only port of its namespace and direction, say) is left as it is, since folding
it would lose its name and save nothing. A group's samples are summed into buckets that keep every
other label, so per (family, type, status) the families still sum exactly to ``socket_connections``,
which is never touched, nor are the health families. Folding stops the moment the exposition fits:
a host under its budget loses nothing.

Example: limit 2 and ``socket_process_connections`` samples {pid 7: LISTEN 1, pid 9: LISTEN 2,
pid 8: ESTABLISHED 5}: pid 7 folds first (1 socket) into a new ``other`` LISTEN sample, saving
nothing; pid 9 (2 sockets) joins that sample, saving one: {other: LISTEN 3, pid 8: ESTABLISHED 5}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

NS_GROUP = ("netns",)
OTHER_NAMESPACE = {"netns": "other", "pod_uid": "", "pod_namespace": "", "pod_name": "", "container_id": ""}
PORT_FAMILIES = ("socket_port_connections", "socket_port_receive_queue_bytes", "socket_port_send_queue_bytes")
LISTEN_FAMILIES = ("socket_listen_queue_length", "socket_listen_queue_limit", "socket_listen_drops")
EPHEMERAL_FAMILIES = ("socket_ephemeral_port_range_size", "socket_ephemeral_ports_max_in_use",
                      "socket_ephemeral_ports_in_use")
#: Families that carry a ``netns`` label in ``network_namespaces: all`` (exposition/namespaces.py, ports.py).
NAMESPACE_FAMILIES = ("socket_namespace_connections", *PORT_FAMILIES, *LISTEN_FAMILIES, *EPHEMERAL_FAMILIES,
                      "socket_listen_folded", "socket_port_folded", "socket_metric_unavailable")
#: How samples meeting in one bucket combine; everything not listed is a count and is summed.
COMBINE: Mapping[str, Callable[[float, float], float]] = {
    "socket_ephemeral_ports_max_in_use": max, "socket_ephemeral_ports_in_use": max,
    "socket_metric_unavailable": max, "socket_ephemeral_port_range_size": min,
}


def _owner_bucket(group: Sequence[str]) -> bool:
    """(pid, process) of a bucket. A process may call itself ``other``, but never ``(other)``
    (aggregate/counts.py owner_name), and a pid is a number."""
    return group[0] in ("other", "unowned") or group[1] in ("(other)", "(unowned)")


@dataclass(frozen=True)
class Step:
    """One kind of detail to give up (module docstring): which families, grouped by which labels."""

    name: str
    families: tuple[str, ...]
    group: tuple[str, ...]  # labels naming a group; a label a family lacks reads as ""
    into: Mapping[str, str] | None  # the bucket's label values (labels a sample lacks are skipped); None: drop
    size: str  # the family whose values rank the groups
    keep: Callable[[Sequence[str]], bool]  # groups never folded: the buckets


STEPS = (
    Step("tuples", ("socket_ephemeral_ports_in_use",),
         ("family", "local_address", "remote_address", "remote_port", "netns"), None,
         "socket_ephemeral_ports_in_use", keep=lambda g: False),
    Step("ports", PORT_FAMILIES, ("direction", "port", "netns"), {"port": "other"}, "socket_port_connections",
         keep=lambda g: g[1] == "other"),
    Step("listeners", LISTEN_FAMILIES, ("family", "port", "netns"), {"port": "other"},
         "socket_listen_queue_length", keep=lambda g: g[1] == "other"),
    Step("owners", ("socket_process_connections",), ("pid", "process"),
         {"pid": "other", "process": "(other)"}, "socket_process_connections", keep=_owner_bucket),
    Step("namespaces", NAMESPACE_FAMILIES, NS_GROUP, OTHER_NAMESPACE, "socket_namespace_connections",
         keep=lambda g: g[0] in ("", "other")),  # "": own mode, no netns label: nothing to fold
)
#: The family ranking each step's groups: ``socket_exporter_series_folds_total{family}`` counts its folds
#: (the step's other families fold along with it).
FOLDABLE = tuple(step.size for step in STEPS)

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, labels: Mapping[str, str]) -> SampleKey:
    return name, tuple(sorted(labels.items()))


def count(families: Iterable[Metric]) -> int:
    return sum(len(f.samples) for f in families)


def fit(families: Sequence[Metric], limit: int, folds: Counter[str]) -> int:
    """Fold ``families`` in place until they hold at most ``limit`` samples, or nothing is left to fold.

    Adds the groups folded to ``folds`` under each step's ranking family; returns the samples left
    (over ``limit`` only when the families that never fold alone exceed it).
    """
    total = count(families)
    for step in STEPS:
        if total <= limit:
            break
        total -= _fold(families, step, total - limit, folds)
    return total


def _fold(families: Sequence[Metric], step: Step, excess: int, folds: Counter[str]) -> int:
    """Fold the smallest groups of one step until ``excess`` samples are saved; returns those saved."""
    targets = [f for f in families if f.name in step.families]
    sizes: dict[tuple[str, ...], float] = {}
    members: dict[tuple[str, ...], list[tuple[Metric, Sample]]] = {}
    present: set[SampleKey] = set()
    for family in targets:
        for s in family.samples:
            group = tuple(s.labels.get(label, "") for label in step.group)
            present.add(_key(s.name, s.labels))
            if step.keep(group):
                continue
            members.setdefault(group, []).append((family, s))
            if family.name == step.size:
                sizes[group] = sizes.get(group, 0.0) + s.value
    # Groups folding into one bucket; a group alone in its scope, with no bucket yet, would fold for nothing.
    scopes = Counter(_scope(step, g) for g in members)
    saved, folded = 0, set()
    for group in sorted(members, key=lambda g: (sizes.get(g, 0.0), g)):
        if saved >= excess:
            break
        added = set()
        if step.into is not None:
            for _, s in members[group]:
                bucket = _key(s.name, _into(s.labels, step.into))
                if bucket not in present:
                    added.add(bucket)
        scope = _scope(step, group)
        scopes[scope] -= 1
        if len(added) == len(members[group]) and not scopes[scope]:
            continue  # nothing shares its bucket: folding it would lose detail and save nothing
        present |= added
        saved += len(members[group]) - len(added)
        folded.add(group)
        folds[step.size] += 1
    for family in targets:
        family.samples = _rebuilt(family, step, folded)
    return saved


def _scope(step: Step, group: tuple[str, ...]) -> tuple[str, ...]:
    into = step.into or {}
    return tuple(into.get(label, value) for label, value in zip(step.group, group, strict=True))


def _into(labels: Mapping[str, str], into: Mapping[str, str]) -> dict[str, str]:
    return {**labels, **{k: v for k, v in into.items() if k in labels}}


def _add(a: float, b: float) -> float:
    return a + b


def _rebuilt(family: Metric, step: Step, folded: set[tuple[str, ...]]) -> list[Sample]:
    """The family's samples with the folded groups summed (or combined) into their buckets."""
    kept: list[Sample] = []
    index: dict[SampleKey, int] = {}
    moved = []
    for s in family.samples:
        if tuple(s.labels.get(label, "") for label in step.group) in folded:
            moved.append(s)
        else:
            index[_key(s.name, s.labels)] = len(kept)
            kept.append(s)
    if step.into is None:
        return kept
    combine = COMBINE.get(family.name, _add)
    for s in moved:
        labels = _into(s.labels, step.into)
        at = index.setdefault(_key(s.name, labels), len(kept))
        if at == len(kept):
            kept.append(s._replace(labels=labels))
        else:
            kept[at] = kept[at]._replace(value=combine(kept[at].value, s.value))
    return kept

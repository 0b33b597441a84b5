"""The scrape registry: every collector's families, held to the series budget, plus the budget's own.

Why a registry and not one more collector: the budget is on the *whole* exposition (what
Prometheus' ``sample_limit`` counts), and the server registers its HTTP self-metrics on the same
registry (exporter/web/server.py), so only the registry sees every family before it is written.
client_python's ``generate_latest`` and ``choose_encoder`` encoders call ``registry.collect()``:
folding there serves the text format and OpenMetrics alike.

Families added here, counted in the budget too:

* ``socket_exporter_series``: samples in this exposition, these three families included;
* ``socket_exporter_series_limit``: ``limits.max_series`` (0: no limit);
* ``socket_exporter_series_folds_total{family}``: groups (owners, namespaces, ports, tuples) folded
  by the budget, summed over every exposition since the start, under the family that ranks them
  (``socket_port_connections`` for ports, whose queue-byte families fold along; budget.py); one
  series per step from the first scrape, so ``increase()`` works at once.

The limit is read once per exposition through ``max_series`` (the reloader's current config), so a
reload applies to the next scrape.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..pipeline.state import ExporterState
from . import health
from .budget import FOLDABLE, count, fit
from .sockets import SocketMetricsCollector

log = logging.getLogger("exporter")
#: Samples of the three families this module adds.
OWN_SAMPLES = 2 + len(FOLDABLE)


class BudgetedRegistry(CollectorRegistry):
    """A CollectorRegistry whose ``collect()`` holds every exposition to ``max_series()`` samples."""

    def __init__(self, max_series: Callable[[], int]) -> None:
        super().__init__(auto_describe=False)
        self._max_series = max_series
        self._lock = threading.Lock()
        self._folds: Counter[str] = Counter()
        self._over = False  # last exposition could not fit: log on the change only

    def collect(self) -> Iterable[Metric]:
        families = list(super().collect())
        limit = self._max_series()
        folds: Counter[str] = Counter()
        total = count(families)
        if limit and total + OWN_SAMPLES > limit:
            total = fit(families, limit - OWN_SAMPLES, folds)
        total += OWN_SAMPLES
        over = 0 < limit < total
        with self._lock:
            self._folds.update(folds)
            cumulative = dict(self._folds)
            was_over, self._over = self._over, over
        if over and not was_over:
            log.warning("series budget: %d samples even with everything folded, above limits.max_series %d; "
                        "totals are never dropped: raise the limit or switch collectors off", total, limit)
        yield from families
        yield GaugeMetricFamily("socket_exporter_series", "Samples in this exposition, these series included; "
                                "held at or under socket_exporter_series_limit by folding detail.", value=total)
        yield GaugeMetricFamily("socket_exporter_series_limit", "limits.max_series: most samples in one "
                                "exposition (0: no limit).", value=limit)
        folded = CounterMetricFamily("socket_exporter_series_folds", "Groups (owners, namespaces, ports, ephemeral "
                                     "tuples) folded into their other bucket (tuples: dropped) to stay within "
                                     "limits.max_series, over all expositions, by the family ranking them.",
                                     labels=["family"])
        for name in FOLDABLE:
            folded.add_metric([name], cumulative.get(name, 0))
        yield folded


class HoldsState(Protocol):
    """What holds the current state: the Reloader when serving, a :class:`FixedState` for ``--once``."""

    @property
    def state(self) -> ExporterState: ...


@dataclass(frozen=True)
class FixedState:
    state: ExporterState


def build_registry(holder: HoldsState) -> CollectorRegistry:
    """The scrape registry, serving and ``--once`` alike: one collector reading ``holder.state`` once per
    scrape, held to that state's ``limits.max_series``, and the process-wide self-metrics (health.py)."""
    registry = BudgetedRegistry(lambda: holder.state.config.limits.max_series)
    registry.register(SocketMetricsCollector(lambda: holder.state))
    return health.register(registry)  # process_* and the netlink counters

"""The series budget in the benchmark (exporter/exposition/budget.py): what holding a scrape to
``limits.max_series`` costs, beside the scrape it holds.

The families are those of the views-on scrape (``[all]`` + per-process + listeners, ports,
ephemeral; tests/benchmark/ports.py), collected once per case; each timed call copies them (the
budget folds in place) and then:

* ``budget count``: under the limit, the default case: only the samples are counted;
* ``budget fold``: fits them into half their samples, which folds through every step that has
  something to fold: the most the budget can cost on that exposition.

The target: the fold costs under 5% of the views-on scrape at 100k sockets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client.metrics_core import Metric

from exporter.exposition.budget import count, fit

ROWS = {
    "budget count": "series budget, exposition under the limit (count samples)",
    "budget fold": "series budget, fold the views-on exposition into half its samples",
}


def _copies(families: list[Metric]) -> list[Metric]:
    out = []
    for f in families:
        copy = Metric(f.name, f.documentation, f.type, f.unit)
        copy.samples = list(f.samples)
        out.append(copy)
    return out


def measurements(timed_self: Callable[[Callable[[], int]], Any],
                 families: Callable[[], list[Metric]]) -> dict[str, Callable[[], Any]]:
    collected = families()
    size = count(collected)

    def under() -> int:
        return count(_copies(collected))

    def fold() -> int:
        return fit(_copies(collected), size // 2, Counter())

    return {"budget count": lambda: timed_self(under), "budget fold": lambda: timed_self(fold)}


def targets(median: Callable[[str], float | None], check: Callable[..., None]) -> None:
    fold, scrape = median("budget fold"), median("exporter views all owners")
    check("series budget fold / views-on scrape, %", 100 * fold / scrape if fold is not None and scrape else None,
          5, True, "{:.1f}")

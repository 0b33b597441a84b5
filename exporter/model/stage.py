"""A timed collection stage, reported node_exporter style as success and duration per collector.

Why a stage records its own failure instead of raising: one table or one source failing must not
take the whole scrape down; the stage's ``socket_scrape_collector_success`` goes to 0, the data it
could not read is absent, and the rest of the scrape is served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Stage:
    name: str
    success: bool
    seconds: float


class StageTimer:
    """Times one stage from construction to :meth:`done`, which appends it to ``stages``."""

    def __init__(self, stages: list[Stage], name: str) -> None:
        self.stages, self.name, self.success = stages, name, True
        self.start = time.perf_counter()

    def done(self) -> None:
        self.stages.append(Stage(self.name, self.success, time.perf_counter() - self.start))

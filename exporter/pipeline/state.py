"""What one scrape uses, built whole at start and at every reload: config, pipeline, single flight, status.

Why one object: a scrape reads the config (which kinds, which owner labels), runs a collection and
reports the reload status. If those came from separately updated attributes, a scrape running across
a reload could report kinds from one config with owner labels from the other. So the registry's
collector takes ONE reference to an :class:`ExporterState` at the start of ``collect()``, and a reload
(exporter/reload.py) builds a new state and rebinds one attribute (atomic in CPython). Each state has
its own single flight, so a scrape can never join a collection run for another config.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings.config import Config
from .collection import Collection, Pipeline
from .single_flight import SharedCollection


@dataclass(frozen=True)
class ReloadStatus:
    successful: bool
    last_success: float  # unix time of the last successful (re)load


@dataclass(frozen=True)
class ExporterState:
    """Everything one scrape uses. ``reload`` is None when nothing can reload (``--once``)."""

    config: Config
    pipeline: Pipeline
    shared: SharedCollection
    reload: ReloadStatus | None = None

    @classmethod
    def build(cls, config: Config, reload: ReloadStatus | None = None) -> ExporterState:
        pipeline = Pipeline(config)
        return cls(config, pipeline, SharedCollection(pipeline.collect, config.collection_timeout), reload)

    @classmethod
    def once(cls, config: Config) -> tuple[ExporterState, Collection]:
        """``--once``: one collection, run now; the state serves it to the one scrape that follows."""
        pipeline = Pipeline(config)
        collection = pipeline.collect()
        return cls(config, pipeline, SharedCollection(lambda: collection)), collection

    def collect(self) -> Collection:
        """This state's collection: runs one, or joins the one in flight for this same state."""
        return self.shared.get()

"""socket_exporter: Prometheus metrics for Linux sockets by family, type, status and owning process."""

from .version import __version__

__all__ = ["__version__"]

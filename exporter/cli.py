"""Command line: ``socket-exporter`` / ``python -m exporter``.

Flags follow Prometheus exporter conventions (``--web.listen-address``, ``--path.procfs``...) and
override the config file, also after a reload (SIGHUP or ``POST /-/reload``, see exporter/reload.py).
Exit codes: 0 ok, 1 nothing could be collected (``--once``) or the server could not start, 2 a bad
config or flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from .collection import Pipeline, SharedCollection
from .config import NETWORK_NAMESPACES, SOURCES, Config, ConfigError, load_config, parse_listen_address, with_overrides
from .metrics import SocketMetricsCollector
from .reload import ExporterState, Reloader, reload_on_sighup
from .version import __version__
from .web.config import WebConfigError, load_web_config
from .web.server import ExporterHTTPServer

log = logging.getLogger("exporter")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="socket-exporter", description=(
        "Prometheus exporter for Linux sockets by family, type, status and owning process."))
    p.add_argument("--config", metavar="FILE", help="YAML config file (default: built-in defaults, "
                   "identical to config/socket_exporter.yml)")
    p.add_argument("--web.listen-address", dest="listen_address", metavar="HOST:PORT",
                   help="address to serve on (default :9731)")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", metavar="PATH",
                   help="path serving metrics (default /metrics)")
    p.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                   help="TLS and basic-auth config, exporter-toolkit's web-config.yml format (default: plain HTTP)")
    p.add_argument("--source", choices=SOURCES, help="where socket tables come from (default auto)")
    p.add_argument("--network-namespaces", dest="network_namespaces", choices=NETWORK_NAMESPACES,
                   help="own: the exporter's network namespace; all: every one on the host, split by pod "
                   "(needs CAP_SYS_ADMIN for netlink; default own)")
    p.add_argument("--path.procfs", dest="procfs", metavar="DIR", help="procfs mount point (default /proc)")
    p.add_argument("--path.pod-logs", dest="pod_logs", metavar="DIR",
                   help="kubelet's pod log directory, naming pods by uid (default /var/log/pods)")
    p.add_argument("--once", action="store_true",
                   help="collect once, print the exposition text to stdout and exit")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the config and exit (0 valid, 2 invalid)")
    p.add_argument("--log.level", dest="log_level", choices=("debug", "info", "warning", "error"),
                   help="log level (default info)")
    p.add_argument("--version", action="version", version=f"socket_exporter {__version__}")
    return p


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags (None = not given), validated. Raises ConfigError."""
    if args.listen_address is not None:
        parse_listen_address(args.listen_address)
    if args.telemetry_path is not None and not args.telemetry_path.startswith("/"):
        raise ConfigError(f"--web.telemetry-path: got {args.telemetry_path!r}; want a path starting with /")
    return {"listen_address": args.listen_address, "telemetry_path": args.telemetry_path,
            "source": args.source, "procfs": args.procfs, "log_level": args.log_level,
            "network_namespaces": args.network_namespaces, "pod_logs": args.pod_logs}


def resolve_config(args: argparse.Namespace) -> Config:
    """The file's config (or the defaults) with the flags on top. Raises ConfigError."""
    flags = flag_overrides(args)
    config = load_config(args.config) if args.config else Config()
    return with_overrides(config, **flags)


def make_registry(reloader: Reloader) -> CollectorRegistry:
    """The scrape registry: one collector reading the reloader's current state once per scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SocketMetricsCollector(lambda: reloader.state))
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except (ConfigError, WebConfigError) as exc:
        print(f"socket-exporter: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s %(name)s: %(message)s")
    if args.config_check:
        print(f"socket-exporter: {args.config or 'built-in defaults'}: config OK")
        return 0
    if args.once:
        pipeline = Pipeline(config)
        collection = pipeline.collect()
        state = ExporterState(config, pipeline, SharedCollection(lambda: collection))  # no reload status
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SocketMetricsCollector(lambda: state))
        sys.stdout.write(generate_latest(registry).decode())
        return 0 if collection.source_of else 1

    host, port = parse_listen_address(config.listen_address)
    reloader = Reloader(args.config, flag_overrides(args), config)
    reload_on_sighup(reloader)  # before the server starts any thread; from here on SIGHUP reloads
    try:
        server = ExporterHTTPServer((host, port), make_registry(reloader), config.telemetry_path,
                                    web_config=web_config, on_reload=lambda: reloader.reload("POST /-/reload"))
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen_address, exc)
        return 1
    log.info("socket_exporter %s serving %s on %s (kinds %s, source %s)", __version__,
             config.telemetry_path, config.listen_address, ",".join(config.kinds), config.source)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

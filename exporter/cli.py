"""Command line: ``socket-exporter`` / ``python -m exporter``.

Flags follow Prometheus exporter conventions (``--web.listen-address``, ``--path.procfs``...) and
override the config file, also after a reload (SIGHUP or ``POST /-/reload``, see exporter/reload.py).
Exit codes: 0 ok, 1 nothing could be collected (``--once``) or the server could not start, 2 a bad
config or flag. Every log line is logfmt (exporter/logfmt.py).

Why everything but the standard library's lightest modules is imported inside the functions:
``main()`` blocks SIGHUP first (exporter/sighup.py), and what this module imports at its top runs
before that, when the ``socket-exporter`` script imports it; prometheus_client, pyroute2 (through
the sources), ssl and yaml at the top would be a few hundred milliseconds in which a SIGHUP kills
a starting exporter.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import logfmt
from .sighup import hold_sighup
from .version import __version__

if TYPE_CHECKING:
    import argparse

    from .settings.config import Config
    from .web.config import WebConfig

log = logging.getLogger("exporter")


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from .settings.config import NETWORK_NAMESPACES, SOURCES, VIEWS

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            """One logfmt line naming the flag, exit 2: the shape of every other start-up error, where
            argparse would print its whole usage (``--help`` still does)."""
            logfmt.setup("info")
            log.error("%s", flag_error(message))
            sys.exit(2)

    p = Parser(prog="socket-exporter", allow_abbrev=False, description=(
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
    p.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                   help="serve POST /-/reload, as Prometheus' flag of that name (default off; SIGHUP always reloads)")
    p.add_argument("--log.level", dest="log_level", metavar="LEVEL",
                   help="debug, info, warn or error (default info; warning is read as warn)")
    p.add_argument("--limits.max-series", dest="max_series", metavar="N", type=int,
                   help="most samples in one exposition; beyond it the smallest owners, namespaces and ports are "
                   "folded into their other buckets (0: no limit; default 10000)")
    for name in VIEWS:  # node_exporter's spelling: --collector.NAME / --no-collector.NAME
        p.add_argument(f"--collector.{name}", dest=f"collector_{name}", action=argparse.BooleanOptionalAction,
                       help=f"switch the {name} view on or off (default: {name}.enabled in the config)")
    p.add_argument("--version", action="version", version=f"socket_exporter {__version__}")
    return p


def flag_error(message: str) -> str:
    """argparse's error ``message`` in the words a bad config value gets.

    >>> flag_error("unrecognized arguments: --web.listen-addres :9731")
    'unknown flag --web.listen-addres; see socket-exporter --help'
    >>> flag_error("unrecognized arguments: --web.listen-addres=:9 --x")
    'unknown flags --web.listen-addres=:9, --x; see socket-exporter --help'
    >>> flag_error("argument --source: invalid choice: 'nl' (choose from 'auto', 'netlink', 'proc')")
    "--source: got 'nl'; allowed: auto, netlink, proc"
    >>> flag_error("argument --limits.max-series: invalid int value: 'lots'")
    "--limits.max-series: got 'lots'; want an integer"
    >>> flag_error("argument --config: expected one argument")
    '--config: expected one argument'
    """
    import re

    if message.startswith("unrecognized arguments: "):
        words = message.removeprefix("unrecognized arguments: ").split()
        flags = [w for w in words if w.startswith("-")] or words  # not the value of an unknown flag
        return f"unknown flag{'s' if len(flags) > 1 else ''} {', '.join(flags)}; see socket-exporter --help"
    m = re.fullmatch(r"argument ([^:]+): (.*)", message)
    if not m:
        return message
    flag, why = m[1].split("/")[0], m[2]
    choice = re.fullmatch(r"invalid choice: (.+?) \(choose from (.+)\)", why)
    if choice:
        return f"{flag}: got {choice[1]}; allowed: {', '.join(c.strip(chr(39)) for c in choice[2].split(', '))}"
    number = re.fullmatch(r"invalid int value: (.+)", why)
    return f"{flag}: got {number[1]}; want an integer" if number else f"{flag}: {why}"


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags (None = not given), validated. Raises ConfigError."""
    from .settings.config import VIEWS, check_log_level, check_max_series, check_telemetry_path, parse_listen_address

    if args.listen_address is not None:
        parse_listen_address(args.listen_address)
    if args.telemetry_path is not None:
        check_telemetry_path(args.telemetry_path)  # the file's check, with the flag's name: one error shape
    level = check_log_level(args.log_level) if args.log_level is not None else None
    if args.max_series is not None:
        check_max_series(args.max_series)
    return {"listen_address": args.listen_address, "telemetry_path": args.telemetry_path,
            "source": args.source, "procfs": args.procfs, "log_level": level,
            "network_namespaces": args.network_namespaces, "pod_logs": args.pod_logs,
            "max_series": args.max_series,
            "views": {name: getattr(args, f"collector_{name}") for name in VIEWS}}


def resolve_config(args: argparse.Namespace) -> Config:
    """The file's config (or the defaults) with the flags on top. Raises ConfigError."""
    from .settings.config import Config, load_config, with_overrides

    flags = flag_overrides(args)
    config = load_config(args.config) if args.config else Config()
    return with_overrides(config, **flags)


def config_check(args: argparse.Namespace, web_config: WebConfig | None) -> int:
    line = f"socket-exporter: {args.config or 'built-in defaults'}: config OK"
    if web_config is not None:
        line += f"; web config {args.web_config_file}: OK ({web_config.summary()})"
    print(line)
    return 0


def once(config: Config) -> int:
    from prometheus_client import generate_latest

    from .exposition.registry import FixedState, build_registry
    from .pipeline.state import ExporterState

    state, collection = ExporterState.once(config)  # no reload status
    sys.stdout.write(generate_latest(build_registry(FixedState(state))).decode())
    return 0 if collection.source_of else 1


def main(argv: Sequence[str] | None = None) -> int:
    hold_sighup()  # first: a SIGHUP during the start must not end it (exporter/sighup.py)
    args = build_parser().parse_args(argv)
    logfmt.setup("info")
    from .settings.config import ConfigError, parse_listen_address
    from .web.config import WebConfigError, load_web_config

    try:
        config = resolve_config(args)
        logfmt.set_level(config.log_level)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except (ConfigError, WebConfigError) as exc:
        log.error("%s", exc)
        return 2
    if args.config_check:
        return config_check(args, web_config)
    if args.once:
        return once(config)

    from .exposition.registry import build_registry
    from .reload import Reloader, reload_on_sighup
    from .web.server import ExporterHTTPServer

    host, port = parse_listen_address(config.listen_address)
    reloader = Reloader(args.config, flag_overrides(args), config, web_path=args.web_config_file,
                        web_config=web_config)
    on_reload = (lambda: reloader.reload("POST /-/reload")) if args.enable_lifecycle else None
    try:
        server = ExporterHTTPServer((host, port), build_registry(reloader), config.telemetry_path,
                                    web_config=web_config, on_reload=on_reload)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen_address, exc)
        return 1
    reloader.on_web_config = lambda new: setattr(server, "web_config", new)
    reload_on_sighup(reloader)  # once the server can take a new web config; SIGHUP was held till now
    log.info("socket_exporter %s serving %s on %s (kinds %s, source %s)", __version__,
             config.telemetry_path, config.listen_address, ",".join(config.kinds), config.source)
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())  # scrapes in flight finish, within a grace period
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    if server.abandoned:  # a thread stuck in a collection must not hold the exit past the grace period
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

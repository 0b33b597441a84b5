"""``python -m exporter.healthcheck [the exporter's flags]``: exit 0 if the exporter on this host answers
``GET /-/healthy`` with 200, else 1 with one line saying why. For container health checks and
Kubernetes exec probes.

Why not ``curl`` or a kubelet ``httpGet`` probe: with ``--web.config.file`` the exporter speaks TLS and
may ask for basic auth on every path, ``/-/healthy`` included (as exporter-toolkit does); the image
has no curl, and a kubelet probe can neither present a client certificate nor read a password from a
Secret. This check takes the exporter's own flags (unknown ones are ignored, so the exporter's whole
argument list can be passed). Given none, it reads them from the command line of the exporter
running in its own container (the one process of its mount namespace that runs ``socket-exporter``
or ``python -m exporter``), so the image's HEALTHCHECK and an exec probe need no arguments. From the flags
it finds the address and the scheme where the exporter does:

* address: ``--web.listen-address`` (or the ``--config`` file's ``web.listen_address``); a wildcard
  host (``:9731``, ``0.0.0.0``, ``[::]``) is reached on loopback;
* TLS when the web config has ``tls_server_config``. The server's certificate is not verified: the
  check connects to this host's own exporter, by an address the certificate need not name;
* basic auth from the environment: ``SOCKET_EXPORTER_HEALTHCHECK_USERNAME`` and
  ``SOCKET_EXPORTER_HEALTHCHECK_PASSWORD`` (or ``..._PASSWORD_FILE``, a file holding it);
* a client certificate, for ``client_auth_type: RequireAndVerifyClientCert``, from
  ``SOCKET_EXPORTER_HEALTHCHECK_CERT_FILE`` and ``..._KEY_FILE``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import ssl
import sys
from collections.abc import Mapping, Sequence

from .settings.config import Config, ConfigError, load_config, parse_listen_address
from .web.config import WebConfigError, load_web_config

ENV = "SOCKET_EXPORTER_HEALTHCHECK_"
TIMEOUT_S = 4.0  # under the image's HEALTHCHECK --timeout and the probes' timeoutSeconds (5 s)


def parse_flags(argv: Sequence[str]) -> argparse.Namespace:
    """The three flags that say where the exporter listens and how; every other flag is ignored.
    Not exporter.cli's parser: importing the collection code (pyroute2) would make each check cost
    ~0.3 CPU-s and 40 MB instead of ~0.07 CPU-s and 20 MB."""
    p = argparse.ArgumentParser(prog="python -m exporter.healthcheck", allow_abbrev=False)
    p.add_argument("--config")
    p.add_argument("--web.listen-address", dest="listen_address")
    p.add_argument("--web.config.file", dest="web_config_file")
    return p.parse_known_args(list(argv))[0]


def loopback(host: str) -> str:
    """Where to reach a server listening on ``host``.

    >>> [loopback(h) for h in ("", "0.0.0.0", "::", "10.0.0.5", "::1")]
    ['127.0.0.1', '127.0.0.1', '::1', '10.0.0.5', '::1']
    """
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The Authorization header from the environment, or none.

    >>> credentials({"SOCKET_EXPORTER_HEALTHCHECK_USERNAME": "u", "SOCKET_EXPORTER_HEALTHCHECK_PASSWORD": "p"})
    {'Authorization': 'Basic dTpw'}
    """
    user = env.get(ENV + "USERNAME")
    if not user:
        return {}
    password = env.get(ENV + "PASSWORD")
    if password is None and env.get(ENV + "PASSWORD_FILE"):
        with open(env[ENV + "PASSWORD_FILE"], encoding="utf-8") as f:
            password = f.read().rstrip("\n")
    token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def tls_context(web_config_file: str | None, env: Mapping[str, str]) -> ssl.SSLContext | None:
    """A client context when the web config turns TLS on (see the module docstring), else None."""
    if not web_config_file:
        return None
    if load_web_config(web_config_file).tls is None:  # read and checked as the exporter does
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if env.get(ENV + "CERT_FILE"):
        context.load_cert_chain(env[ENV + "CERT_FILE"], env.get(ENV + "KEY_FILE") or None)
    return context


def exporter_args(cmdline: list[str]) -> list[str] | None:
    """The flags of an exporter's command line, or None if it is not the exporter's. A console script
    runs as ``python .../socket-exporter FLAGS`` (the kernel puts the interpreter first).

    >>> exporter_args(["/opt/socket-exporter/bin/python", "/opt/socket-exporter/bin/socket-exporter", "--x=1"])
    ['--x=1']
    >>> exporter_args(["python3", "-m", "exporter", "--once"]), exporter_args(["python3", "-m", "exporter.healthcheck"])
    (['--once'], None)
    """
    for i, arg in enumerate(cmdline[:2]):
        if os.path.basename(arg) == "socket-exporter":
            return cmdline[i + 1:]
    return cmdline[3:] if cmdline[1:3] == ["-m", "exporter"] else None


def exporter_argv(proc: str = "/proc") -> tuple[list[str], str] | None:
    """The arguments and working directory of the one exporter in this mount namespace, if exactly one.
    Reading another process's ``ns/mnt`` and ``cwd`` needs the rights to ptrace it: the same user, or
    CAP_SYS_PTRACE, which the exporter's own container has."""
    try:
        own = os.stat(f"{proc}/self/ns/mnt").st_ino
    except OSError:
        return None
    found = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                args = exporter_args([a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]])
            if args is not None and os.stat(f"{proc}/{pid}/ns/mnt").st_ino == own:
                found.append((args, os.readlink(f"{proc}/{pid}/cwd")))
        except OSError:  # exited, or not ours to read
            continue
    return found[0] if len(found) == 1 else None


def check(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """None if healthy, else the reason."""
    if not argv and (found := exporter_argv()) is not None:
        argv, cwd = found
        os.chdir(cwd)  # its relative --config and --web.config.file paths
    args = parse_flags(argv)
    try:
        config = load_config(args.config) if args.config else Config()
        host, port = parse_listen_address(args.listen_address or config.listen_address)
        context = tls_context(args.web_config_file, env)
        headers = credentials(env)
    except (ConfigError, WebConfigError, OSError, ssl.SSLError) as exc:
        return f"cannot set up the check: {exc}"
    host = loopback(host)
    scheme = "https" if context else "http"
    where = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/-/healthy"
    conn = (http.client.HTTPSConnection(host, port, timeout=TIMEOUT_S, context=context) if context
            else http.client.HTTPConnection(host, port, timeout=TIMEOUT_S))
    try:
        conn.request("GET", "/-/healthy", headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{where}: {exc}"
    finally:
        conn.close()
    if status == 401:
        hint = "wrong credentials" if headers else f"basic auth is on: set {ENV}USERNAME and {ENV}PASSWORD_FILE"
        return f"{where}: answered 401 ({hint})"
    return None if status == 200 else f"{where}: answered {status}"


def main(argv: Sequence[str] | None = None) -> int:
    reason = check(sys.argv[1:] if argv is None else argv, os.environ)
    if reason is not None:
        print(f"socket-exporter healthcheck: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A long-lived process that owns part of the test socket population: ``python socket_worker.py CONFIG``.

Run by :mod:`population` inside the namespace. Protocol on stdin/stdout, one line each:

1. worker builds what needs no peer, prints ``setup {json}`` (e.g. the hub's listening ports);
2. it reads ``go {json}`` (e.g. the ports a client must connect to), builds the rest;
3. prints ``ready {json}`` with ``made`` (what it built, psutil labels) and its ``pid``;
4. holds everything until stdin reaches EOF (the population closed it, or died), then exits.
On failure it prints ``error <message>`` (traceback on stderr) and exits 1.

Why stdin EOF as the stop signal: it also fires when the test process is killed, so workers never
outlive their test. A forked child (the hub's ``sockpop-kid``) uses PR_SET_PDEATHSIG instead.
The process name (comm) is set with prctl(PR_SET_NAME) so owners are recognisable in ps and metrics.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback
from collections import Counter
from typing import Any

import tcp_states
from tcp_states import LOOPBACK, listener

PR_SET_PDEATHSIG, PR_SET_NAME = 1, 15
PAIRS_PER_UNIT = 2  # ESTABLISHED hub<->client connections per unit and family
FAMILIES = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}
Key = tuple[str, str, str]
MAINS: list[socket.socket] = []  # the hub's listeners the clients connect to


def prctl(option: int, arg: int | bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def emit(word: str, payload: dict[str, Any]) -> None:
    sys.stdout.write(f"{word} {json.dumps(payload)}\n")
    sys.stdout.flush()


def fork_kid(parent: int) -> int:
    """Fork ``sockpop-kid``: it inherits (shares) every socket the hub holds at this moment."""
    pid = os.fork()
    if pid:
        return pid
    try:
        prctl(PR_SET_NAME, b"sockpop-kid")
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the hub died before PDEATHSIG was armed
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)  # do not compete for the hub's "go" line nor hold its pipes open
        os.dup2(devnull, 1)
        while True:
            signal.pause()
    finally:
        os._exit(0)


def hub_setup(cfg: dict[str, Any], keep: list[Any], made: Counter[Key]) -> dict[str, Any]:
    info: dict[str, Any] = {"ports": {}}
    if cfg.get("share"):
        keep.append(listener(socket.AF_INET, 16))  # LISTEN shared by hub and kid
        made["AF_INET", "SOCK_STREAM", "LISTEN"] += 1
        if cfg.get("shared_unix"):
            shared = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            shared.bind(os.path.join(cfg["tmpdir"], "shared-dgram.sock"))
            keep.append(shared)
            made["AF_UNIX", "SOCK_DGRAM", "NONE"] += 1
        info["kid"] = fork_kid(os.getpid())
    units = cfg["units"]
    for family, label in FAMILIES.items():
        main = listener(family, min(4096, units * PAIRS_PER_UNIT + 8))
        keep.append(main)
        MAINS.append(main)
        keep += [listener(family, 8) for _ in range(units)]
        info["ports"][label] = main.getsockname()[1]
        made[label, "SOCK_STREAM", "LISTEN"] += 1 + units
    return info


def hub_go(cfg: dict[str, Any], go: dict[str, Any], keep: list[Any], made: Counter[Key]) -> None:
    """Accept the clients' connections on the main listeners, while the client connects."""
    want = cfg["units"] * PAIRS_PER_UNIT
    mains = dict.fromkeys(MAINS, 0)
    deadline = time.monotonic() + cfg["timeout"]
    while any(n < want for n in mains.values()):
        readable, _, _ = select.select([s for s, n in mains.items() if n < want], [], [], 0.5)
        for lsock in readable:
            keep.append(lsock.accept()[0])
            mains[lsock] += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"hub accepted {list(mains.values())} of {want} connections per family")
    for label in FAMILIES.values():
        made[label, "SOCK_STREAM", "ESTABLISHED"] += want


def cli_go(cfg: dict[str, Any], go: dict[str, Any], keep: list[Any], made: Counter[Key]) -> None:
    want = cfg["units"] * PAIRS_PER_UNIT
    for family, label in FAMILIES.items():
        for _ in range(want):
            sock = tcp_states.tcp_socket(family)
            sock.connect((LOOPBACK[family], go["ports"][label]))
            keep.append(sock)
        made[label, "SOCK_STREAM", "ESTABLISHED"] += want


def tcp_setup(cfg: dict[str, Any], keep: list[Any], made: Counter[Key]) -> dict[str, Any]:
    for family, label in FAMILIES.items():
        socks, tally = tcp_states.build_tcp_states(family, cfg["timeout"])
        keep += socks
        for status, n in tally.items():
            made[label, "SOCK_STREAM", status] += n
    return {}


def dgu_setup(cfg: dict[str, Any], keep: list[Any], made: Counter[Key]) -> dict[str, Any]:
    """UDP bound + connected per family, UNIX path/abstract/socketpair per type, ``units`` times."""
    tmpdir, tag, shard = cfg["tmpdir"], cfg["tag"], cfg["shard"]
    for i in range(cfg["units"]):
        for family, label in FAMILIES.items():
            server = socket.socket(family, socket.SOCK_DGRAM)
            server.bind((LOOPBACK[family], 0))
            client = socket.socket(family, socket.SOCK_DGRAM)
            client.connect(server.getsockname()[:2])  # autobinds: hashed, so visible
            keep += [server, client]
            made[label, "SOCK_DGRAM", "NONE"] += 2
        for typ, name in ((socket.SOCK_STREAM, "str"), (socket.SOCK_SEQPACKET, "seq")):
            for addr in (os.path.join(tmpdir, f"{shard}{name}{i}.sock"), f"\0{tag}-{name}{i}"):
                lsock = socket.socket(socket.AF_UNIX, typ)
                lsock.bind(addr)
                lsock.listen(8)
                client = socket.socket(socket.AF_UNIX, typ)
                client.connect(addr)
                keep += [lsock, client, lsock.accept()[0]]  # an unaccepted embryo: psutil yes, ss no
            keep += socket.socketpair(socket.AF_UNIX, typ)
            made["AF_UNIX", socket.SocketKind(typ).name, "NONE"] += 8
        for addr in (os.path.join(tmpdir, f"{shard}dgr{i}.sock"), f"\0{tag}-dgr{i}"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            server.bind(addr)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            client.connect(addr)
            keep += [server, client]
        keep += socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        made["AF_UNIX", "SOCK_DGRAM", "NONE"] += 6
    if cfg.get("shared_unix"):
        dup = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dup.bind(os.path.join(tmpdir, f"{shard}dup-dgram.sock"))
        keep += [dup, os.dup(dup.fileno())]  # one socket, two fds in this process
        made["AF_UNIX", "SOCK_DGRAM", "NONE"] += 1
    return {}


SETUP = {"hub": hub_setup, "tcp": tcp_setup, "dgu": dgu_setup}
GO = {"hub": hub_go, "cli": cli_go}


def main(argv: list[str]) -> int:
    cfg: dict[str, Any] = json.loads(argv[1])
    keep: list[Any] = []
    made: Counter[Key] = Counter()
    try:
        prctl(PR_SET_NAME, cfg["comm"].encode()[:15])
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        setup = SETUP.get(cfg["role"])
        emit("setup", setup(cfg, keep, made) if setup else {})
        line = sys.stdin.readline()
        if not line.startswith("go"):
            return 0  # population gave up before "go"
        go_step = GO.get(cfg["role"])
        if go_step:
            go_step(cfg, json.loads(line[2:] or "{}"), keep, made)
        emit("ready", {"pid": os.getpid(), "made": [[*k, n] for k, n in made.items()]})
    except Exception as exc:
        traceback.print_exc()
        sys.stdout.write(f"error {cfg['role']}: {exc!r}\n")
        sys.stdout.flush()
        return 1
    sys.stdin.read()  # hold the sockets until EOF
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

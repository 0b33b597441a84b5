"""README's commands, so that the documentation cannot rot: the TLS and basic-auth walkthrough and the
CLOSE_WAIT one-liner run as written (the code blocks are read from README.md) against the real
exporter in a network namespace of their own; every shell block uses the virtual environment's
programs, never a bare ``python3``/``pip`` or ``sudo``."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from tests._require import require, require_module, require_tool
from tests.netns import Netns

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text of the section headed ``title`` (any level), up to the next heading of its level or above."""
    m = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert m, f"README has no section {title!r}"
    rest = README[m.end():]
    end = re.search(rf"^#{{1,{len(m[1])}}} ", rest, re.M)
    return rest[: end.start() if end else None]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


def test_shell_blocks_use_the_venv_and_no_bare_sudo() -> None:
    lines = [line for block in sh_blocks(README) for line in block.splitlines()]
    assert len(lines) > 40
    bad = []
    for line in lines:
        code = re.sub(r"(^|\s)#.*", "", line)  # comments may say anything
        code = re.sub(r"'[^']*'", "''", code)  # nor may quoted text (python -c programs, grep patterns)
        if re.search(r"(^|[\s;&|(])(sudo|pip3?|python3?)\s", code) and not re.search(r"python3 -(m venv|c '')", code):
            bad.append(line)
    assert not bad, "bare sudo/pip/python (use $SUDO and .venv/bin/...):\n" + "\n".join(bad)
    assert "socket-exporter[auth]" not in README, "not on a package index: .venv/bin/pip install '.[auth]'"


def test_prometheus_reload_recipe_says_it_needs_the_lifecycle_flag() -> None:
    wiring = section("Wiring it up")
    assert "curl -X POST http://localhost:9090/-/reload" in wiring
    assert "--web.enable-lifecycle" in wiring and "systemctl reload prometheus" in wiring


def venv_link(directory: Path) -> None:
    """``directory/.venv``: the virtual environment running this suite (README's commands say .venv/bin/...)."""
    venv = Path(sys.executable).parent.parent
    require((venv / "pyvenv.cfg").exists() and (venv / "bin/socket-exporter").exists(),
            "needs the suite to run in a venv holding the package (python3 -m venv .venv; .venv/bin/pip install -e .)")
    (directory / ".venv").symlink_to(venv)


def test_tls_walkthrough_runs_as_written(netns: Netns, tmp_path: Path) -> None:
    """The three blocks, one shell, in a namespace (so :9731 is free), cwd a directory with ``.venv``."""
    for tool in ("openssl", "curl"):
        require_tool(tool)
    require_module("bcrypt")
    blocks = sh_blocks(section("TLS and basic auth, step by step"))
    assert len(blocks) == 3
    venv_link(tmp_path)
    script = "set -e\n" + "\n".join(blocks)
    proc = netns.run(["bash", "-c", script], cwd=tmp_path, check=False, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "config OK" in out
    assert len(re.findall(r"^socket_connections\{", out, re.M)) == 3, out
    assert "without the password: 401" in out and "plain HTTP: 000" in out
    assert re.fullmatch(r"[0-9a-f]{32}\n", (tmp_path / "tls/prometheus.password").read_text())
    san = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "tls/server.crt"), "-noout", "-ext",
                          "subjectAltName"], capture_output=True, text=True, check=True).stdout
    assert f"DNS:{socket.gethostname()}" in san and "DNS:localhost" in san and "IP Address:127.0.0.1" in san
    assert not netns.pids(), "the walkthrough's `kill %1` left the exporter running"


CLOSE_WAIT_HOLDER = r"""
import socket, sys, time
n = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(n)
held = []
for _ in range(n):
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    c.close()  # the peer closes; this process never closes s: CLOSE_WAIT
    held.append(s)
print("ready", flush=True)
time.sleep(120)
"""


def test_close_wait_one_liner_names_the_holder(netns: Netns, tmp_path: Path) -> None:
    require_tool("curl")
    (block,) = sh_blocks(section("Which process holds the CLOSE_WAIT sockets?"))
    holders = {n: netns.popen([sys.executable, "-c", CLOSE_WAIT_HOLDER, str(n)], stdout=subprocess.PIPE, text=True)
               for n in (3, 7)}
    assert all(p.stdout is not None and p.stdout.readline() == "ready\n" for p in holders.values())
    exporter = netns.popen([sys.executable, "-m", "exporter"], cwd=ROOT, stderr=subprocess.DEVNULL)
    netns.wait_listening(9731, exporter)
    out = netns.run(["bash", "-c", block], check=False).stdout.splitlines()
    assert [line.split()[0] for line in out] == ["7.0", "3.0"], out
    assert f'pid="{holders[7].pid}"' in out[0] and 'status="CLOSE_WAIT"' in out[0]

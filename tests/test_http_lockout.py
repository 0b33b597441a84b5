"""Nobody can lock Prometheus out (issue 9): the attack that did, reproduced against the real server.

The attack: connections opened at ~80 per second from the scraper's own address, each pipelining 8
``GET /metrics`` and never reading, topped up as the server closes them, so there are always more of
them than the server has slots. Before the asyncio transport, connections stuck writing (and, with
basic auth, waiting out their delayed 401s) were never evicted: once they filled every slot, 0 of 60
real scrapes were answered. The slots are fewer here than the default 2048 to keep the test short
(``SOCKET_EXPORTER_LOCKOUT_FULL=1`` runs the full size: 2048 slots, 2100 attackers); the shape is the
same: more attackers than slots, opened at the same rate, from the same address. At the full size
the per-address cap (1536) binds first: one address never holds more, and the flood churns below it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from exporter.web.server import ServerLimits
from tests._hostile import busy_procfs, flood, mtu_1500, scrapes, server
from tests._require import require_module, require_netns
from tests.exposition import samples
from tests.netns import Netns

FULL = os.environ.get("SOCKET_EXPORTER_LOCKOUT_FULL") == "1"
SLOTS = 2048 if FULL else 256
ATTACKERS = 2100 if FULL else 320
RATE = 80.0
GET = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n"
PASSWORD = "scrape me"


def _attack(tmp: Path, *flags: str, auth: str = "") -> tuple[list[tuple[int | str, float, str]], dict[str, int]]:
    require_netns()
    with Netns() as ns:
        mtu_1500(ns)
        with server(ns, tmp / "server.log", {"max_connections": SLOTS}, *flags, procfs=busy_procfs(tmp)), \
                flood(ns, RATE, ATTACKERS, GET, 8) as attack:
            time.sleep(ATTACKERS / RATE + 1)  # every slot taken, and more attackers than slots
            results = scrapes(ns, 30, 0.2, auth)
        assert "Traceback" not in (tmp / "server.log").read_text()
    answered = [r for r in results if r[0] == 200]
    print(f"\n{len(answered)} of 30 scrapes answered under the flood {attack}; "
          f"others: {[r[:2] for r in results if r[0] != 200]}")
    assert len(answered) >= 28, [r[:2] for r in results]
    last = samples(answered[-1][2])
    evicted = last["socket_exporter_http_connections_evicted_total"][0][1]
    open_now = last["socket_exporter_http_open_connections"][0][1]
    slots = min(SLOTS, ServerLimits().max_connections_per_client)  # what one address may hold
    assert evicted >= ATTACKERS - slots and open_now >= slots * 0.8, (evicted, open_now)  # the flood did fill
    assert attack["lost"] >= ATTACKERS - slots, attack
    return results, attack


def test_pipelining_clients_that_never_read_cannot_lock_out_scrapes(tmp_path: Path) -> None:
    _attack(tmp_path)


def test_delayed_401s_are_evictable(tmp_path: Path) -> None:
    """With basic auth every attacking request waits out its 401 delay: those connections must go too."""
    require_module("bcrypt")
    import bcrypt

    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    config.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    _attack(tmp_path, "--web.config.file", str(config), auth=f"prometheus:{PASSWORD}")

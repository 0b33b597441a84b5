"""An unauthenticated client cannot grow the exporter's memory: the attacks that did, against the real exporter.

Each attack runs for HOLD seconds from four 127.0.1.x addresses against ``python -m exporter`` in a
namespace whose ``lo`` has MTU 1500, while a scraper from 127.0.0.1 scrapes every half second. It must
get every answer, the exporter's RSS must stay under PEAK_MB throughout, and 10 s after the attackers
left it must be back within KEPT_MB of what it was before. The figures are printed (``-s``) for the
security chapter of the docs.
"""

from __future__ import annotations

import base64
import statistics
import time
from pathlib import Path

import pytest

from tests._attack import Attack, Watch, attacking, client_hello, rss_mb, scraping, settle
from tests._certs import Pki, make_pki
from tests._hostile import mtu_1500
from tests._require import require_module, require_netns
from tests._served import running_exporter
from tests.netns import Netns

PORT = 9731
HOLD = 20.0
PEAK_MB, KEPT_MB = 150.0, 25.0
PASSWORD = "right horse battery staple"
HELLO = client_hello()
HEADERS = b"".join(b"X-Filler-%04d: %s\r\n" % (i, b"a" * 100) for i in range(110))  # ~12.5 KiB, under 16 KiB
GET = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n"
POST = b"POST /metrics HTTP/1.1\r\nHost: exporter\r\nContent-Length: 65000\r\n"

#: name -> (attacks, TLS?): the shapes the issue measured, at its sizes (count is per source address).
ATTACKS: dict[str, tuple[list[Attack], bool]] = {
    "silent_and_stalled_hellos": ([Attack("hold", 500), Attack("hold", 125, first=HELLO[:60])], True),
    "silent_tls": ([Attack("hold", 550)], True),
    "partial_hellos": ([Attack("hold", 550, first=HELLO[:-1])], True),
    "stalled_handshakes": ([Attack("hold", 550, first=HELLO)], True),
    "full_handshakes": ([Attack("handshake", 50)], True),
    "slow_header_blocks": ([Attack("hold", 500, first=GET + HEADERS[:8192], trickle=HEADERS[8192:], step=200)], False),
    "slow_post_bodies": ([Attack("hold", 500, first=POST + HEADERS + b"\r\n", trickle=b"x" * 65000, step=2000)],
                         False),
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _web_config(tmp: Path, pki: Pki, users: dict[str, str] | None = None) -> Path:
    lines = ["tls_server_config:", f"  cert_file: {pki.server_cert}", f"  key_file: {pki.server_key}"]
    if users:
        lines += ["basic_auth_users:"] + [f"  {u}: '{h}'" for u, h in users.items()]
    path = tmp / "web.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _round(ns: Netns, pid: int, attacks: list[Attack], ca: Path | None, hold: float = HOLD) -> dict[str, float]:
    """One attack round with scrapes throughout: the figures, after asserting every scrape was answered."""
    before = rss_mb(pid)
    scrapes = int(hold / 0.5)
    with Watch(pid) as watch, attacking(ns, PORT, attacks, ca) as counts, \
            scraping(ns, PORT, scrapes, 0.5, ca=ca) as answers:
        time.sleep(hold)
    after = settle(pid, 10.0)
    failed = [a for a in answers if a[0] != 200]
    figures = {"before": before, "peak": watch.peak, "after": after, "peak_fds": watch.peak_fds,
               "answered": len(answers) - len(failed), "scrapes": len(answers),
               "p50_ms": 1000 * statistics.median(a[1] for a in answers)}
    print(f"\n  {figures} attackers {counts}")
    assert not failed, failed
    assert sum(c.get("opened", 0) + c.get("handshakes", 0) for c in counts) >= sum(a.count for a in attacks)
    return figures


def _attacked(tmp: Path, pki: Pki, attacks: list[Attack], tls: bool, hold: float) -> dict[str, float]:
    """The real exporter (TLS or plain) in a namespace with MTU 1500, warmed by two scrapes, then one round."""
    require_netns()
    flags = ["--web.config.file", str(_web_config(tmp, pki))] if tls else []
    with Netns() as ns:
        mtu_1500(ns)
        with running_exporter(ns, PORT, tmp / "exporter.log", *flags) as proc:
            with scraping(ns, PORT, 2, 0.2, ca=pki.ca if tls else None):
                pass  # warm: the first collection's memory is not the attack's
            figures = _round(ns, proc.pid, attacks, pki.ca if tls else None, hold)
        assert "Traceback" not in (tmp / "exporter.log").read_text()
    return figures


#: Shapes whose peak is not yet bounded (handshakes churning through OpenSSL grow the heap past PEAK_MB while
#: they last; it is given back after): run and reported, expected to fail until that is fixed.
HANDSHAKE_CHURN = pytest.mark.xfail(reason="peak RSS under handshake churn above 150 MB; see docs/security.md")


CHURNING = ("full_handshakes", "stalled_handshakes")


@pytest.mark.parametrize("name", [pytest.param(n, marks=HANDSHAKE_CHURN) if n in CHURNING else n for n in ATTACKS])
def test_attack_keeps_memory_bounded_and_scrapes_answered(tmp_path: Path, pki: Pki, name: str) -> None:
    attacks, tls = ATTACKS[name]
    f = _attacked(tmp_path, pki, attacks, tls, HOLD)
    print(f"  {name}: RSS {f['before']:.0f} MB before, peak {f['peak']:.0f} MB, {f['after']:.0f} MB 10 s after")
    assert f["peak"] < PEAK_MB and f["after"] - f["before"] < KEPT_MB, f


#: name -> (attack from one address, TLS?): connections opened and closed as fast as the kernel lets.
FLOODS: dict[str, tuple[Attack, bool]] = {
    "connect_close": (Attack("churn", 64, sources=1), False),
    "request_close": (Attack("churn", 64, first=GET + b"\r\n", sources=1), False),
    "hello_close": (Attack("churn", 64, first=HELLO, sources=1), True),
}


@pytest.mark.parametrize("name", list(FLOODS))
def test_a_flood_from_one_address_does_not_starve_another(tmp_path: Path, pki: Pki, name: str) -> None:
    attack, tls = FLOODS[name]
    f = _attacked(tmp_path, pki, [attack], tls, 10.0)
    print(f"  {name}: {f['answered']} of {f['scrapes']} scrapes answered, p50 {f['p50_ms']:.0f} ms")
    assert f["peak"] < PEAK_MB


def test_a_wrong_password_flood_does_not_delay_the_right_password(tmp_path: Path, pki: Pki) -> None:
    """bcrypt at cost 12 (~0.3 s a check here): four addresses guessing, as fast as the 401s come back."""
    require_netns()
    require_module("bcrypt")
    import bcrypt

    users = {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()}
    wrong = b"Authorization: Basic " + base64.b64encode(b"prometheus:guess") + b"\r\n\r\n"
    with Netns() as ns:
        mtu_1500(ns)
        with running_exporter(ns, PORT, tmp_path / "exporter.log", "--web.config.file",
                              str(_web_config(tmp_path, pki, users))) as proc:
            with attacking(ns, PORT, [Attack("requests", 25, first=GET + wrong)], pki.ca) as counts, \
                    scraping(ns, PORT, 36, 0.5, ca=pki.ca, auth=f"prometheus:{PASSWORD}") as answers:
                time.sleep(18)
            rss = rss_mb(proc.pid)
    ok = [a for a in answers if a[0] == 200]
    p50 = 1000 * statistics.median(a[1] for a in answers)
    print(f"\n  wrong-password flood {counts}: {len(ok)} of {len(answers)} answered, p50 {p50:.0f} ms, "
          f"RSS {rss:.0f} MB")
    assert len(ok) == len(answers) and p50 < 100, answers
    assert sum(c["answers"] for c in counts) > 100  # the guesses were answered (401s), not just dropped

"""The web config is read again on every reload (issue 9): certificates rotate, users are revoked,
a bad file keeps the last good one, and a reload that hangs is abandoned without wedging the next.

Real certificates (tests/_certs.py, two PKIs: the rotation swaps one for the other) and real bcrypt
hashes, against the real exporter process. exporter-toolkit re-reads the files per handshake; here
a reload (SIGHUP or ``POST /-/reload``) does, and the server uses the new config for every new
connection.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from pathlib import Path

import pytest

from exporter.reload import Reloader
from exporter.settings.config import load_config
from exporter.web.config import load_web_config
from tests._certs import Pki, make_pki
from tests._http import Client, basic
from tests._process import exporter
from tests._require import require_module

PASSWORD, ALICE = "correct horse battery staple", "alice's password"


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pki, Pki]:
    return make_pki(tmp_path_factory.mktemp("pki-a")), make_pki(tmp_path_factory.mktemp("pki-b"))


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    require_module("bcrypt")
    import bcrypt

    return {user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
            for user, password in (("prometheus", PASSWORD), ("alice", ALICE))}


def web_yaml(users: dict[str, str], tls: bool = True, extra: str = "") -> str:
    text = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + extra if tls else ""
    return text + "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in users.items())


def replace(path: Path, source: Path) -> None:
    """Rotate a file as cert-manager or certbot do: write beside it, rename over it."""
    tmp = path.with_suffix(".new")
    shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def peer_certificate(port: int, ca: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def test_rotated_certificate_and_revoked_user_take_effect_on_reload(tmp_path: Path, pkis: tuple[Pki, Pki],
                                                                    hashes: dict[str, str]) -> None:
    a, b = pkis
    live = tmp_path / "live"
    live.mkdir()
    replace(live / "server.crt", a.server_cert)
    replace(live / "server.key", a.server_key)
    web = live / "web.yml"
    web.write_text(web_yaml(hashes))
    prometheus, alice = basic("prometheus", PASSWORD), basic("alice", ALICE)
    with exporter(tmp_path, "--web.config.file", str(web), "--web.enable-lifecycle") as run:
        assert Client(run.port, ca=a.ca).get(headers=alice)[0] == 200
        assert peer_certificate(run.port, a.ca) == der(a.server_cert)

        replace(live / "server.key", b.server_key)
        replace(live / "server.crt", b.server_cert)
        assert peer_certificate(run.port, a.ca) == der(a.server_cert)  # files alone change nothing
        run.sighup()
        run.wait_log("web config reloaded")
        assert peer_certificate(run.port, b.ca) == der(b.server_cert)  # a new handshake: the new certificate
        with pytest.raises(ssl.SSLError):
            peer_certificate(run.port, a.ca)
        client = Client(run.port, ca=b.ca)

        web.write_text(web_yaml({"prometheus": hashes["prometheus"]}))  # alice is revoked
        status, message, _ = client.get("/-/reload", headers=prometheus, method="POST")
        assert status == 200 and "basic auth on (1 users)" in message, message
        assert client.get(headers=alice)[0] == 401
        assert client.get(headers=prometheus)[0] == 200

        for n, (bad, why) in enumerate([(web_yaml(hashes, extra="  cipher_suites: [x]\n"), "not supported"),
                                        (web_yaml(hashes, tls=False), "needs a restart")], start=1):
            web.write_text(bad)  # both would give alice back: neither may
            run.sighup()
            text = run.wait_log("config reload (SIGHUP) failed", count=n)
            failures = [line for line in text.splitlines() if "failed" in line]
            assert len(failures) == n and str(web) in failures[-1] and why in failures[-1], failures
            assert client.metric("socket_config_last_reload_successful", prometheus) == 0
            assert client.get(headers=alice)[0] == 401 and client.get(headers=prometheus)[0] == 200
            assert peer_certificate(run.port, b.ca) == der(b.server_cert)

        web.write_text(web_yaml(hashes))
        run.sighup()
        run.wait_log("web config reloaded", count=3)  # SIGHUP, POST, this one
        assert client.metric("socket_config_last_reload_successful", prometheus) == 1
        assert client.get(headers=alice)[0] == 200


def test_a_read_that_hangs_is_abandoned_and_the_next_reload_works(tmp_path: Path, hashes: dict[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A real hang, bounded: a user whose hash has cost 14 makes the reload compute a dummy hash of
    that cost (seconds of bcrypt). The reload gives up after its timeout; the next one, with a good
    file, succeeds at once while the abandoned read still runs, and its late result is dropped. Stuck
    reads are capped (MAX_STUCK_READS): past the cap a reload fails at once instead of adding one."""
    config, web = tmp_path / "c.yml", tmp_path / "web.yml"
    config.write_text("kinds: [tcp4]\n")
    web.write_text(web_yaml(hashes, tls=False))
    reloader = Reloader(str(config), {}, load_config(str(config)), web_path=str(web),
                        web_config=load_web_config(str(web)), timeout=0.5)
    good = reloader.web_config
    assert good is not None
    web.write_text(web_yaml({"slow": "$2b$14$" + "a" * 53}, tls=False))
    start = time.monotonic()
    ok, message = reloader.reload("test")
    assert not ok and time.monotonic() - start < 2 and "did not finish within 0.5 s" in message, message
    assert reloader.stuck == 1 and reloader.web_config is good
    assert reloader.state.reload is not None and not reloader.state.reload.successful

    web.write_text(web_yaml({"prometheus": hashes["prometheus"]}, tls=False))
    start = time.monotonic()
    ok, message = reloader.reload("test")
    assert ok and time.monotonic() - start < 2, message
    # The stuck read (seconds of bcrypt) still runs; with the cap at 1, the next reload fails at once.
    monkeypatch.setattr("exporter.reload.MAX_STUCK_READS", 1)
    start = time.monotonic()
    ok, message = reloader.reload("test")
    assert not ok and time.monotonic() - start < 0.3 and "1 earlier reloads are still stuck" in message, message
    deadline = time.monotonic() + 60
    while reloader.stuck:
        assert time.monotonic() < deadline, "the abandoned read never returned"
        time.sleep(0.1)
    assert reloader.web_config is not None and [u for u, _ in reloader.web_config.users] == ["prometheus"]
    monkeypatch.undo()
    assert reloader.reload("test")[0]

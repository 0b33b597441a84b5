"""TLS and basic auth from a web config, against a real PKI and real bcrypt (issue 6).

Certificates are made per test session (tests/_certs.py); hashes with bcrypt at cost 10, what
``htpasswd -nBC 10`` makes. The two proofs under load run the exporter as its own process.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.web.config import WebConfig, load_web_config
from exporter.web.server import ServerLimits
from tests._certs import Pki, make_pki
from tests._http import Client, basic, exporter_process, new_server, raise_fd_limit, serving
from tests._require import require_module

PASSWORD = "correct horse battery staple"
NO_DELAY = ServerLimits(auth_failure_delay=0.0)  # functional tests need not wait out the tarpit


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    require_module("bcrypt")
    import bcrypt

    return {user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
            for user, password in (("prometheus", PASSWORD), ("alice", "alice's password"))}


def web_config(tmp: Path, pki: Pki, *, users: dict[str, str] | None = None, **tls: str) -> Path:
    lines = ["tls_server_config:", f"  cert_file: {pki.server_cert}", f"  key_file: {pki.server_key}"]
    lines += [f"  {k}: {v}" for k, v in tls.items()]
    if users:
        lines += ["basic_auth_users:"] + [f"  {u}: '{h}'" for u, h in users.items()]
    path = tmp / f"web-{len(list(tmp.glob('web-*')))}.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def handshake_fails(client: Client) -> bool:
    try:
        client.get()
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return False


def stalled_handshake(port: int, ca: Path) -> socket.socket:
    """A connection that sent its ClientHello and nothing more: the handshake never finishes."""
    tls = ssl.create_default_context(cafile=str(ca)).wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(outgoing.read())
    return s


def test_tls_scrape_and_plain_http_refused(tmp_path: Path, pki: Pki) -> None:
    config = load_web_config(str(web_config(tmp_path, pki)))
    with serving(new_server(web_config=config)) as server:
        port = server.server_address[1]
        status, body, _ = Client(port, ca=pki.ca).get()
        assert status == 200 and "socket_exporter_http_tls_handshake_errors_total 0.0" in body
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            try:
                answer = s.recv(65536)
            except ConnectionResetError:
                answer = b""
            assert b"HTTP/1.1 200" not in answer
        deadline = time.monotonic() + 5  # counted by the loop once the handshake failed, maybe just after the close
        while server.stats.tls_errors < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stats.tls_errors == 1


def test_idle_connections_and_stalled_handshakes_do_not_delay_a_scrape(tmp_path: Path, pki: Pki) -> None:
    """The issue's proof: 1000 idle connections + 100 TLS handshakes stalled after the ClientHello."""
    raise_fd_limit(8192)
    with exporter_process(tmp_path, "--web.config.file", str(web_config(tmp_path, pki))) as port:
        client = Client(port, ca=pki.ca, timeout=5)
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
        try:
            held += [stalled_handshake(port, pki.ca) for _ in range(100)]
            time.sleep(0.5)
            latencies = []
            for _ in range(5):
                start = time.monotonic()
                status, _, _ = client.get()
                latencies.append(time.monotonic() - start)
                assert status == 200
            print(f"\nTLS scrape with 1000 idle + 100 stalled handshakes: max {max(latencies) * 1000:.0f} ms")
            assert max(latencies) < 1.0, latencies
            # every idle one held; of the stalled handshakes one address keeps max_handshakes_per_client (the
            # stalest of its others go: a handshake in progress holds OpenSSL's state, an idle connection none)
            kept = 1000 + ServerLimits().max_handshakes_per_client
            assert client.metric("socket_exporter_http_open_connections") >= kept
        finally:
            for s in held:
                s.close()


@pytest.mark.parametrize(("auth_type", "no_cert", "rogue_cert"), [
    ("RequireAndVerifyClientCert", False, False),
    ("VerifyClientCertIfGiven", True, False),
])
def test_client_certificates(tmp_path: Path, pki: Pki, auth_type: str, no_cert: bool, rogue_cert: bool) -> None:
    config = load_web_config(str(web_config(tmp_path, pki, client_ca_file=str(pki.ca), client_auth_type=auth_type)))
    with serving(new_server(web_config=config)) as server:
        port = server.server_address[1]
        assert Client(port, ca=pki.ca, cert=(pki.client_cert, pki.client_key)).get()[0] == 200
        assert handshake_fails(Client(port, ca=pki.ca)) is not no_cert
        assert handshake_fails(Client(port, ca=pki.ca, cert=(pki.rogue_cert, pki.rogue_key))) is not rogue_cert


def test_min_version_refuses_older_clients(tmp_path: Path, pki: Pki) -> None:
    config = load_web_config(str(web_config(tmp_path, pki, min_version="TLS13")))
    with serving(new_server(web_config=config)) as server:
        old = ssl.create_default_context(cafile=str(pki.ca))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        assert handshake_fails(Client(server.server_address[1], context=old))
        assert Client(server.server_address[1], ca=pki.ca).get()[0] == 200


def test_basic_auth_guards_every_path(tmp_path: Path, pki: Pki, hashes: dict[str, str]) -> None:
    config = load_web_config(str(web_config(tmp_path, pki, users=hashes)))
    with serving(new_server(web_config=config, limits=NO_DELAY)) as server:
        client = Client(server.server_address[1], ca=pki.ca)
        for path in ("/metrics", "/", "/-/healthy", "/nope"):
            status, _, resp = client.get(path)
            assert status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert client.get(headers={"Authorization": "Basic !!!"})[0] == 401
        assert client.get(headers={"Authorization": "Bearer x"})[0] == 401
        assert client.get(headers=basic("prometheus", PASSWORD))[0] == 200
        assert client.get(headers=basic("nobody", PASSWORD))[0] == 401
        assert client.get(headers=basic("prometheus", PASSWORD + "x" * 60))[0] == 401  # over bcrypt's 72 bytes
        assert server.stats.auth_failures == {"missing": 6, "invalid": 2}
        # A reload that drops the users opens the server for the next request.
        server.web_config = WebConfig(tls=config.tls)
        assert client.get()[0] == 200


def test_no_cache_accepts_a_wrong_password_cve_2022_46146(tmp_path: Path, pki: Pki, hashes: dict[str, str]) -> None:
    """After a success is cached, nothing but the same password for the same user may hit it."""
    config = load_web_config(str(web_config(tmp_path, pki, users=hashes)))
    with serving(new_server(web_config=config, limits=NO_DELAY)) as server:
        client = Client(server.server_address[1], ca=pki.ca)
        good = basic("prometheus", PASSWORD)
        assert client.get(headers=good)[0] == 200
        assert client.get(headers=good)[0] == 200  # from the cache
        forged = [("prometheus", "wrong"), ("prometheus", hashes["prometheus"]), ("prometheus", PASSWORD[:-1]),
                  ("prometheus", PASSWORD + "\0"), ("prometheus", "alice's password"), ("alice", PASSWORD),
                  ("prometheu", "s:" + PASSWORD), ("prometheus" + hashes["prometheus"], PASSWORD),
                  (hashes["prometheus"], ""), ("nobody", hashes["prometheus"])]
        for user, password in forged:
            assert client.get(headers=basic(user, password))[0] == 401, (user, password)
        assert client.get(headers=good)[0] == 200
        assert server.stats.auth_failures["invalid"] == len(forged)


def test_unknown_user_costs_the_same_as_a_wrong_password(tmp_path: Path, pki: Pki, hashes: dict[str, str]) -> None:
    config = load_web_config(str(web_config(tmp_path, pki, users=hashes)))
    with serving(new_server(web_config=config, limits=NO_DELAY)) as server:
        client = Client(server.server_address[1], ca=pki.ca)
        times: dict[str, list[float]] = {"prometheus": [], "nobody": []}
        for i in range(14):
            user = ("prometheus", "nobody")[i % 2]
            start = time.perf_counter()
            assert client.get(headers=basic(user, f"wrong {i}"))[0] == 401
            times[user].append(time.perf_counter() - start)
        known, unknown = (statistics.median(times[u]) for u in ("prometheus", "nobody"))
        print(f"\nmedian 401: wrong password {known * 1000:.0f} ms, unknown user {unknown * 1000:.0f} ms")
        assert 1 / 3 < unknown / known < 3, times


def test_password_flood_does_not_starve_scrapes(tmp_path: Path, pki: Pki, hashes: dict[str, str]) -> None:
    config = web_config(tmp_path, pki, users=hashes)
    with exporter_process(tmp_path, "--web.config.file", str(config)) as port:
        good = Client(port, ca=pki.ca, timeout=5)
        assert good.get(headers=basic("prometheus", PASSWORD))[0] == 200
        start = time.monotonic()
        assert good.get(headers=basic("prometheus", "wrong"))[0] == 401
        assert time.monotonic() - start >= 0.45  # refusals are held back: guessing cannot spin
        stop, flood = threading.Event(), Counter[int]()
        lock = threading.Lock()

        def attacker(n: int) -> None:
            conn = Client(port, ca=pki.ca, timeout=15).connection()
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    conn.request("GET", "/metrics", headers=basic(("prometheus", "nobody")[n % 2], f"guess {n} {i}"))
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                except OSError:
                    conn.close()
                    conn = Client(port, ca=pki.ca, timeout=15).connection()
                    status = 0
                with lock:
                    flood[status] += 1
            conn.close()

        threads = [threading.Thread(target=attacker, args=(n,)) for n in range(64)]  # more than max_auth_pending (32)
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # let the flood fill the bcrypt queue
            latencies = []
            for _ in range(20):
                start = time.monotonic()
                assert good.get(headers=basic("prometheus", PASSWORD))[0] == 200
                latencies.append(time.monotonic() - start)
                time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join()
        print(f"\npassword flood {dict(flood)}: good scrape max {max(latencies) * 1000:.0f} ms")
        assert set(flood) <= {401, 503}, flood
        assert flood[503] > 0  # the bcrypt queue did fill: the flood was a flood
        assert max(latencies) < 1.0, latencies


def test_large_response_to_a_slow_tls_reader(tmp_path: Path, pki: Pki) -> None:
    """Non-blocking TLS writes resume correctly after the socket buffer fills (SSLWantWrite)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class Big(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily]:
            family = GaugeMetricFamily("big", "many series", labels=["i"])
            for i in range(60000):
                family.add_metric([str(i)], i)
            yield family

    registry = CollectorRegistry()
    registry.register(Big())
    config = load_web_config(str(web_config(tmp_path, pki)))
    with serving(new_server(registry, web_config=config)) as server:
        context = ssl.create_default_context(cafile=str(pki.ca))
        with socket.create_connection(server.server_address, timeout=10) as raw_sock, \
                context.wrap_socket(raw_sock, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(0.5)  # let the server fill the socket buffers and wait for writability
            data = bytearray()
            while chunk := s.recv(4096):
                data += chunk
        head, _, body = bytes(data).partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"Content-Length")))
        assert len(body) == length > 1_000_000
        assert b'big{i="59999"} 59999.0\n' in body and body.endswith(b"socket_exporter_http_scrapes_in_flight 1.0\n")


def test_stalled_handshakes_are_evicted_at_the_cap(tmp_path: Path, pki: Pki) -> None:
    """Connections still in their TLS handshake are in the eviction order like any other."""
    config = load_web_config(str(web_config(tmp_path, pki)))
    with serving(new_server(web_config=config, limits=ServerLimits(max_connections=10))) as server:
        port = server.server_address[1]
        stalled = []
        stalled += [stalled_handshake(port, pki.ca) for _ in range(10)]
        try:
            deadline = time.monotonic() + 5
            while server.open_connections < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert Client(port, ca=pki.ca).get()[0] == 200
            assert server.stats.evicted >= 1 and server.stats.tls_errors == 0
            stalled[0].settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                while stalled[0].recv(65536):  # the ServerHello, then the end: the oldest went first
                    pass
        finally:
            for s in stalled:
                s.close()

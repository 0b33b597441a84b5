"""``python -m exporter.healthcheck``: the image's HEALTHCHECK and the Kubernetes exec probe keep
working when ``--web.config.file`` turns on TLS, basic auth or client certificates, against the real
exporter (``tests/_http.exporter_process``: a real ``python -m exporter`` on a free loopback port)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._certs import Pki, make_pki
from tests._http import FIXTURE_PROCFS, ROOT, exporter_process, free_port
from tests._require import require_module, require_root, require_tool

PASSWORD = "health check's own password"
ENV = "SOCKET_EXPORTER_HEALTHCHECK_"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def bcrypt_hash() -> str:
    require_module("bcrypt")
    import bcrypt

    return str(bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode())


def healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV)}
    return subprocess.run([sys.executable, "-m", "exporter.healthcheck", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={**base, **{ENV + k: v for k, v in env.items()}})


def write_web_config(tmp: Path, pki: Pki, users: dict[str, str] | None = None, **tls: str) -> Path:
    lines = ["tls_server_config:", f"  cert_file: {pki.server_cert}", f"  key_file: {pki.server_key}"]
    lines += [f"  {k}: {v}" for k, v in tls.items()]
    lines += ["basic_auth_users:", *(f"  {u}: '{h}'" for u, h in users.items())] if users else []
    path = tmp / "web.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plain_http_and_a_server_that_is_down(tmp_path: Path) -> None:
    with exporter_process(tmp_path) as port:
        ok = healthcheck(f"--web.listen-address=127.0.0.1:{port}", "--path.procfs=/ignored", "--source=proc")
        assert (ok.returncode, ok.stderr) == (0, "")
    down = healthcheck(f"--web.listen-address=127.0.0.1:{port}")
    assert down.returncode == 1 and f"http://127.0.0.1:{port}/-/healthy" in down.stderr
    assert len(down.stderr.splitlines()) == 1


def test_tls_with_basic_auth(tmp_path: Path, pki: Pki, bcrypt_hash: str) -> None:
    web = write_web_config(tmp_path, pki, {"prometheus": bcrypt_hash})
    (tmp_path / "password").write_text(PASSWORD + "\n")
    with exporter_process(tmp_path, "--web.config.file", str(web)) as port:
        flags = (f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}")
        ok = healthcheck(*flags, USERNAME="prometheus", PASSWORD_FILE=str(tmp_path / "password"))
        assert (ok.returncode, ok.stderr) == (0, "")
        assert healthcheck(*flags, USERNAME="prometheus", PASSWORD=PASSWORD).returncode == 0
        missing = healthcheck(*flags)
        assert missing.returncode == 1
        assert "401 (basic auth is on: set SOCKET_EXPORTER_HEALTHCHECK_USERNAME" in missing.stderr
        wrong = healthcheck(*flags, USERNAME="prometheus", PASSWORD="guess")
        assert wrong.returncode == 1 and "answered 401 (wrong credentials)" in wrong.stderr
        assert f"https://127.0.0.1:{port}/-/healthy" in wrong.stderr
        plain = healthcheck(f"--web.listen-address=127.0.0.1:{port}")  # not told about TLS: fails
        assert plain.returncode == 1


def test_client_certificates(tmp_path: Path, pki: Pki) -> None:
    web = write_web_config(tmp_path, pki, client_ca_file=str(pki.ca))
    with exporter_process(tmp_path, "--web.config.file", str(web)) as port:
        flags = (f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}")
        ok = healthcheck(*flags, CERT_FILE=str(pki.client_cert), KEY_FILE=str(pki.client_key))
        assert (ok.returncode, ok.stderr) == (0, "")
        assert healthcheck(*flags).returncode == 1
        rogue = healthcheck(*flags, CERT_FILE=str(pki.rogue_cert), KEY_FILE=str(pki.rogue_key))
        assert rogue.returncode == 1


def test_without_arguments_it_reads_the_flags_of_the_exporter_in_its_container(tmp_path: Path, pki: Pki,
                                                                              bcrypt_hash: str) -> None:
    """A private mount namespace stands in for the container (``unshare -m``): the exporter inside
    runs as the image's entrypoint does, a console script with TLS and auth and a relative path."""
    require_root()
    unshare = require_tool("unshare")
    script = Path(sys.executable).parent / "socket-exporter"
    assert script.exists(), "the package's console script (pip install -e .)"
    write_web_config(tmp_path, pki, {"prometheus": bcrypt_hash})
    port = free_port()
    inside = (f"{script} --web.listen-address=127.0.0.1:{port} --web.config.file=web.yml --source=proc "
              f"--path.procfs={FIXTURE_PROCFS} 2>exporter.log & "
              f"for i in $(seq 100); do grep -q serving exporter.log && break; sleep 0.1; done; "
              f"cd {ROOT}; {sys.executable} -m exporter.healthcheck; echo \"with credentials: $?\"; "
              f"unset {ENV}USERNAME; {sys.executable} -m exporter.healthcheck; echo \"without: $?\"; kill $!")
    env = {**os.environ, ENV + "USERNAME": "prometheus", ENV + "PASSWORD": PASSWORD}
    proc = subprocess.run([unshare, "--mount", "sh", "-c", inside], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=env)
    assert "with credentials: 0" in proc.stdout, proc.stdout + proc.stderr + (tmp_path / "exporter.log").read_text()
    assert "without: 1" in proc.stdout and f"https://127.0.0.1:{port}/-/healthy: answered 401" in proc.stderr

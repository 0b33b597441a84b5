"""The web config (``--web.config.file``): every refusal as one line naming file, key and value.

Bad configs are files under fixtures/web_config/ whose first line says the error they must produce
(``# expect: ...``), as for the main config. Files they name (``server.crt``...) do not exist: values
are checked before files are read, so the first error is the one expected. Certificate checks use a
PKI made at test time (tests/_certs.py).
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.web.config import WebConfig, WebConfigError, load_web_config
from tests._certs import Pki, make_pki
from tests._require import require_module

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/web_config"
BAD = sorted(FIXTURES.glob("*.yml"))


def expected_error(path: Path) -> str:
    return path.read_text().splitlines()[0].removeprefix("# expect: ")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_web_config_is_refused_with_one_line(path: Path) -> None:
    if "basic_auth_users" in path.read_text():
        require_module("bcrypt")  # some are refused only after the hashes pass
    with pytest.raises(WebConfigError) as exc:
        load_web_config(str(path))
    message = str(exc.value)
    assert message.startswith(f"{path}: "), message
    assert expected_error(path) in message, message
    assert "\n" not in message


def test_empty_file_means_plain_http_without_auth() -> None:
    assert load_web_config(str(FIXTURES / "good/empty.yml")) == WebConfig(source=str(FIXTURES / "good/empty.yml"))


def test_htpasswd_and_python_bcrypt_hashes_are_accepted() -> None:
    require_module("bcrypt")
    config = load_web_config(str(FIXTURES / "good/users.yml"))
    assert config.tls is None and config.auth is not None
    assert config.auth.users == {"prometheus", "alice"}
    assert config.auth.verify("prometheus", b"test") and config.auth.verify("alice", b"test")
    assert not config.auth.verify("prometheus", b"Test")


def test_missing_file_is_one_line() -> None:
    with pytest.raises(WebConfigError, match=r"^/nonexistent/web.yml: cannot read: No such file or directory$"):
        load_web_config("/nonexistent/web.yml")


def write(pki: Pki, text: str) -> str:
    path = pki.ca.parent / "web.yml"
    path.write_text(text)
    return str(path)


def test_relative_paths_are_relative_to_the_config_file(pki: Pki) -> None:
    config = load_web_config(write(pki, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"))
    assert config.tls is not None and config.tls.cert_file == str(pki.server_cert)
    assert config.tls.context.verify_mode == ssl.CERT_NONE
    assert config.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default


@pytest.mark.parametrize(("extra", "verify"), [
    ("  client_ca_file: ca.crt\n", ssl.CERT_REQUIRED),  # a CA alone means: verify, and require
    ("  client_ca_file: ca.crt\n  client_auth_type: VerifyClientCertIfGiven\n", ssl.CERT_OPTIONAL),
    ("  client_auth_type: RequestClientCert\n", ssl.CERT_NONE),  # never uses an unverified certificate
])
def test_client_auth_types(pki: Pki, extra: str, verify: ssl.VerifyMode) -> None:
    text = f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}"
    config = load_web_config(write(pki, text))
    assert config.tls is not None and config.tls.context.verify_mode == verify


@pytest.mark.parametrize(("cert", "key", "ca", "error"), [
    ("server.crt", "other.key", None, "tls_server_config.key_file: '{d}/other.key' cannot be used with cert_file "
                                      "'{d}/server.crt' (mismatched, encrypted or malformed)"),
    ("server.key", "server.key", None, "tls_server_config.cert_file: '{d}/server.key' holds no PEM certificate"),
    ("server.crt", "server.crt", None, "tls_server_config.key_file: '{d}/server.crt' holds no PEM private key"),
    ("server.crt", "server.key", "client.key", "tls_server_config.client_ca_file: '{d}/client.key' holds no PEM "
                                               "certificate"),
])
def test_unusable_certificates_and_keys_are_named(pki: Pki, cert: str, key: str, ca: str | None, error: str) -> None:
    text = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
    if ca:
        text += f"  client_ca_file: {ca}\n"
    with pytest.raises(WebConfigError) as exc:
        load_web_config(write(pki, text))
    assert error.format(d=pki.ca.parent) in str(exc.value) and "\n" not in str(exc.value)


def test_cli_refuses_a_bad_web_config_with_exit_2() -> None:
    path = FIXTURES / "require_any.yml"
    proc = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", str(path), "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and expected_error(path) in lines[0] and str(path) in lines[0]


def test_users_without_bcrypt_installed_are_refused() -> None:
    """bcrypt is an optional extra; without it a config with users must not start (it would serve open)."""
    code = ("import sys; sys.modules['bcrypt'] = None\n"
            "from exporter.web.config import load_web_config, WebConfigError\n"
            "try:\n    load_web_config(sys.argv[1])\nexcept WebConfigError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "good/users.yml")], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip().endswith(
        "basic_auth_users: needs the bcrypt module: pip install bcrypt (or '.[auth]' from the source tree)"), \
        proc.stdout + proc.stderr


TLS_CLIENT_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                       "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def pinned_client(pki: Pki, version: str) -> ssl.SSLContext:
    """A client that speaks exactly ``version`` and allows every cipher: only the server decides."""
    import warnings

    context = ssl.create_default_context(cafile=str(pki.ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = TLS_CLIENT_VERSIONS[version]
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


@pytest.mark.parametrize("version", list(TLS_CLIENT_VERSIONS))
def test_min_version_is_refused_unless_it_can_be_negotiated(pki: Pki, version: str) -> None:
    """Either the config is refused with one line naming the key and the value, or a client speaking
    exactly that version gets in: a ``min_version`` is never a promise the server cannot keep."""
    from tests._http import Client, new_server, serving

    path = write(pki, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                      f"  min_version: {version}\n")
    try:
        config = load_web_config(path)
    except WebConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: tls_server_config.min_version: {version!r}: the local OpenSSL ")
        assert "will not negotiate it" in message and "\n" not in message
        return
    with serving(new_server(web_config=config)) as server:
        status, _, _ = Client(server.server_address[1], context=pinned_client(pki, version)).get()
        assert status == 200


def test_an_unusable_min_version_stops_the_exporter_with_exit_2(pki: Pki) -> None:
    refused = []
    for version in TLS_CLIENT_VERSIONS:
        path = write(pki, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                          f"  min_version: {version}\n")
        try:
            load_web_config(path)
        except WebConfigError:
            refused.append(version)
    if not refused:
        pytest.skip(f"{ssl.OPENSSL_VERSION} negotiates every TLS version")
    path = write(pki, f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                      f"  min_version: {refused[0]}\n")
    for extra in (["--config.check"], ["--web.listen-address", "127.0.0.1:0"]):
        proc = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", path, *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert proc.returncode == 2 and proc.stdout == ""
        [line] = proc.stderr.splitlines()
        assert f"{path}: tls_server_config.min_version: {refused[0]!r}: the local OpenSSL" in line


def test_a_certificate_path_that_is_a_fifo_is_refused_at_once(pki: Pki) -> None:
    import os

    fifo = pki.ca.parent / "fifo.crt"
    if not fifo.exists():
        os.mkfifo(fifo)
    path = write(pki, "tls_server_config:\n  cert_file: fifo.crt\n  key_file: server.key\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", path, "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 2
    assert f"tls_server_config.cert_file: not a regular file '{fifo}': a FIFO" in proc.stderr, proc.stderr


def test_config_check_says_it_checked_the_web_config(pki: Pki) -> None:
    path = write(pki, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    proc = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", path, "--config.check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"socket-exporter: built-in defaults: config OK; web config {path}: OK (TLS on "
                           "(TLS12+, client certificates: NoClientCert), basic auth off)\n")

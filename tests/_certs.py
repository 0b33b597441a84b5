"""Throw-away PKI for the TLS tests, made at test time (nothing secret is ever committed).

Made with the ``cryptography`` package when it is importable, else with the ``openssl`` CLI (skip,
or fail under CI, when neither is there). EC P-256 keys: fast to make, fast to handshake.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests._require import require_tool


@dataclass(frozen=True)
class Pki:
    ca: Path  # signs server and client
    server_cert: Path  # CN localhost, SANs localhost, 127.0.0.1, ::1
    server_key: Path
    client_cert: Path  # signed by ca, clientAuth
    client_key: Path
    rogue_cert: Path  # self-signed client certificate: no CA vouches for it
    rogue_key: Path
    other_key: Path  # a key that matches no certificate


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "rogue.crt", "rogue.key", "other.key")
    paths = [directory / n for n in names]
    if importlib.util.find_spec("cryptography") is not None:
        _with_cryptography(directory)
    else:
        _with_openssl(directory, require_tool("openssl"))
    return Pki(*paths)


def _with_cryptography(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key(name: str) -> ec.EllipticCurvePrivateKey:
        k = ec.generate_private_key(ec.SECP256R1())
        (d / name).write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return k

    def cert(name: str, cn: str, k: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
             issuer_key: ec.EllipticCurvePrivateKey | None, *, ca: bool = False,
             sans: list[x509.GeneralName] | None = None, usage: list[x509.ObjectIdentifier] | None = None) -> x509.Name:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        c = b.sign(issuer_key or k, hashes.SHA256())
        (d / name).write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return subject

    ca_key = key("ca.key")
    ca = cert("ca.crt", "socket_exporter test CA", ca_key, None, None, ca=True)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    x509.IPAddress(ipaddress.ip_address("::1"))]
    cert("server.crt", "localhost", key("server.key"), ca, ca_key, sans=sans, usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    cert("client.crt", "prometheus", key("client.key"), ca, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    cert("rogue.crt", "prometheus", key("rogue.key"), None, None, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    key("other.key")


def _with_openssl(d: Path, openssl: str) -> None:
    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d, timeout=60)

    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *newkey, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj",
        "/CN=socket_exporter test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "prometheus")):
        run("req", *newkey, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    run("req", "-x509", *newkey, "-keyout", "rogue.key", "-out", "rogue.crt", "-days", "2", "-subj", "/CN=prometheus",
        "-addext", "extendedKeyUsage=clientAuth")
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key")

"""The web config file (``--web.config.file``): TLS and basic auth for the HTTP server.

The format is the subset of Prometheus exporter-toolkit's ``web-config.yml`` that an exporter needs,
so one file (and one runbook) serves node_exporter and socket_exporter alike::

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file, as in exporter-toolkit
      key_file: server.key
      client_ca_file: clients-ca.crt   # optional: mutual TLS
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12               # TLS10 TLS11 TLS12 (default) TLS13; max_version likewise
    basic_auth_users:
      prometheus: $2b$10$...           # bcrypt hashes only (htpasswd -nBC 10 "" | tr -d ':\\n')

Why everything is checked here, at start: a typo'd key or an unreadable key file found at the first
scrape is an exporter that is "up" but serves nobody, or worse, serves plain HTTP where TLS was meant.
So unknown keys, keys exporter-toolkit has but this exporter does not implement (``cipher_suites``,
``http_server_config``...), a ``tls_server_config`` without a certificate (exporter-toolkit would
silently serve plain HTTP), unreadable or mismatched certificates and keys, and malformed bcrypt hashes
are all refused with one line naming the file, the key and the value, like exporter/settings/config.py does.
So is a ``min_version``/``max_version`` the local OpenSSL will not negotiate with this certificate
(TLS10, TLS11 on OpenSSL 3), found by a handshake in memory (tls_probe.py); and a file that is not
a regular file (a FIFO, a device), checked without blocking. exporter/reload.py reads the file on
every reload (rotated certificates, revoked users); unchanged users keep their BasicAuth and cache.

Client certificates: Python's ``ssl`` verifies every certificate it asks for, so ``RequestClientCert``
(ask, never check; nothing here uses an unchecked certificate) is served as ``NoClientCert``, and
``RequireAnyClientCert`` (demand a certificate but accept any, forged ones included) is refused as a
false sense of security: use ``RequireAndVerifyClientCert`` with ``client_ca_file``.
"""

from __future__ import annotations

import os
import re
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..settings.strict_yaml import YamlRefused, read_capped, read_regular
from ..settings.strict_yaml import load as load_yaml
from ..settings.validators import check_keys, fail
from .auth import BasicAuth, bcrypt_available
from .tls_probe import negotiates

MAX_WEB_CONFIG_BYTES = 64 * 1024
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH_TYPES = {"NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_NONE,
                     "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                     "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
TOP_KEYS = ("tls_server_config", "basic_auth_users")
TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
# exporter-toolkit keys that are refused with "not supported" rather than "unknown", so an operator
# copying a node_exporter web config learns which line to drop instead of suspecting a typo.
TOOLKIT_ONLY = ("http_server_config", "rate_limit", "cipher_suites", "curve_preferences",
                "prefer_server_cipher_suites", "client_allowed_sans", "cert", "key", "client_ca")
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


class WebConfigError(Exception):
    """A web config that cannot be used. str() is the one line shown to the operator."""


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_ca_file: str | None
    client_auth_type: str
    min_version: str
    max_version: str | None
    context: ssl.SSLContext = field(compare=False, repr=False)


@dataclass(frozen=True)
class WebConfig:
    """TLS (``tls is None``: plain HTTP) and basic auth (``auth is None``: open) for the server."""

    tls: TLSServerConfig | None = None
    auth: BasicAuth | None = field(default=None, compare=False)
    source: str = ""
    users: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # (user, bcrypt hash), sorted

    def summary(self) -> str:
        """One line for the log and ``--config.check``: what this config turns on."""
        tls, auth = self.tls, self.auth
        return (f"TLS {f'on ({tls.min_version}+, client certificates: {tls.client_auth_type})' if tls else 'off'}, "
                f"basic auth {f'on ({len(auth.users)} users)' if auth else 'off'}")


def _fail(where: str, key: str, message: str) -> Exception:
    return fail(where, key, message, WebConfigError)


def _check_keys(where: str, prefix: str, data: Mapping[Any, Any], allowed: tuple[str, ...]) -> None:
    check_keys(where, prefix, data, allowed, WebConfigError, TOOLKIT_ONLY,
               "exporter-toolkit option not supported by socket_exporter")


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, key, f"got {value!r} ({type(value).__name__}); want a non-empty string")
    return value


def _choice(where: str, key: str, value: Any, allowed: Mapping[str, Any]) -> str:
    if value not in allowed:
        raise _fail(where, key, f"got {value!r}; allowed: {', '.join(allowed)}")
    return str(value)


def _readable_pem(where: str, key: str, path: str, marker: str) -> None:
    """Name the broken file before OpenSSL does: its errors do not say which of cert/key failed."""
    try:
        text = read_regular(path, 1024 * 1024)
    except YamlRefused as exc:  # "cannot read: No such file..." or "not a regular file: a FIFO"
        what, _, why = str(exc).partition(": ")
        raise _fail(where, key, f"{what} {path!r}: {why}") from None
    if f"-----BEGIN {marker}".encode() not in text and not (marker == "PRIVATE KEY" and b" PRIVATE KEY-----" in text):
        raise _fail(where, key, f"{path!r} holds no PEM {marker.lower()}")


def _tls_context(where: str, tls: Mapping[str, Any], base: str) -> TLSServerConfig:
    _check_keys(where, "tls_server_config.", tls, TLS_KEYS)
    if "cert_file" not in tls or "key_file" not in tls:
        missing = "cert_file" if "cert_file" not in tls else "key_file"
        raise _fail(where, f"tls_server_config.{missing}", "missing; tls_server_config needs cert_file and "
                    "key_file (remove tls_server_config to serve plain HTTP)")
    cert, key = (os.path.join(base, _string(where, f"tls_server_config.{k}", tls[k]))
                 for k in ("cert_file", "key_file"))
    ca = tls.get("client_ca_file")
    ca = os.path.join(base, _string(where, "tls_server_config.client_ca_file", ca)) if ca is not None else None
    auth_type = tls.get("client_auth_type", "RequireAndVerifyClientCert" if ca else "NoClientCert")
    if auth_type == "RequireAnyClientCert":
        raise _fail(where, "tls_server_config.client_auth_type", "'RequireAnyClientCert' accepts any (even forged) "
                    "certificate and is not supported; use RequireAndVerifyClientCert with client_ca_file")
    auth_type = _choice(where, "tls_server_config.client_auth_type", auth_type, CLIENT_AUTH_TYPES)
    verify = CLIENT_AUTH_TYPES[auth_type]
    if verify != ssl.CERT_NONE and ca is None:
        raise _fail(where, "tls_server_config.client_auth_type", f"{auth_type!r} needs client_ca_file")
    if verify == ssl.CERT_NONE and ca is not None:
        raise _fail(where, "tls_server_config.client_ca_file", f"set, but client_auth_type {auth_type!r} never "
                    "checks client certificates; use VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    min_version = _choice(where, "tls_server_config.min_version", tls.get("min_version", "TLS12"), TLS_VERSIONS)
    max_version = tls.get("max_version")
    if max_version is not None:
        max_version = _choice(where, "tls_server_config.max_version", max_version, TLS_VERSIONS)
        if TLS_VERSIONS[max_version] < TLS_VERSIONS[min_version]:
            raise _fail(where, "tls_server_config.max_version", f"{max_version!r} is below min_version {min_version!r}")

    _readable_pem(where, "tls_server_config.cert_file", cert, "CERTIFICATE")
    _readable_pem(where, "tls_server_config.key_file", key, "PRIVATE KEY")
    try:
        with warnings.catch_warnings():  # TLS10/TLS11 are deprecated: refused below unless they work here
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = _server_context(cert, key, TLS_VERSIONS[min_version],
                                  TLS_VERSIONS[max_version] if max_version is not None else None)
    except (ssl.SSLError, OSError) as exc:
        raise _fail(where, "tls_server_config.key_file", f"{key!r} cannot be used with cert_file {cert!r} "
                    f"(mismatched, encrypted or malformed): {getattr(exc, 'reason', None) or exc}") from None
    for name, value in (("min_version", min_version), ("max_version", max_version)):
        if value is not None and not negotiates(lambda v: _server_context(cert, key, v, v), TLS_VERSIONS[value]):
            usable = [v for v, version in TLS_VERSIONS.items()
                      if negotiates(lambda v: _server_context(cert, key, v, v), version)]
            raise _fail(where, f"tls_server_config.{name}", f"{value!r}: the local OpenSSL ({ssl.OPENSSL_VERSION}) "
                        f"will not negotiate it with this certificate; it does: {', '.join(usable) or 'none'}")
    if ca is not None:
        _readable_pem(where, "tls_server_config.client_ca_file", ca, "CERTIFICATE")
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise _fail(where, "tls_server_config.client_ca_file",
                        f"{ca!r}: {getattr(exc, 'reason', None) or exc}") from None
    ctx.verify_mode = verify
    return TLSServerConfig(cert, key, ca, auth_type, min_version, max_version, ctx)


def _server_context(cert: str, key: str, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion | None) -> ssl.SSLContext:
    """The server context without client verification: what the exporter serves and the probe tries."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # the event loop never has to write while it reads
    ctx.set_alpn_protocols(["http/1.1"])  # never let a Go client pick h2: this server speaks HTTP/1.1 only
    ctx.load_cert_chain(cert, key)
    return ctx


def _users(where: str, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise _fail(where, "basic_auth_users",
                    f"got {users!r} ({type(users).__name__}); want a mapping of user: bcrypt hash")
    checked: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise _fail(where, "basic_auth_users", f"user {user!r}: want a non-empty string without ':'")
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            shown = hashed if not isinstance(hashed, str) else f"{hashed[:7]}..." if len(hashed) > 7 else hashed
            raise _fail(where, f"basic_auth_users.{user}", f"got {shown!r}; want a bcrypt hash "
                        "($2a$, $2b$ or $2y$, cost 04-31, 53 more characters), e.g. from htpasswd -nBC 10")
        checked[user] = hashed.encode()
    if checked and not bcrypt_available():
        raise _fail(where, "basic_auth_users",
                    "needs the bcrypt module: pip install bcrypt (or '.[auth]' from the source tree)")
    return checked


def parse_web_config(text: str, where: str, base_dir: str = ".", previous: WebConfig | None = None) -> WebConfig:
    """Validate YAML text into a WebConfig; file paths in it are relative to ``base_dir``.

    ``previous`` (a reload): its BasicAuth, with its cache, is kept when users and hashes are unchanged."""
    try:
        data = load_yaml(text)
    except YamlRefused as exc:
        raise _fail(where, "", str(exc)) from None
    if data is None:
        return WebConfig(source=where)  # exporter-toolkit accepts an empty file: plain HTTP, no auth
    if not isinstance(data, dict):
        raise _fail(where, "", f"got {type(data).__name__}; want a mapping at the top level")
    _check_keys(where, "", data, TOP_KEYS)
    tls = None
    if "tls_server_config" in data:
        section = data["tls_server_config"]
        if not isinstance(section, dict):
            raise _fail(where, "tls_server_config", f"got {section!r}; want a mapping with cert_file and key_file")
        tls = _tls_context(where, section, base_dir)
    users = _users(where, data.get("basic_auth_users", {}))
    pairs = tuple(sorted(users.items()))
    if previous is not None and previous.auth is not None and previous.users == pairs:
        auth: BasicAuth | None = previous.auth
    else:
        auth = BasicAuth(users) if users else None
    return WebConfig(tls=tls, auth=auth, source=where, users=pairs)


def load_web_config(path: str, previous: WebConfig | None = None) -> WebConfig:
    """Read and validate a web config file. Raises WebConfigError with a one-line message."""
    try:
        _, text = read_capped(path, MAX_WEB_CONFIG_BYTES)
    except YamlRefused as exc:
        raise WebConfigError(f"{path}: {exc}") from None
    return parse_web_config(text, path, os.path.dirname(os.path.abspath(path)), previous)

"""HTTP basic auth against bcrypt hashes, safe against the known ways such checks go wrong.

* **No cache can accept a wrong password** (CVE-2022-46146). exporter-toolkit cached the *result* of
  every check under a key built by concatenating user, hash and password, so a cached entry could be
  reached with credentials that were never verified. Here only *successes* are cached, under an
  HMAC (random per-process key) of the length-prefixed user and the exact password bytes, and an
  entry only counts while that user's configured hash is still the one it was verified against. A
  wrong password, the hash string sent as the password, or another user's password all miss the
  cache and go to bcrypt, which says no.
* **An unknown user costs what a wrong password costs**: its password is checked against a dummy
  hash of the highest configured cost, made at start, so response times do not enumerate users.
  Passwords over bcrypt's 72-byte limit are refused before any hashing, for every user alike
  (Go's bcrypt refuses them too; silently truncating would accept a different password).
* **Why a cache at all**: bcrypt at cost 10 is ~100 ms of CPU. Without the cache every scrape pays it,
  and a flood of wrong passwords would delay Prometheus's own scrapes behind it; with it, credentials
  that already succeeded are answered in microseconds on the event loop and only the unproven ones
  queue for the (bounded, separate) bcrypt pool in exporter/web/server.py. The cost: a memory dump
  of the exporter holds HMACs of recently used passwords, which are as sensitive as the passwords.

bcrypt is an optional dependency (``pip install '.[auth]'`` from the source tree), imported only when a web
config has users, so plain deployments do not need it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib.util
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping

BCRYPT_MAX_PASSWORD_BYTES = 72
CACHE_ENTRIES = 64


def bcrypt_available() -> bool:
    return importlib.util.find_spec("bcrypt") is not None


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` value; None when absent or malformed."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


class BasicAuth:
    """Verifies basic-auth credentials; ``cached()`` is the fast path, ``verify()`` the bcrypt one.

    Thread-safe: the event loop calls ``cached()`` while the bcrypt pool calls ``verify()``.
    """

    def __init__(self, users: Mapping[str, bytes]) -> None:
        import bcrypt  # the optional extra; web_config refuses users without it

        self._bcrypt = bcrypt
        self._users = dict(users)
        cost = max(_cost(h) for h in self._users.values())
        self._dummy = bcrypt.hashpw(secrets.token_hex(16).encode(), bcrypt.gensalt(cost))
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._ok: OrderedDict[bytes, bytes] = OrderedDict()  # mac -> the hash it was verified against

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    def _mac(self, user: str, password: bytes) -> bytes:
        name = user.encode("utf-8")
        # Length-prefixed, so ("ab", "c") and ("a", "bc") can never share a key.
        return hmac.new(self._key, len(name).to_bytes(4, "big") + name + password, hashlib.sha256).digest()

    def cached(self, user: str, password: bytes) -> bool:
        """True only if exactly these credentials were verified against the user's current hash."""
        hashed = self._users.get(user)
        if hashed is None or len(password) > BCRYPT_MAX_PASSWORD_BYTES:
            return False
        mac = self._mac(user, password)
        with self._lock:
            verified_against = self._ok.get(mac)
            if verified_against is None:
                return False
            self._ok.move_to_end(mac)
        return hmac.compare_digest(verified_against, hashed)

    def verify(self, user: str, password: bytes) -> bool:
        """The bcrypt check (~2^cost work): run it off the event loop. Caches successes only."""
        if len(password) > BCRYPT_MAX_PASSWORD_BYTES:
            return False
        hashed = self._users.get(user)
        try:
            ok = self._bcrypt.checkpw(password, hashed if hashed is not None else self._dummy)
        except ValueError:  # a NUL byte or another input bcrypt will not take: not the password
            ok = False
        if not ok or hashed is None:
            return False
        with self._lock:
            self._ok[self._mac(user, password)] = hashed
            while len(self._ok) > CACHE_ENTRIES:
                self._ok.popitem(last=False)
        return True

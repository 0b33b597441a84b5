"""Which socket tables of a namespace are provably empty, from its O(1) ``sockstat`` counters.

Why: a TCP dump (and ``/proc/PID/net/tcp``) walks the one established hash that holds the sockets
of *every* namespace and skips the others', so each TCP dump of a tiny namespace costs as much as
the whole host holds. With ``network_namespaces: all`` that is paid per namespace and per family.
``/proc/PID/net/sockstat`` and ``sockstat6`` are per-namespace counters the kernel keeps anyway::

    sockets: used 1003                 every socket of the namespace (sock_inuse_get)
    TCP: inuse 1001 orphan 0 tw 0 alloc 200326 mem 2068
    UDP: inuse 0 mem 0                 (orphan and alloc are host-wide; inuse and tw per namespace)
    UDPLITE: inuse 0
    RAW: inuse 0
    TCP6: inuse 0                      (from sockstat6)
    UDP6: inuse 0 ...

``inuse`` counts the sockets in the protocol's hashes, which is exactly what a dump lists, with
one exception: a TCP socket that is bound but neither listening nor connected sits only in the
bind hash (netlink reports it as CLOSE, see sources/netlink.py) and is not in ``inuse``.
So, without losing a socket:

* UDP / UDP6 are empty when their ``inuse`` is 0 (a UDP socket is listed once bound, and counted then);
* TCP / TCP6 are empty when their ``inuse`` is 0, ``tw`` (TIME_WAIT, both families) is 0, *and*
  every socket of the namespace is accounted for: ``used`` equals the hashed inet sockets plus the
  UNIX sockets the caller just counted. Any socket left over (a bound-only TCP socket, but also a
  netlink or packet socket, an unaccepted UNIX connection) means: dump every TCP table.

>>> stat = parse("sockets: used 3\\nTCP: inuse 2 orphan 0 tw 0 alloc 9 mem 1\\nUDP: inuse 0 mem 0\\n"
...              "TCP6: inuse 0\\nUDP6: inuse 0\\n")
>>> sorted(t.name for t in empty_tables(stat, unix_sockets=1))
['TCP6', 'UDP4', 'UDP6']
>>> sorted(t.name for t in empty_tables(stat, unix_sockets=0))   # one socket unaccounted for
['UDP4', 'UDP6']
"""

from __future__ import annotations

from ..model.table import Table

_HASHED = ("TCP", "TCP6", "UDP", "UDP6", "UDPLITE", "UDPLITE6", "RAW", "RAW6")


def parse(text: str) -> dict[str, int]:
    """sockstat + sockstat6 text -> {"TCP.inuse": 2, "TCP.tw": 0, "sockets.used": 3, ...}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        proto, _, rest = line.partition(":")
        words = rest.split()
        for key, value in zip(words[::2], words[1::2], strict=False):
            if value.isdigit():
                out[f"{proto}.{key}"] = int(value)
    return out


def read(net_dir: str) -> dict[str, int] | None:
    """Parsed ``{net_dir}/sockstat`` + ``sockstat6`` (sockstat6 is absent without IPv6); None if unreadable."""
    text = ""
    for name in ("sockstat", "sockstat6"):
        try:
            with open(f"{net_dir}/{name}") as f:
                text += f.read()
        except FileNotFoundError:
            if name == "sockstat":
                return None
        except OSError:
            return None
    return parse(text)


def empty_tables(stat: dict[str, int], unix_sockets: int | None) -> set[Table]:
    """The tables ``stat`` proves empty (module docstring); ``unix_sockets`` None: not counted."""
    empty = {t for t, proto in ((Table.UDP4, "UDP"), (Table.UDP6, "UDP6")) if stat.get(f"{proto}.inuse") == 0}
    if unix_sockets is None or "sockets.used" not in stat or stat.get("TCP.tw", 1) != 0:
        return empty
    hashed = sum(stat.get(f"{proto}.inuse", 0) for proto in _HASHED)
    if stat["sockets.used"] != hashed + unix_sockets:
        return empty
    empty |= {t for t, proto in ((Table.TCP4, "TCP"), (Table.TCP6, "TCP6")) if stat.get(f"{proto}.inuse") == 0}
    return empty

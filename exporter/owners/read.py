"""Read one process's socket inodes from ``/proc/PID/fd``: the unit of work of the owner scan.

Why its own module: the same function runs in the exporter (one CPU, or a fallback) and in the scan
worker processes (exporter/owners/worker.py), which import only this module and the owner cache's key
reader, so a worker starts fast and small. It knows nothing about which inodes are wanted: a worker
runs while the socket dump is still in flight, so it reports all of a process's sockets and the
exporter places the wanted ones (exporter/owners/scan.py).

``/proc/PID/fd/N`` is a symlink whose target reads ``socket:[44034]`` for a socket, ``pipe:[1]``,
``/dev/null``, ``anon_inode:[eventfd]`` ... otherwise (proc(5)). Per process this:

* opens the fd dir once and reads links relative to it (``readlinkat``): no path walk per fd, and a
  pid that exits mid-read cannot be confused with a new process reusing its number;
* reads all links in one ``map`` (the per-fd cost is then the kernel's readlink), finds the socket
  ones with one regex over the NUL-joined links, and keeps their inodes as an ``array('I')`` in fd
  order: 4 bytes an inode, sent over a pipe as it is, and equal for two reads of an unchanged table;
* does not even list the fd dir when its table is dense, as a server's usually is: with ``fds``
  open fds (the fd dir's ``st_size``), if fds 0 .. fds-1 all read, there is no other fd. Listing
  costs a noticeable fraction of the readlinks. The probe goes by chunks of PROBE_CHUNK fds; the
  first chunk holding a hole is given up (those readlinks are the waste), and the fds from there on
  are listed and read as usual;
* with the owner cache on (``want_key``), reads the process's "has it run" key BEFORE listing its fds
  (exporter/owners/cache.py) and, when it equals the ``expected`` key of the cache entry, does not read
  the fds at all (``unchanged``): the caller then reuses the entry's inodes.

A vanished pid or fd is normal and only counted, and so is a pid whose fd dir we may not read.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import time
from array import array

from .cache import read_key

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a worker imports this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Literal

    #: "failed": only between a worker and the exporter: an unexpected OSError, which the exporter
    #: reproduces by reading that pid itself (and fails the owner stage with it, as it always did).
    Status = Literal["ok", "denied", "vanished", "failed"]

SOCKET_PREFIX = "socket:["
#: The links are joined with NUL (which no link target holds), so that one C pass finds the socket
#: inodes; anchored at link boundaries with socket_inode's rules: ASCII digits, whole link.
_SOCKET_LINK = re.compile(r"(?:\A|\0)socket:\[([0-9]+)\](?=\0|\Z)")
#: Fd tables larger than this are always listed (the probe's name list stays small).
MAX_PROBE = 1 << 16
#: Fds probed per ``map``: a hole costs at most this many wasted readlinks.
PROBE_CHUNK = 512
_names: list[str] = []
STATUSES: tuple[Status, ...] = ("ok", "denied", "vanished", "failed")


def inode_array(inodes: list[int]) -> array[int]:
    """Socket inodes as 4-byte unsigned ints (a kernel's are 32-bit); 8 bytes only if one is larger,
    and none beyond 64 bits (no socket table can name one, so it can never be wanted)."""
    try:
        return array("I", inodes)
    except OverflowError:  # a fixture tree's link: no kernel makes such an inode
        return array("Q", [inode for inode in inodes if inode < 1 << 64])


def empty() -> array[int]:
    return array("I")


class ProcessRead:
    """What reading one pid found. ``sockets`` is empty unless ``status`` is ok and not ``unchanged``.

    A plain class, not a dataclass: importing dataclasses would cost every worker megabytes.
    """

    __slots__ = ("key", "pid", "scanned_fds", "since", "sockets", "status", "unchanged", "vanished_fds")

    def __init__(self, pid: int, status: Status = "ok", sockets: array[int] | None = None, unchanged: bool = False,
                 key: bytes | None = None, since: float = 0.0, scanned_fds: int = 0, vanished_fds: int = 0) -> None:
        self.pid = pid
        self.status = status
        self.sockets = empty() if sockets is None else sockets
        self.unchanged = unchanged  # the key matched the expected one: the fds were not read
        self.key = key  # owner-cache key read before listing (None: not cacheable)
        self.since = since  # CLOCK_MONOTONIC right after the key was read (system-wide: workers agree)
        self.scanned_fds = scanned_fds
        self.vanished_fds = vanished_fds

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProcessRead) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq

    def __repr__(self) -> str:
        return f"ProcessRead({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"


def socket_inode(link: str) -> int | None:
    """The inode of an fd link target ``socket:[12345]``, or None for anything else.

    >>> socket_inode("socket:[12345]"), socket_inode("pipe:[1]"), socket_inode("/tmp/socket:[1]")
    (12345, None, None)
    """
    if not (link.startswith(SOCKET_PREFIX) and link.endswith("]")):
        return None
    digits = link[len(SOCKET_PREFIX) : -1]
    return int(digits) if digits.isascii() and digits.isdigit() else None


def read_process(procfs: str, pid: int, fds: int, *, want_key: bool = False,
                 expected: bytes | None = None) -> ProcessRead:
    """Read ``pid``'s socket inodes. ``fds`` is its open-fd count (``st_size`` of its fd dir, -1 when
    the kernel does not say), taken by the caller just before."""
    result = ProcessRead(pid)
    if want_key:
        result.key = read_key(f"{procfs}/{pid}/task", fds)
        result.since = time.monotonic()  # after the key: its age must not be overstated
        if expected is not None and result.key == expected:
            result.unchanged = True
            return result
    _read_fds(f"{procfs}/{pid}/fd", fds, result)
    return result


def _dense_names(fds: int) -> list[str]:
    """``["0", "1", ... str(fds - 1)]``, from a list kept between calls."""
    while len(_names) < fds:
        _names.append(str(len(_names)))
    return _names[:fds]


def _lost(exc: OSError) -> Status:
    """The status of a process whose fd directory could not be opened or listed; other errors raise."""
    if isinstance(exc, (FileNotFoundError, ProcessLookupError)):
        return "vanished"
    if isinstance(exc, PermissionError):
        return "denied"
    raise exc


def _read_fds(fd_dir: str, fds: int, result: ProcessRead) -> None:
    """Probe the table as dense, chunk by chunk; from the first chunk with a hole on, list it; read
    the links in bulk; on any error in the listed read, re-read those carefully, per fd."""
    try:
        dir_fd = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        result.status = _lost(exc)
        return
    readlink = functools.partial(os.readlink, dir_fd=dir_fd)
    try:
        links: list[str] = []
        if 0 < fds <= MAX_PROBE:
            names = _dense_names(fds)
            while len(links) < fds:
                try:
                    links += list(map(readlink, names[len(links) : len(links) + PROBE_CHUNK]))
                except OSError:  # a hole (or the process is going): list from this chunk on
                    break
        if len(links) != fds:
            try:
                names = os.listdir(dir_fd)
            except OSError as exc:
                result.status = _lost(exc)
                return
            if links:  # fds 0 .. len(links)-1 are read already
                names = [name for name in names if not name.isdigit() or int(name) >= len(links)]
            try:
                links += list(map(readlink, names))
            except OSError:
                if not _read_carefully(readlink, names, links, result):
                    return
        result.scanned_fds += len(links)
        result.sockets = _socket_inodes(links)
    finally:
        os.close(dir_fd)


def _socket_inodes(links: list[str]) -> array[int]:
    """The inodes of the ``socket:[N]`` links, by :func:`socket_inode`'s rules, in one regex pass."""
    return inode_array(list(map(int, _SOCKET_LINK.findall("\0".join(links)))))


def _read_carefully(readlink: Callable[[str], str], names: list[str], links: list[str], result: ProcessRead) -> bool:
    """Per-fd reads into ``links``, telling a closed fd (counted) from a not-a-link entry and a
    vanished or forbidden process (False, with the status set)."""
    for name in names:
        try:
            links.append(readlink(name))
        except FileNotFoundError:
            result.vanished_fds += 1
        except ProcessLookupError:
            result.status = "vanished"
            return False
        except PermissionError:  # credentials changed mid-read (setuid exec)
            result.status = "denied"
            return False
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENAMETOOLONG):  # not a link / huge path: no socket
                raise
            result.scanned_fds += 1
    return True

"""Run a command with netlink sockets refused by the kernel: ``python tests/no_netlink.py CMD ARGS...``.

Why seccomp: the ``auto`` source must fall back to /proc when the kernel *refuses* sock_diag (as under
a container runtime or a systemd unit whose RestrictAddressFamilies lacks AF_NETLINK). A seccomp
filter makes the real ``socket(AF_NETLINK, ...)`` syscall fail with EAFNOSUPPORT, exactly what such a
sandbox does, with no change to the exporter. The filter survives execve, so it applies to CMD.

The BPF program (see seccomp(2), struct seccomp_data: nr at offset 0, arch at 4, args[0] at 16)::

    ld  [4]            ; arch
    jeq ARCH, 0, 4     ; other arch: allow
    ld  [0]            ; syscall number
    jeq __NR_socket, 0, 2
    ld  [16]           ; args[0] (low 32 bits on little-endian): the address family
    jeq AF_NETLINK, 1, 0
    ret ALLOW
    ret ERRNO(EAFNOSUPPORT)
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
import sys

# (AUDIT_ARCH_*, __NR_socket) per machine; seccomp(2) and the kernel's syscall tables.
ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
LD_ABS_W, JEQ_K, RET_K = 0x20, 0x15, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000


def refuse_netlink() -> None:
    arch, nr_socket = ARCHES[platform.machine()]
    program = [
        (LD_ABS_W, 0, 0, 4),
        (JEQ_K, 0, 4, arch),
        (LD_ABS_W, 0, 0, 0),
        (JEQ_K, 0, 2, nr_socket),
        (LD_ABS_W, 0, 0, 16),
        (JEQ_K, 1, 0, socket.AF_NETLINK),
        (RET_K, 0, 0, RET_ALLOW),
        (RET_K, 0, 0, RET_ERRNO | errno.EAFNOSUPPORT),
    ]
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    filters = ctypes.create_string_buffer(code)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    refuse_netlink()
    os.execvp(sys.argv[1], sys.argv[1:])

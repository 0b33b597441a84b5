"""``python netns_holder.py N``: hold about N established IPv4 TCP sockets (N/2 loopback pairs and one
listener) in the current network namespace until stdin closes; prints ``ready`` once they exist.

The benchmark's "pod": tests/benchmark/namespaces.py starts one in each of its namespaces.
"""

from __future__ import annotations

import socket
import sys


def main(n: int) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    held = [listener]
    for _ in range(max(0, (n - 1) // 2)):
        held.append(socket.create_connection(("127.0.0.1", port)))
        held.append(listener.accept()[0])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()


if __name__ == "__main__":
    main(int(sys.argv[1]))

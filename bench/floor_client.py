#!/usr/bin/env python3
"""The cost floor of the canary's traffic: a minimal client that sends what the canary
sends at its default rate and does nothing else.

For each server: one connection that SETs and one that GETs, 10 times a second each, all
requests of a tick sent at once (as the canary's grouped ticks do), and once a second a
fresh connection that sends one GET and closes (the probe). Replies are read with epoll and
thrown away: no parsing, no verification, no metrics, no timeouts. What this process costs
is what the kernel and the wake-ups cost for the same traffic on this machine, plus a little
interpreter time: the canary cannot be much cheaper than this.

Usage: floor_client.py SECONDS PORT...  (prints one JSON line with its operation count)
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

RATE = 10  # ticks per second, as the canary's default
PROBE_EVERY = RATE  # one fresh-connection probe per server every RATE ticks

SET = b"*5\r\n$3\r\nSET\r\n$11\r\nfloor:key:1\r\n$64\r\n" + b"x" * 64 + b"\r\n$2\r\nPX\r\n$6\r\n600000\r\n"
GET = b"*2\r\n$3\r\nGET\r\n$11\r\nfloor:key:1\r\n"


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def main() -> int:
    duration = float(sys.argv[1])
    ports = [int(p) for p in sys.argv[2:]]
    pooled = [(connect(p), SET) for p in ports] + [(connect(p), GET) for p in ports]
    ep = select.epoll()
    by_fd = {}
    for s, _ in pooled:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
    ops = probes = 0
    start = time.monotonic()
    ticks = int(duration * RATE)  # bounded
    for tick in range(ticks):
        due = start + tick / RATE
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for s, request in pooled:
            s.send(request)
        waiting = len(pooled)
        deadline = time.monotonic() + 2.0
        while waiting and time.monotonic() < deadline:
            for fd, _ in ep.poll(0.5):
                by_fd[fd].recv(65536)
                waiting -= 1
        ops += len(pooled) - waiting
        if tick % PROBE_EVERY == 0:
            for p in ports:
                with connect(p) as s:
                    s.sendall(GET)
                    s.recv(65536)
                probes += 1
    print(json.dumps({"operations": ops, "probes": probes, "seconds": time.monotonic() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

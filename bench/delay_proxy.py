#!/usr/bin/env python3
"""A delaying TCP proxy for the fidelity benchmark (this kernel has no netem).

    delay_proxy.py --upstream 127.0.0.1:6379 --delay-ms 20

Listens on a loopback port from port 0 and prints `PORT <n>` on stdout once it accepts.
Every byte from the upstream (the server's replies) is delivered to the client `delay-ms`
after it arrived at the proxy; the client-to-server direction is forwarded at once. So one
request/reply round trip takes `delay` more than without the proxy, and pipelined replies
keep their spacing (each chunk is held for exactly `delay`, not queued behind the previous
one's delay).

Threads, not asyncio: a sender thread sleeps with time.sleep() (clock_nanosleep, µs
resolution) until each chunk is due, whereas asyncio's epoll timeouts round to whole
milliseconds. bench/run verifies the added delay independently (PING round trips through
the proxy vs direct) before trusting it.
"""

import argparse
import collections
import socket
import sys
import threading
import time


def shut_both(src: socket.socket, dst: socket.socket) -> None:
    """Ends both directions of a proxied pair; errors mean it is already gone."""
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pump_now(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        shut_both(src, dst)


def pump_delayed(src: socket.socket, dst: socket.socket, delay: float) -> None:
    queue = collections.deque()  # (due, data); data b"" means end of stream
    cond = threading.Condition()

    def sender():
        try:
            while True:
                with cond:
                    while not queue:
                        cond.wait()
                    due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            shut_both(src, dst)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        while True:
            data = src.recv(65536)
            with cond:
                queue.append((time.monotonic() + delay, data))
                cond.notify()
            if not data:
                break
    except OSError:
        with cond:
            queue.append((time.monotonic(), b""))
            cond.notify()
    t.join()
    for s in (src, dst):
        s.close()


def serve(upstream: tuple[str, int], delay: float) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        try:
            server = socket.create_connection(upstream, timeout=5)
            server.settimeout(None)
        except OSError:
            client.close()
            continue
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump_now, args=(client, server), daemon=True).start()
        threading.Thread(target=pump_delayed, args=(server, client, delay), daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    ap.add_argument("--delay-ms", type=float, required=True, help="added to every reply")
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    try:
        serve((host, int(port)), args.delay_ms / 1000.0)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

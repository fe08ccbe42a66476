#!/usr/bin/env python3
"""Scrapes off the measuring path: does a crowd of /metrics scrapers delay operations?

N targets (default 1,000) spread over a few redis-servers, `rate = 1`, the fresh-connection
probe off; after a warm-up, two windows of SECONDS each on the same canary process:

  quiet     no scrapes at all
  scraped   SCRAPERS threads (default 50), each GETting /metrics back to back over a fresh
            connection and throwing the body away (Prometheus' Accept header, 30 s timeout)

For each window: the `redis_canary_operation_duration_seconds` bucket deltas (write + read)
from one /metrics snapshot at each edge -> share of operations above 50 ms (and above 10 ms,
p50/p99 by bucket interpolation), the same for attempt durations, operations done vs
scheduled, skipped ticks, canary CPU, and the scrapes completed. Scrapes still in flight when
the window ends are cut (1 s socket timeouts let each thread see the deadline), so the
scraped window is SECONDS plus at most about a second. Binaries are run one after the other
(ROUNDS times, alternating) against the same servers.

    bench/scrapers.py [--targets 1000] [--scrapers 50] [--seconds 20] [--warmup 10]
                      [--rounds 1] [--out FILE.json] BINARY...

Python 3.11, standard library only; every process started is reaped (benchlib.Procs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    Canary, CpuWindow, Procs, Redis, bucket_delta, bucket_quantile, buckets, copy_binary, msum,
    ops_total, status_kib,
)  # fmt: skip

OP_HIST = "redis_canary_operation_duration_seconds"
ATT_HIST = "redis_canary_attempt_duration_seconds"
PREFIXES = ("redis_canary_operations_total", "redis_canary_skipped_ticks_total",
            OP_HIST + "_bucket", ATT_HIST + "_bucket")  # fmt: skip
ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
PER_SERVER = 250


def config(targets: list[tuple[str, str]]) -> str:
    lines = ['instance = "bench-scrapers"', "", "[defaults]", "rate = 1",
             'connect_probe_interval = "0s"']  # fmt: skip
    for name, url in targets:
        lines += ["", "[[targets]]", f'name = "{name}"', f'url = "{url}"']
    return "\n".join(lines) + "\n"


def scrape_once(port: int, deadline: float) -> tuple[int, bool]:
    """One GET /metrics on a fresh connection; (bytes read, completed). Cut at `deadline`."""
    n = 0
    buf = bytearray(1 << 16)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: {ACCEPT}\r\n"
                  "Connection: close\r\n\r\n".encode())  # fmt: skip
        s.settimeout(1.0)
        started = time.monotonic()
        while True:
            if time.monotonic() > deadline:
                return n, False
            if time.monotonic() - started > 30:
                raise TimeoutError("scrape took over 30 s")
            try:
                k = s.recv_into(buf)
            except socket.timeout:
                continue
            if k == 0:
                return n, True
            n += k


def scraper_crowd(port: int, scrapers: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    tally = {"completed": 0, "cut": 0, "errors": 0, "bytes": 0, "durations_s": []}

    def worker():
        for _ in range(100_000):  # bounded; the deadline ends it long before
            if time.monotonic() >= deadline:
                return
            t = time.monotonic()
            try:
                n, done = scrape_once(port, deadline)
            except OSError:
                with lock:
                    tally["errors"] += 1
                time.sleep(0.05)
                continue
            with lock:
                tally["bytes"] += n
                if done:
                    tally["completed"] += 1
                    tally["durations_s"].append(time.monotonic() - t)
                else:
                    tally["cut"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(scrapers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + 40)
    d = sorted(tally.pop("durations_s"))
    tally["scrape_seconds_p50"] = d[len(d) // 2] if d else None
    tally["scrape_seconds_max"] = d[-1] if d else None
    return tally


def hist(m1, m0, name: str) -> dict:
    bks = []
    for op in ("write", "read"):
        d = bucket_delta(buckets(m1, name, op=op), buckets(m0, name, op=op))
        bks = d if not bks else [(le, a + b) for (le, a), (_, b) in zip(bks, d)]
    c = dict(bks)
    total = bks[-1][1] if bks else 0.0
    return {
        "count": total,
        "over_50ms": total - c.get(0.05, 0.0),
        "share_over_50ms": (total - c[0.05]) / total if total else None,
        "share_over_10ms": (total - c[0.01]) / total if total else None,
        "p50_s": bucket_quantile(bks, 0.5),
        "p99_s": bucket_quantile(bks, 0.99),
        "buckets": bks,
    }


def window(canary: Canary, m0, seconds: float, targets: int, scrapers: int) -> tuple[dict, list]:
    cpu = CpuWindow({"canary": canary.pid}).start()
    crowd = scraper_crowd(canary.port, scrapers, seconds) if scrapers else time.sleep(seconds)
    res = cpu.stop()
    m1 = canary.metrics(PREFIXES, timeout=60)
    wall = res["canary"]["wall_seconds"]
    done = ops_total(m1) - ops_total(m0)
    out = {
        "scrapers": scrapers,
        "wall_s": wall,
        "canary_cpu_percent": res["canary"]["cpu_percent"],
        "machine_busy_cores": res["_machine"]["busy_cores"],
        "operations": done,
        "operations_scheduled": 2 * targets * wall,
        "failed": ops_total(m1, outcome="failed") - ops_total(m0, outcome="failed"),
        "skipped_ticks": msum(m1, "redis_canary_skipped_ticks_total")
        - msum(m0, "redis_canary_skipped_ticks_total"),
        "operation": hist(m1, m0, OP_HIST),
        "attempt": hist(m1, m0, ATT_HIST),
        "crowd": crowd,
    }
    return out, m1


def measure(procs: Procs, binary: Path, targets, seconds: float, warmup: float,
            scrapers: int) -> dict:  # fmt: skip
    canary = Canary(procs, binary, "scrapers-canary", config(targets), ready_within=60)
    try:
        time.sleep(warmup)
        m0 = canary.metrics(PREFIXES, timeout=60)
        quiet, m1 = window(canary, m0, seconds, len(targets), 0)
        scraped, _ = window(canary, m1, seconds, len(targets), scrapers)
        hwm = status_kib(canary.pid, "VmHWM")
        alive = canary.proc.alive()
    finally:
        canary.stop()
    return {"quiet": quiet, "scraped": scraped, "peak_rss_mib": hwm / 1024, "alive": alive}


def summary(r: dict) -> str:
    def one(w):
        o, a = w["operation"], w["attempt"]
        s = (f"ops {w['operations']:.0f}/{w['operations_scheduled']:.0f} skipped {w['skipped_ticks']:.0f}; "
             f"op >50ms {o['over_50ms']:.0f} ({100 * o['share_over_50ms']:.3f} %), "
             f">10ms {100 * o['share_over_10ms']:.3f} %, p50/p99 {1000 * o['p50_s']:.2f}/{1000 * o['p99_s']:.2f} ms; "
             f"attempt >50ms {100 * a['share_over_50ms']:.3f} %; canary CPU {w['canary_cpu_percent']:.0f} %")  # fmt: skip
        if w["crowd"]:
            c = w["crowd"]
            s += f"; scrapes {c['completed']} done, {c['cut']} cut, {c['errors']} errors, {c['bytes'] / 1e6:.0f} MB"
        return s

    return f"quiet: {one(r['quiet'])}\n  scraped: {one(r['scraped'])}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", type=Path)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--scrapers", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    procs = Procs(Path(tempfile.mkdtemp(prefix="bench-scrapers-")))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs: dict[str, list] = {str(b): [] for b in a.binaries}
    try:
        copies = {}
        for i, b in enumerate(a.binaries):
            d = procs.workdir / f"bin{i}"
            d.mkdir()
            copies[str(b)] = copy_binary(b, d)  # a concurrent build cannot swap it
        nservers = max(1, -(-a.targets // PER_SERVER))
        servers = [Redis(procs, f"redis{i}") for i in range(nservers)]
        targets = [(f"t{i}", servers[i // PER_SERVER].url()) for i in range(a.targets)]
        for _ in range(a.rounds):
            for b in a.binaries:
                r = measure(procs, copies[str(b)], targets, a.seconds, a.warmup, a.scrapers)
                r["loadavg"] = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
                runs[str(b)].append(r)
                print(b, summary(r), flush=True)
    finally:
        procs.stop_all()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({
            "started_at": started, "argv": sys.argv, "targets": a.targets,
            "scrapers": a.scrapers, "seconds": a.seconds, "warmup": a.warmup,
            "binaries": {str(b): {"sha256": hashlib.sha256(b.read_bytes()).hexdigest()}
                         for b in a.binaries},
            "runs": runs,
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

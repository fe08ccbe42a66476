#!/usr/bin/env python3
"""Sizing at fleet scale (issue 13, part 4): one canary process, N targets at `rate = 1`
with the fresh-connection probe every 10 s, all on a few real redis-servers on loopback
(distinct target names keep the keyspaces apart; 1,000 targets per server).

For each N given (default 1,000 and 5,000) and each metrics profile given (default full):

  warm-up   WARMUP seconds, no scrape
  quiet     SECONDS with no scrape: CPU % of a core (utime + stime of /proc/PID/stat over the
            window), VmRSS and VmHWM at its end (before the first scrape: the scrape is a
            transient of its own), open fds
  scrape    three timed scrapes back to back with `curl -w` (Prometheus' Accept header):
            bytes, series (sample lines), time_total; the canary's CPU per scrape
  scraped   SCRAPED_SECONDS with one scrape every 10 s (the ServiceMonitor's interval): operation and
            attempt latency shares above 10 / 50 ms and skipped ticks, against the quiet window

`skipped_ticks_total` is summed over the whole run (must be 0). The soft fd limit is raised to
the hard one (root may raise both) before the canary starts; each target holds a few
connections.

    bench/scale.py [--targets 1000,5000] [--profiles full,lean] [--seconds 120]
                   [--warmup 20] [--scraped-seconds 60] [--connections 2]
                   [--out FILE.json] BINARY

Python 3.11, standard library only; every process started is reaped (benchlib.Procs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    Canary, CpuWindow, Procs, Redis, bucket_delta, buckets, copy_binary, loadavg, msum,
    ops_total, parse_metrics, status_kib,
)  # fmt: skip

OP_HIST = "redis_canary_operation_duration_seconds"
ATT_HIST = "redis_canary_attempt_duration_seconds"
ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
PER_SERVER = 1000


def raise_fd_limit(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want, want
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard, hard


def config(n: int, servers: list[Redis], profile: str, connections: int) -> str:
    lines = [f'instance = "bench-scale-{n}"']
    if profile != "full":  # the default: a binary without the key still runs
        lines.append(f'metrics_profile = "{profile}"')
    lines += ["", "[defaults]", "rate = 1", 'connect_probe_interval = "10s"',
              f"connections = {connections}"]  # fmt: skip
    for i in range(n):
        url = servers[(i // PER_SERVER) % len(servers)].url()
        lines += ["", "[[targets]]", f'name = "t{i}"', f'url = "{url}"']
    return "\n".join(lines) + "\n"


def curl_scrape(port: int, out: Path) -> dict:
    """One GET /metrics with curl: size, time, series."""
    r = subprocess.run(
        ["curl", "-sS", "-o", str(out), "-H", f"Accept: {ACCEPT}", "--max-time", "120",
         "-w", "%{size_download} %{time_starttransfer} %{time_total} %{http_code}",
         f"http://127.0.0.1:{port}/metrics"],
        capture_output=True, text=True, timeout=130,
    )  # fmt: skip
    size, ttfb, total, code = r.stdout.split()
    text = out.read_text() if r.returncode == 0 else ""
    series = sum(1 for line in text.splitlines() if line and line[0] != "#")
    return {"bytes": int(size), "ttfb_s": float(ttfb), "time_total_s": float(total),
            "http_code": int(code), "series": series, "curl_exit": r.returncode,
            "curl_error": r.stderr.strip()[:300]}  # fmt: skip


def lat(m1, m0) -> dict:
    out = {}
    for name, key in ((OP_HIST, "operation"), (ATT_HIST, "attempt")):
        bks = []
        for op in ("write", "read", "probe"):
            d = bucket_delta(buckets(m1, name, op=op), buckets(m0, name, op=op))
            bks = d if not bks else [(le, a + b) for (le, a), (_, b) in zip(bks, d)]
        c = dict(bks)
        total = bks[-1][1] if bks else 0.0
        out[key] = {
            "count": total,
            "over_10ms": total - c.get(0.01, total),
            "over_50ms": total - c.get(0.05, total),
            "over_100ms": total - c.get(0.1, total),
        }
    return out


def measure(procs: Procs, binary: Path, n: int, servers, profile: str, seconds: float,
            warmup: float, scraped_seconds: float, connections: int) -> dict:  # fmt: skip
    canary = Canary(procs, binary, f"scale-{n}-{profile}",
                    config(n, servers, profile, connections),
                    ready_within=120)  # fmt: skip
    try:
        time.sleep(warmup)
        load0 = loadavg()
        cpu = CpuWindow({"canary": canary.pid}).start()
        time.sleep(seconds)  # no scrape in this window
        quiet = cpu.stop()["canary"]
        rss, hwm = status_kib(canary.pid, "VmRSS"), status_kib(canary.pid, "VmHWM")
        fds = len(os.listdir(f"/proc/{canary.pid}/fd"))
        scrapes = []
        for i in range(3):
            w = CpuWindow({"c": canary.pid}).start()
            s = curl_scrape(canary.port, procs.workdir / f"metrics-{n}-{profile}-{i}.txt")
            s["canary_cpu_s"] = w.stop()["c"]["cpu_seconds"]
            scrapes.append(s)
        hwm_after_scrapes = status_kib(canary.pid, "VmHWM")
        ok = [i for i, x in enumerate(scrapes) if x["curl_exit"] == 0]
        m0 = parse_metrics((procs.workdir / f"metrics-{n}-{profile}-{ok[-1]}.txt").read_text()
                           if ok else "")  # fmt: skip
        cpu = CpuWindow({"canary": canary.pid}).start()
        t_end = time.monotonic() + scraped_seconds
        timed = []
        for i in range(1000):  # one scrape every 10 s, bounded
            if time.monotonic() >= t_end:
                break
            t0 = time.monotonic()
            timed.append(curl_scrape(canary.port, procs.workdir / f"m-{n}-{profile}-w.txt"))
            time.sleep(max(0.0, min(10 - (time.monotonic() - t0), t_end - time.monotonic())))
        scraped = cpu.stop()["canary"]
        for _ in range(3):  # a scrape that fails is retried, twice at most
            last = curl_scrape(canary.port, procs.workdir / f"metrics-{n}-{profile}-end.txt")
            if last["curl_exit"] == 0:
                break
        m1 = parse_metrics((procs.workdir / f"metrics-{n}-{profile}-end.txt").read_text()
                           if last["curl_exit"] == 0 else "")  # fmt: skip
        # The quiet window's latency: from the start of the run to the first scrape (m0).
        zero = []
        alive = canary.proc.alive()
        fds_end = len(os.listdir(f"/proc/{canary.pid}/fd"))
    finally:
        canary.stop()
    wall_scraped = scraped["wall_seconds"]
    done = ops_total(m1) - ops_total(m0)
    return {
        "targets": n, "profile": profile, "seconds": seconds, "warmup_s": warmup,
        "scraped_seconds": scraped_seconds, "connections": connections,
        "open_fds_end": fds_end, "internal_errors_total": msum(m1, "redis_canary_internal_errors_total"),
        "loadavg_start": load0, "loadavg_end": loadavg(),
        "quiet": {"cpu": quiet, "vmrss_kib": rss, "vmhwm_kib": hwm, "open_fds": fds,
                  "latency_since_start": lat(m0, zero)},
        "scrapes_back_to_back": scrapes, "vmhwm_kib_after_scrapes": hwm_after_scrapes,
        "scraped": {"cpu": scraped, "scrapes": timed, "latency": lat(m1, m0),
                    "operations": done, "operations_scheduled": n * (2 + 0.1) * wall_scraped,
                    "failed": ops_total(m1, outcome="failed") - ops_total(m0, outcome="failed")},
        "skipped_ticks_total": msum(m1, "redis_canary_skipped_ticks_total"),
        "series_end": last["series"], "bytes_end": last["bytes"], "alive": alive,
    }  # fmt: skip


def ms(rows: list[dict], key: str) -> str:
    return ", ".join(f"{x[key] * 1000:.0f}" for x in rows)


def summary(r: dict) -> str:
    q, s = r["quiet"], r["scraped"]
    sc = r["scrapes_back_to_back"]
    ol, sl = q["latency_since_start"]["operation"], s["latency"]["operation"]
    return (
        f"{r['targets']} targets, {r['profile']}: CPU {q['cpu']['cpu_percent']:.1f} % quiet, "
        f"{s['cpu']['cpu_percent']:.1f} % with a scrape every 10 s; VmRSS {q['vmrss_kib'] / 1024:.1f} MiB, "
        f"VmHWM {q['vmhwm_kib'] / 1024:.1f} MiB ({r['vmhwm_kib_after_scrapes'] / 1024:.1f} after 3 scrapes); "
        f"fds {q['open_fds']}, {r['open_fds_end']} at the end; internal errors {r['internal_errors_total']:.0f}; skipped ticks {r['skipped_ticks_total']:.0f}; "
        f"/metrics {sc[0]['bytes'] / 1e6:.2f} MB, {sc[0]['series']} series, "
        f"curl time_total {ms(sc, 'time_total_s')} ms (exit {[x['curl_exit'] for x in sc]}; "
        f"{sum(x['curl_exit'] != 0 for x in s['scrapes'])} of {len(s['scrapes'])} failed in the scraped window), "
        f"canary CPU per scrape {ms(sc, 'canary_cpu_s')} ms; "
        f"ops over 50 ms: {ol['over_50ms']:.0f}/{ol['count']:.0f} before the first scrape, "
        f"{sl['over_50ms']:.0f}/{sl['count']:.0f} in the scraped window; "
        f"done {s['operations']:.0f}/{s['operations_scheduled']:.0f} scheduled, {s['failed']:.0f} failed"
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", type=Path)
    ap.add_argument("--targets", default="1000,5000")
    ap.add_argument("--profiles", default="full")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--scraped-seconds", type=float, default=60)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    ns = [int(x) for x in a.targets.split(",")]
    profiles = a.profiles.split(",")
    limit = raise_fd_limit(8 * max(ns) + 1024)
    procs = Procs(Path(tempfile.mkdtemp(prefix="bench-scale-")))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = []
    try:
        binary = copy_binary(a.binary, procs.workdir)  # a concurrent build cannot swap it
        nservers = max(1, -(-max(ns) // PER_SERVER))
        servers = [Redis(procs, f"redis{i}", extra=["--maxclients", "20000"])
                   for i in range(nservers)]  # fmt: skip
        for n in ns:
            for p in profiles:
                r = measure(procs, binary, n, servers, p, a.seconds, a.warmup,
                            a.scraped_seconds, a.connections)  # fmt: skip
                runs.append(r)
                print(summary(r), flush=True)
    finally:
        procs.stop_all()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({
            "started_at": started, "argv": sys.argv, "fd_limit": limit,
            "binary_sha256": hashlib.sha256(a.binary.read_bytes()).hexdigest(),
            "runs": runs,
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

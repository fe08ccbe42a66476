#!/usr/bin/env python3
"""Quick A/B of two builds at the overhead section's load, for profiling work: N
redis-servers, the canary with the default config (plus DEFAULTS), CPU from
/proc/PID/task/*/schedstat (exact runtime, all threads) over SECONDS, context switches and
CPU per operation, peak RSS (VmHWM at the end of the run), and from the
`redis_canary_operation_duration_seconds` buckets (write + read, deltas over the window) the
share of operations in (1 ms, 2 ms] and above 50 ms; then, with --latency, a `soak --report`
of the same length: the median over targets x {write, read} of the attempt p50 and of the
operation p50 / p90 / p99. Runs the binaries alternately ROUNDS times: on a shared VM the
noise between runs (+-25 %) is larger than most differences, so compare pairs, not single
runs. The last lines are each binary's median over its rounds; --out FILE keeps every run.

    bench/pair.py [--rounds 3] [--seconds 20] [--targets 10] [--defaults '{"rate": "5"}']
                  [--latency] [--out FILE.json] BINARY...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    Canary, Procs, Redis, bucket_delta, buckets, context_switches, ops_total, status_kib,
)  # fmt: skip

OP_HIST = "redis_canary_operation_duration_seconds"


def shares(bks: list[tuple[float, float]]) -> dict:
    """Share of observations in (1 ms, 2 ms] and above 50 ms, from cumulative buckets."""
    c = dict(bks)
    total = bks[-1][1] if bks else 0.0
    if not total:
        return {"op_share_1_2ms": None, "op_share_over_50ms": None}
    return {"op_share_1_2ms": (c[0.002] - c[0.001]) / total,
            "op_share_over_50ms": (total - c[0.05]) / total}  # fmt: skip


def config(targets: list[tuple[str, str]], defaults: dict) -> str:
    lines = ['instance = "bench-pair"', "", "[defaults]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in defaults.items()]
    for name, url in targets:
        lines += ["", "[[targets]]", f'name = "{name}"', f'url = "{url}"']
    return "\n".join(lines) + "\n"


def runtime_ns(pid: int) -> int:
    return sum(
        int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
        for t in os.listdir(f"/proc/{pid}/task")
    )


def measure(procs, binary, targets, defaults, seconds, latency):
    pre = ("redis_canary_operations", OP_HIST + "_bucket")
    c = Canary(procs, binary, "canary", config(targets, defaults))
    time.sleep(3)
    m0 = c.metrics(pre)
    t0, cs0, w0 = runtime_ns(c.pid), context_switches(c.pid), time.monotonic()
    time.sleep(seconds)
    t1, cs1, w1 = runtime_ns(c.pid), context_switches(c.pid), time.monotonic()
    m1 = c.metrics(pre)
    hwm = status_kib(c.pid, "VmHWM")
    ops = ops_total(m1) - ops_total(m0)
    c.stop()
    bks: list[tuple[float, float]] = []
    for op in ("write", "read"):
        d = bucket_delta(buckets(m1, OP_HIST, op=op), buckets(m0, OP_HIST, op=op))
        bks = d if not bks else [(le, a + b) for (le, a), (_, b) in zip(bks, d)]
    out = {
        "cpu_percent": 100 * (t1 - t0) / 1e9 / (w1 - w0),
        "ops": ops,
        "cs_per_op": (cs1 - cs0) / max(ops, 1),
        "us_per_op": (t1 - t0) / 1e3 / max(ops, 1),
        "peak_rss_mib": hwm / 1024,
        **shares(bks),
    }
    if latency:
        report = procs.workdir / "report.json"
        s = Canary(procs, binary, "soak", config(targets, defaults), mode="soak",
                   extra_args=["--duration", f"{int(seconds)}s", "--report", str(report)])  # fmt: skip
        procs.wait(s.proc, seconds + 60)
        r = json.loads(report.read_text())
        def med(kind, q):
            v = [t["latency_seconds"][kind][op][q] for t in r["targets"] for op in ("write", "read")]
            return 1000 * sorted(v)[len(v) // 2]

        out["attempt_p50_ms_median"] = med("attempt", "p50")
        for q in ("p50", "p90", "p99"):
            out[f"operation_{q}_ms_median"] = med("operation", q)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--defaults", type=json.loads, default={})
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--out", type=Path, help="write every run (and the medians) as JSON")
    a = ap.parse_args()
    procs = Procs(Path(tempfile.mkdtemp(prefix="bench-pair-")))
    runs: dict[str, list[dict]] = {str(b): [] for b in a.binaries}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        servers = [Redis(procs, f"redis{i}") for i in range(a.targets)]
        targets = [(f"t{i}", s.url()) for i, s in enumerate(servers)]
        for _ in range(a.rounds):
            for b in a.binaries:
                r = measure(procs, b.resolve(), targets, a.defaults, a.seconds, a.latency)
                r["loadavg"] = [float(x) for x in open("/proc/loadavg").read().split()[:3]]
                runs[str(b)].append(r)
                print(b, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                     for k, v in r.items()}), flush=True)  # fmt: skip
    finally:
        procs.stop_all()
    medians = {}
    for b, rs in runs.items():
        if rs:
            keys = [k for k, v in rs[0].items() if isinstance(v, (int, float))]
            medians[b] = {k: statistics.median(r[k] for r in rs if r.get(k) is not None)
                          for k in keys if any(r.get(k) is not None for r in rs)}  # fmt: skip
            print("median", b, json.dumps({k: round(v, 4) for k, v in medians[b].items()}))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({
            "started_at": started, "argv": sys.argv, "targets": a.targets, "seconds": a.seconds,
            "defaults": a.defaults,
            "binaries": {str(b): {"sha256": hashlib.sha256(b.read_bytes()).hexdigest()}
                         for b in a.binaries},
            "runs": runs, "medians": medians,
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

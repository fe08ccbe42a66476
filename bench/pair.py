#!/usr/bin/env python3
"""Quick A/B of two builds at the overhead section's load, for profiling work: N
redis-servers, the canary with the default config (plus DEFAULTS), CPU from
/proc/PID/task/*/schedstat (exact runtime, all threads) over SECONDS, context switches and
CPU per operation; then a `soak --report` of the same length for each attempt's p50
latency. Runs the binaries alternately ROUNDS times: on a shared VM the noise between runs
(+-25 %) is larger than most differences, so compare pairs, not single runs.

    bench/pair.py [--rounds 3] [--seconds 20] [--targets 10] [--defaults '{"rate": "5"}']
                  [--latency] BINARY...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Canary, Procs, Redis, context_switches, ops_total  # noqa: E402


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
    c = Canary(procs, binary, "canary", config(targets, defaults))
    time.sleep(3)
    m0 = c.metrics(("redis_canary_operations",))
    t0, cs0, w0 = runtime_ns(c.pid), context_switches(c.pid), time.monotonic()
    time.sleep(seconds)
    t1, cs1, w1 = runtime_ns(c.pid), context_switches(c.pid), time.monotonic()
    ops = ops_total(c.metrics(("redis_canary_operations",))) - ops_total(m0)
    c.stop()
    out = {
        "cpu_percent": 100 * (t1 - t0) / 1e9 / (w1 - w0),
        "ops": ops,
        "cs_per_op": (cs1 - cs0) / max(ops, 1),
        "us_per_op": (t1 - t0) / 1e3 / max(ops, 1),
    }
    if latency:
        report = procs.workdir / "report.json"
        s = Canary(procs, binary, "soak", config(targets, defaults), mode="soak",
                   extra_args=["--duration", f"{int(seconds)}s", "--report", str(report)])  # fmt: skip
        procs.wait(s.proc, seconds + 60)
        r = json.loads(report.read_text())
        p50 = [t["latency_seconds"]["attempt"][op]["p50"] for t in r["targets"] for op in ("write", "read")]
        out["attempt_p50_ms_median"] = 1000 * sorted(p50)[len(p50) // 2]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--defaults", type=json.loads, default={})
    ap.add_argument("--latency", action="store_true")
    a = ap.parse_args()
    procs = Procs(Path(tempfile.mkdtemp(prefix="bench-pair-")))
    try:
        servers = [Redis(procs, f"redis{i}") for i in range(a.targets)]
        targets = [(f"t{i}", s.url()) for i, s in enumerate(servers)]
        for _ in range(a.rounds):
            for b in a.binaries:
                r = measure(procs, b.resolve(), targets, a.defaults, a.seconds, a.latency)
                print(b, json.dumps({k: round(v, 3) for k, v in r.items()}), flush=True)
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

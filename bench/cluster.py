#!/usr/bin/env python3
"""Cluster targets (issue 11, item 8): what one `mode = "cluster"` target costs at the
default rate beside a standalone one, and the canary as a load generator against a cluster
beside `redis-benchmark --cluster` at equal connections.

  cost   one canary process, ONE target, defaults (rate 10, connections 2, probe 1 s) and
         keys = 1000; three separate runs: a standalone redis-server, a 3-master cluster and
         a 10-master cluster (no replicas). WARMUP s, then WINDOW s: CPU % of one core
         (utime + stime of /proc/PID/stat), VmRSS and VmHWM at the end, operations/s
         (operations_total delta, write + read + probe), failed operations (whole run), the
         `shard` labels of redis_canary_shard_operations_total, the servers' CPU, and the
         connections each node holds (INFO clients, minus the one asking).
  load   on the 3-master cluster, ROUNDS alternating rounds of: the canary with
         rate = "max", connections = 25, probe off (operations_total delta, write + read,
         over 10 s after 3 s) and `redis-benchmark --cluster -c 50 -t set,get -d 64
         -r 1000 -n N --csv` (2N / (N/SET rps + N/GET rps)); connections per node sampled
         with INFO clients during each; ratio of the medians.

    bench/cluster.py [--window 60] [--warmup 10] [--rounds 3] [--requests 300000]
                     [--out FILE.json] BINARY

Python 3.11, standard library only; every process started is reaped (benchlib.Procs).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    BenchError, Canary, CpuWindow, Procs, Redis, copy_binary, free_port, loadavg, msum,
    ops_total, resp_encode, status_kib, wait_until,
)  # fmt: skip

SHARD_OPS = "redis_canary_shard_operations_total"


def info(port: int, section: str = "") -> dict:
    """INFO (or CLUSTER INFO when section == "cluster-info") as a dict, on a fresh connection."""
    args = ("CLUSTER", "INFO") if section == "cluster-info" else ("INFO", section) if section else ("INFO",)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(resp_encode(*args))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError(f"port {port} closed the connection")
            data += chunk
        head, rest = data.split(b"\r\n", 1)
        if not head.startswith(b"$"):
            raise BenchError(f"port {port}: {head!r}")
        need = int(head[1:]) + 2
        while len(rest) < need:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    out = {}
    for line in rest.decode(errors="replace").splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


def clients(ports: list[int]) -> list[int]:
    """Connected clients per node, minus the INFO connection itself."""
    return [int(info(p, "clients")["connected_clients"]) - 1 for p in ports]


class Cluster:
    """`n` cluster-enabled redis-servers (masters only) joined by `redis-cli --cluster create`."""

    def __init__(self, procs: Procs, name: str, n: int):
        self.nodes = []
        for i in range(n):
            port = free_port()
            d = procs.workdir / f"{name}-{i}"
            d.mkdir(exist_ok=True)
            self.nodes.append(Redis(procs, f"{name}-{i}", port=port, extra=[
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / f"nodes-{port}.conf"),
                "--cluster-port", str(free_port()), "--cluster-node-timeout", "1000",
            ]))  # fmt: skip
        argv = ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{r.port}" for r in self.nodes],
                "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
        p = procs.spawn(f"{name}-create", argv)
        if procs.wait(p, timeout=60) != 0:
            raise BenchError(f"redis-cli --cluster create failed:\n{p.log_tail()}")

        def ok() -> bool:
            for r in self.nodes:
                ci = info(r.port, "cluster-info")
                if (ci.get("cluster_state") != "ok" or ci.get("cluster_slots_ok") != "16384"
                        or ci.get("cluster_known_nodes") != str(n)):  # fmt: skip
                    return False
            return True

        wait_until(f"cluster_state:ok on all {n} nodes of {name}", 60, ok, interval=0.2)

    @property
    def ports(self) -> list[int]:
        return [r.port for r in self.nodes]

    @property
    def pids(self) -> dict[str, int]:
        return {r.name: r.pid for r in self.nodes}

    def url(self) -> str:
        return self.nodes[0].url()


def config(instance: str, url: str, cluster: bool, extra: dict) -> str:
    lines = [f'instance = "{instance}"', "", "[defaults]", "keys = 1000"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    lines += ["", "[[targets]]", 'name = "t"', f'url = "{url}"']
    if cluster:
        lines.append('mode = "cluster"')
    return "\n".join(lines) + "\n"


def cost(procs: Procs, binary: Path, label: str, url: str, cluster: bool,
         servers: dict[str, int], ports: list[int], window: float, warmup: float) -> dict:  # fmt: skip
    canary = Canary(procs, binary, f"cost-{label}", config(f"bench-cluster-{label}", url, cluster, {}))
    try:
        time.sleep(warmup)
        m0 = canary.metrics()
        load0 = loadavg()
        cpu = CpuWindow({"canary": canary.pid, **servers}).start()
        time.sleep(window / 2)
        conns = clients(ports)  # mid-window
        time.sleep(window / 2)
        res = cpu.stop()
        rss, hwm = status_kib(canary.pid, "VmRSS"), status_kib(canary.pid, "VmHWM")
        m1 = canary.metrics()
        alive = canary.proc.alive()
    finally:
        canary.stop()
    wall = res["canary"]["wall_seconds"]
    ops = {op: (ops_total(m1, op=op) - ops_total(m0, op=op)) / wall for op in ("write", "read", "probe")}
    shards = sorted({lab["shard"] for n, lab, _ in m1 if n == SHARD_OPS and "shard" in lab})
    per_shard = {s: msum(m1, SHARD_OPS, shard=s) - msum(m0, SHARD_OPS, shard=s) for s in shards}
    return {
        "label": label, "window_s": wall, "warmup_s": warmup, "alive": alive,
        "canary_cpu": res["canary"], "vmrss_kib": rss, "vmhwm_kib": hwm,
        "ops_per_second": ops, "ops_per_second_total": sum(ops.values()),
        "failed_total_whole_run": ops_total(m1, outcome="failed"),
        "failed_in_window": ops_total(m1, outcome="failed") - ops_total(m0, outcome="failed"),
        "shards": shards, "shard_operations_in_window": per_shard,
        "servers_cpu_percent_sum": sum(res[n]["cpu_percent"] for n in servers),
        "servers_cpu": {n: res[n] for n in servers}, "connections_per_node": conns,
        "slots_covered": msum(m1, "redis_canary_cluster_slots_covered"),
        "skipped_ticks_total": msum(m1, "redis_canary_skipped_ticks_total"),
        "internal_errors_total": msum(m1, "redis_canary_internal_errors_total"),
        "machine": res["_machine"], "loadavg_start": load0, "loadavg_end": loadavg(),
    }  # fmt: skip


def canary_max(procs: Procs, binary: Path, c: Cluster, i: int, window: float, warmup: float,
               connections: int = 25) -> dict:  # fmt: skip
    extra = {"rate": '"max"', "connections": connections, "value_size": 64, "connect_probe_interval": '"0s"'}
    name = f"load-canary{connections}-{i}"
    canary = Canary(procs, binary, name, config(f"bench-{name}", c.url(), True, extra))
    try:
        time.sleep(warmup)
        m0 = canary.metrics(("redis_canary_operations_total",))
        cpu = CpuWindow({"canary": canary.pid, **c.pids}).start()
        time.sleep(window / 2)
        conns = clients(c.ports)
        time.sleep(window / 2)
        res = cpu.stop()
        m1 = canary.metrics(("redis_canary_operations_total",))
    finally:
        canary.stop()
    wall = res["canary"]["wall_seconds"]
    done = sum(ops_total(m1, op=op) - ops_total(m0, op=op) for op in ("write", "read"))
    return {"connections_setting": connections, "ops_per_second": done / wall, "window_s": wall,
            "failed": ops_total(m1, outcome="failed") - ops_total(m0, outcome="failed"),
            "canary_cpu_percent": res["canary"]["cpu_percent"],
            "servers_cpu_percent_sum": sum(res[n]["cpu_percent"] for n in c.pids),
            "connections_per_node": conns}  # fmt: skip


def redis_benchmark(procs: Procs, c: Cluster, requests: int, clients_n: int = 50) -> dict:
    argv = ["redis-benchmark", "--cluster", "-h", "127.0.0.1", "-p", str(c.ports[0]), "-c", str(clients_n),
            "-t", "set,get", "-d", "64", "-r", "1000", "-n", str(requests), "--csv"]  # fmt: skip
    cpu = CpuWindow(c.pids).start()
    p = procs.spawn("redis-benchmark", argv)
    peak: list[int] = [0] * len(c.ports)
    code, ru = None, None
    for _ in range(1200):  # connections per node, sampled every 0.5 s (bounded: 600 s)
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)  # not p.alive(): poll() would reap it
        if pid == p.pid:
            code = p.popen.returncode = os.waitstatus_to_exitcode(status)
            break
        try:
            peak = [max(a, b) for a, b in zip(peak, clients(c.ports))]
        except (OSError, BenchError):
            pass
        time.sleep(0.5)
    res = cpu.stop()
    procs.stop(p)  # reaped already, or still running after 600 s: killed
    if code != 0:
        raise BenchError(f"redis-benchmark exited {code}:\n{p.log_tail()}")
    text = p.log.read_text()
    block = text[text.rfind('"test"'):]  # the log accumulates across rounds
    out = {}
    for r in csv.DictReader(io.StringIO(block)):
        out[r["test"]] = {k: float(v) for k, v in r.items() if k != "test"}
    set_rps, get_rps = out["SET"]["rps"], out["GET"]["rps"]
    wall = res[c.nodes[0].name]["wall_seconds"]
    return {"argv": " ".join(argv), "csv": out, "combined_rps": 2 / (1 / set_rps + 1 / get_rps),
            "client_cpu_percent": 100 * (ru.ru_utime + ru.ru_stime) / wall,
            "servers_cpu_percent_sum": sum(res[n]["cpu_percent"] for n in c.pids),
            "peak_connections_per_node": peak, "wall_s": wall}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", type=Path)
    ap.add_argument("--window", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300_000)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    procs = Procs(Path(tempfile.mkdtemp(prefix="bench-cluster-")))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs, load = [], {}
    try:
        binary = copy_binary(a.binary, procs.workdir)  # a concurrent build cannot swap it
        r = Redis(procs, "standalone")
        runs.append(cost(procs, binary, "standalone", r.url(), False, {"standalone": r.pid},
                         [r.port], a.window, a.warmup))  # fmt: skip
        r.stop()
        for n in (3, 10):
            c = Cluster(procs, f"c{n}", n)
            runs.append(cost(procs, binary, f"cluster-{n}", c.url(), True, c.pids, c.ports,
                             a.window, a.warmup))  # fmt: skip
            if n == 3:
                c3 = c
            else:
                for node in c.nodes:
                    node.stop()
        for x in runs:
            print(f"cost {x['label']}: canary CPU {x['canary_cpu']['cpu_percent']:.2f} % of a core, "
                  f"VmRSS {x['vmrss_kib'] / 1024:.1f} MiB, VmHWM {x['vmhwm_kib'] / 1024:.1f} MiB, "
                  f"{x['ops_per_second_total']:.1f} ops/s ({', '.join(f'{k} {v:.1f}' for k, v in x['ops_per_second'].items())}), "
                  f"failed {x['failed_total_whole_run']:.0f}, shards {len(x['shards'])} {x['shards']}, "
                  f"servers CPU {x['servers_cpu_percent_sum']:.2f} % (sum), "
                  f"connections per node {x['connections_per_node']}, machine busy {x['machine']['busy_cores']:.2f} cores",
                  flush=True)  # fmt: skip
        cn, rb = [], []
        for i in range(a.rounds):
            cn.append(canary_max(procs, binary, c3, i, 10.0, 3.0))
            print(f"load round {i + 1}: canary {cn[-1]['ops_per_second']:,.0f} ops/s, failed "
                  f"{cn[-1]['failed']:.0f}, CPU canary {cn[-1]['canary_cpu_percent']:.0f} % / servers "
                  f"{cn[-1]['servers_cpu_percent_sum']:.0f} %, connections per node "
                  f"{cn[-1]['connections_per_node']}", flush=True)  # fmt: skip
            rb.append(redis_benchmark(procs, c3, a.requests))
            print(f"load round {i + 1}: redis-benchmark SET {rb[-1]['csv']['SET']['rps']:,.0f} GET "
                  f"{rb[-1]['csv']['GET']['rps']:,.0f} combined {rb[-1]['combined_rps']:,.0f} ops/s, CPU "
                  f"client {rb[-1]['client_cpu_percent']:.0f} % / servers {rb[-1]['servers_cpu_percent_sum']:.0f} %, "
                  f"peak connections per node {rb[-1]['peak_connections_per_node']}", flush=True)  # fmt: skip
        cm = statistics.median(x["ops_per_second"] for x in cn)
        rm = statistics.median(x["combined_rps"] for x in rb)
        load = {"canary": cn, "redis_benchmark": rb, "median_canary": cm,
                "median_redis_benchmark": rm, "ratio": cm / rm}  # fmt: skip
        print(f"load: median canary {cm:,.0f} ops/s vs redis-benchmark {rm:,.0f} ops/s: "
              f"ratio {cm / rm:.2f}x", flush=True)  # fmt: skip
        # Equal connection counts: the canary holds a pool per node per loop (25 -> 50 per
        # node), redis-benchmark --cluster spreads -c over the nodes. So also: the canary at
        # connections = 8 (48 in all on 3 nodes) against -c 50, and -c 150 against 25.
        cn8, rb150 = [], []
        for i in range(a.rounds):
            cn8.append(canary_max(procs, binary, c3, i, 10.0, 3.0, connections=8))
            print(f"equal round {i + 1}: canary connections=8 {cn8[-1]['ops_per_second']:,.0f} ops/s, "
                  f"failed {cn8[-1]['failed']:.0f}, connections per node {cn8[-1]['connections_per_node']}",
                  flush=True)  # fmt: skip
            rb150.append(redis_benchmark(procs, c3, a.requests, clients_n=150))
            print(f"equal round {i + 1}: redis-benchmark -c 150 combined {rb150[-1]['combined_rps']:,.0f} "
                  f"ops/s, peak connections per node {rb150[-1]['peak_connections_per_node']}", flush=True)  # fmt: skip
        c8m = statistics.median(x["ops_per_second"] for x in cn8)
        r150m = statistics.median(x["combined_rps"] for x in rb150)
        load["equal"] = {"canary_connections_8": cn8, "redis_benchmark_c150": rb150,
                         "median_canary_8": c8m, "median_redis_benchmark_c150": r150m,
                         "ratio_canary8_vs_rb50": c8m / rm, "ratio_canary25_vs_rb150": cm / r150m}  # fmt: skip
        print(f"equal: canary connections=8 {c8m:,.0f} vs redis-benchmark -c 50 {rm:,.0f}: {c8m / rm:.2f}x; "
              f"canary connections=25 {cm:,.0f} vs redis-benchmark -c 150 {r150m:,.0f}: {cm / r150m:.2f}x",
              flush=True)  # fmt: skip
    finally:
        procs.stop_all()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({
            "started_at": started, "argv": sys.argv,
            "binary_sha256": hashlib.sha256(a.binary.read_bytes()).hexdigest(),
            "cost": runs, "load": load,
        }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

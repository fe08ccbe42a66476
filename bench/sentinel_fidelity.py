#!/usr/bin/env python3
"""Sentinel section of the benchmarks (issue 10, item 7): how well a `mode = "sentinel"`
target measures a failover, against the sentinels' own timeline, and what a sentinel target
costs next to a standalone one.

    bench/sentinel_fidelity.py                    # 5 kills + 60 s cost window (~4 minutes)
    bench/sentinel_fidelity.py --kills 2 --cost-seconds 10   # a smoke run
    bench/sentinel_fidelity.py --bin PATH --out FILE --keep

Deployment (loopback, as in tests/support/sentinel.rs): a master and two replicas, three
`redis-sentinel` processes, quorum 2, `down-after-milliseconds 1000`, `failover-timeout 3000`.
No passwords (they change nothing measured here).

Fidelity: the canary runs with the defaults (`rate = 10`, probe every 1 s, `sentinel_refresh`
10 s) and one sentinel target. Each kill: wait until the sentinels agree on a master with two
replicas online and nothing happened for 8 s (Sentinel will not fail the same master over
again within 2 x failover-timeout), SIGKILL the master, and record on the wall clock
  - kill -> `+switch-master`: the earliest new `+switch-master` line in the three sentinel
    logs, from the sentinel's own millisecond timestamp;
  - kill -> first success: the first `SET` accepted by a replica (the harness keeps one
    connection to each replica and tries a `SET` every 10 ms: `-READONLY` until promoted);
  - kill -> `disrupted` 1 and back to 0 (the canary's gauge polled every 20 ms);
  - the canary's episode length: the delta of `disruption_duration_seconds_sum`.
The killed node is restarted as a replica of the new master before the next kill.

Cost: two canaries of the same binary side by side over the same window, one with a
standalone target (`url` = the master) and one with a sentinel target, both at the default
rate: CPU % of one core (utime + stime from /proc over the window) and RSS (VmRSS at the end,
VmHWM).

Python 3.11, standard library only (bench/benchlib.py). Every process is killed and reaped
on exit, Ctrl-C included. Prints a table; writes every reading to --out as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    BenchError, Canary, CpuWindow, Procs, Redis, copy_binary, free_port, loadavg, machine, msum,
    status_kib, wait_until,
)  # fmt: skip

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MASTER = "mymaster"
EPISODE = "redis_canary_disruption_duration_seconds"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(port: int, *args: str, timeout: float = 2.0) -> str:
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=timeout)  # fmt: skip
    return r.stdout


class Sentinel:
    def __init__(self, procs: Procs, name: str, master_port: int):
        self.port = free_port()
        self.dir = procs.workdir / name
        self.dir.mkdir()
        self.log = self.dir / "sentinel.log"
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
            f"logfile {self.log}\nsentinel announce-ip 127.0.0.1\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 3000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.proc = procs.spawn(name, ["redis-sentinel", str(conf)])
        wait_until(f"{name} PING", 15, lambda: cli(self.port, "PING").strip() == "PONG", 0.1)

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def master_field(self, field: str) -> str | None:
        lines = cli(self.port, "SENTINEL", "master", MASTER).splitlines()
        for k, v in zip(lines[::2], lines[1::2]):
            if k == field:
                return v
        return None

    def master_port(self) -> int | None:
        lines = cli(self.port, "SENTINEL", "get-master-addr-by-name", MASTER).splitlines()
        return int(lines[1]) if len(lines) >= 2 and lines[1].isdigit() else None

    def switches(self) -> list[tuple[float, str]]:
        """(wall-clock epoch, line) of every +switch-master in the log, from its timestamp
        ("pid:X 30 Nov 2026 21:30:01.123 # +switch-master ..."; local time)."""
        out = []
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            if "+switch-master" not in line:
                continue
            m = re.match(r"^\d+:\w (\d+ \w+ \d+ \d+:\d+:\d+\.\d+) ", line)
            if m:
                ts = datetime.datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S.%f")
                out.append((ts.timestamp(), line))
        return out


def online_replicas(port: int) -> int:
    return len(re.findall(r"^slave\d+:.*state=online", cli(port, "INFO", "replication"), re.M))


class WriteProbe:
    """A connection per node; `try_set(port)` sends one SET and says whether it was accepted."""

    def __init__(self):
        self.socks: dict[int, socket.socket] = {}

    def try_set(self, port: int) -> bool:
        try:
            s = self.socks.get(port)
            if s is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=0.2)
                s.settimeout(0.2)
                self.socks[port] = s
            s.sendall(b"*3\r\n$3\r\nSET\r\n$14\r\nbench:failover\r\n$1\r\n1\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed")
                data += chunk
            return data.startswith(b"+OK")
        except OSError:
            s = self.socks.pop(port, None)
            if s:
                s.close()
            return False

    def close(self):
        for s in self.socks.values():
            s.close()
        self.socks.clear()


def metric(canary: Canary, name: str) -> float:
    return msum(canary.metrics(("redis_canary_",)), name)


def settled(sentinels: list[Sentinel], nodes: dict[int, Redis]):
    ports = {s.master_port() for s in sentinels}
    if len(ports) != 1 or None in ports:
        return None
    port = ports.pop()
    if port not in nodes or online_replicas(port) < 2:
        return None
    if any(s.master_field("flags") != "master" for s in sentinels):
        return None
    return port


def one_kill(i: int, canary: Canary, sentinels: list[Sentinel], nodes: dict[int, Redis]) -> dict:
    master_port = wait_until("the sentinels to agree on a master with 2 replicas", 60,
                             lambda: settled(sentinels, nodes), 0.2)  # fmt: skip
    # Quiet: no episode open, and nothing for 8 s (Sentinel's 2 x failover-timeout).
    time.sleep(8)
    wait_until("the canary to be undisrupted", 30,
               lambda: metric(canary, "redis_canary_disrupted") == 0, 0.1)  # fmt: skip
    m0 = canary.metrics(("redis_canary_",))
    before = sum(len(s.switches()) for s in sentinels)
    replicas = [p for p in nodes if p != master_port]
    probe = WriteProbe()
    for p in replicas:  # connect before the kill; a replica answers -READONLY
        probe.try_set(p)
    log(f"kill {i}: SIGKILL master :{master_port}")
    t0 = time.time()
    nodes[master_port].kill()
    first_write = detected = cleared = None
    deadline = t0 + 60
    next_metric = t0
    while time.time() < deadline and (first_write is None or cleared is None):
        now = time.time()
        if first_write is None:
            for p in replicas:
                if probe.try_set(p):
                    first_write = (time.time() - t0, p)
                    break
        if now >= next_metric:
            next_metric = now + 0.02
            d = metric(canary, "redis_canary_disrupted")
            if detected is None and d == 1:
                detected = time.time() - t0
            if detected is not None and cleared is None and d == 0:
                cleared = time.time() - t0
        time.sleep(0.01)
    probe.close()
    wait_until("+switch-master", 30, lambda: sum(len(s.switches()) for s in sentinels) > before, 0.05)
    new_switches = sorted(sw for s in sentinels for sw in s.switches() if sw[0] >= t0 - 0.5)
    switch_at, switch_line = new_switches[0]
    m1 = canary.metrics(("redis_canary_",))
    episode = msum(m1, EPISODE + "_sum") - msum(m0, EPISODE + "_sum")
    episodes = msum(m1, EPISODE + "_count") - msum(m0, EPISODE + "_count")
    switches = msum(m1, "redis_canary_sentinel_master_switches_total") - msum(
        m0, "redis_canary_sentinel_master_switches_total")
    new_port = int(switch_line.split()[-1])
    backend = [labels for n, labels, v in m1 if n == "redis_canary_backend_info" and v == 1]
    rec = {
        "kill": i, "killed_port": master_port, "new_master_port": new_port,
        "kill_to_switch_s": switch_at - t0, "switch_line": switch_line,
        "kill_to_first_write_s": first_write[0] if first_write else None,
        "first_write_port": first_write[1] if first_write else None,
        "kill_to_disrupted_s": detected, "kill_to_cleared_s": cleared,
        "episode_s": episode, "episodes": episodes, "sentinel_master_switches": switches,
        "backend_info": backend,
    }  # fmt: skip
    log(f"kill {i}: kill->+switch-master {rec['kill_to_switch_s']:.3f} s, kill->first write "
        f"{rec['kill_to_first_write_s']:.3f} s, episode {episode:.3f} s ({episodes:.0f}), "
        f"switches +{switches:.0f}, cleared {cleared}")  # fmt: skip
    # Back as a replica of the new master (not as an empty master the sentinels would demote).
    old = nodes[master_port]
    old.extra = ["--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", str(new_port)]
    old.start()
    return rec


def cost(procs: Procs, binary: Path, sentinels: list[Sentinel], master_port: int, secs: int) -> dict:
    urls = ", ".join(f'"{s.url()}"' for s in sentinels)
    standalone = Canary(procs, binary, "cost-standalone",
                        f'instance = "bench-cost-standalone"\n\n[[targets]]\nname = "standalone"\n'
                        f'url = "redis://127.0.0.1:{master_port}"\n')  # fmt: skip
    sentinel = Canary(procs, binary, "cost-sentinel",
                      f'instance = "bench-cost-sentinel"\n\n[[targets]]\nname = "sentinel"\n'
                      f'mode = "sentinel"\nsentinels = [{urls}]\nmaster_name = "{MASTER}"\n')  # fmt: skip
    time.sleep(5)  # warm-up
    log(f"cost: {secs} s window, standalone (pid {standalone.pid}) and sentinel (pid {sentinel.pid}) side by side")
    la0 = loadavg()
    w = CpuWindow({"standalone": standalone.pid, "sentinel": sentinel.pid}).start()
    time.sleep(secs)
    cpu = w.stop()
    out = {"window_s": secs, "loadavg_before": la0, "loadavg_after": loadavg(), "machine": cpu["_machine"]}
    for name, c in (("standalone", standalone), ("sentinel", sentinel)):
        m = c.metrics(("redis_canary_",))
        out[name] = {
            **cpu[name],
            "rss_kib": status_kib(c.pid, "VmRSS"), "hwm_kib": status_kib(c.pid, "VmHWM"),
            "operations": msum(m, "redis_canary_operations_total"),
            "failed": msum(m, "redis_canary_operations_total", outcome="failed"),
        }  # fmt: skip
    standalone.stop()
    sentinel.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=Path(os.environ.get(
        "REDIS_CANARY_BIN", ROOT / "target/release/redis-canary")))  # fmt: skip
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--cost-seconds", type=int, default=60)
    ap.add_argument("--out", type=Path, default=BENCH / "results/sentinel.json")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if not args.bin.is_file():
        print(f"no binary at {args.bin}: cargo build --release, or --bin", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="redis-canary-bench-sentinel."))
    procs = Procs(workdir)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results: dict = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "machine": machine()}  # fmt: skip
    try:
        binary = copy_binary(args.bin, workdir)
        results["binary"] = {"path": str(args.bin), "sha256": hashlib.sha256(binary.read_bytes()).hexdigest(),
                             "mtime": datetime.datetime.fromtimestamp(args.bin.stat().st_mtime).isoformat()}  # fmt: skip
        extra = ["--repl-diskless-sync-delay", "0"]
        master = Redis(procs, "node0", extra=extra)
        nodes = {master.port: master}
        for i in (1, 2):
            r = Redis(procs, f"node{i}", extra=[*extra, "--replicaof", "127.0.0.1", str(master.port)])
            nodes[r.port] = r
        wait_until("2 replicas online", 20, lambda: online_replicas(master.port) == 2, 0.1)
        sentinels = [Sentinel(procs, f"sentinel{i}", master.port) for i in range(3)]
        wait_until("the sentinels to know the replicas and each other", 30, lambda: all(
            s.master_field("num-slaves") == "2" and s.master_field("num-other-sentinels") == "2"
            for s in sentinels), 0.2)  # fmt: skip
        urls = ", ".join(f'"{s.url()}"' for s in sentinels)
        canary = Canary(procs, binary, "fidelity-canary",
                        f'instance = "bench-sentinel"\n\n[[targets]]\nname = "cache"\nmode = "sentinel"\n'
                        f'sentinels = [{urls}]\nmaster_name = "{MASTER}"\n')  # fmt: skip
        wait_until("reads", 30, lambda: msum(canary.metrics(("redis_canary_op",)),
                   "redis_canary_operations_total", op="read", outcome="ok") >= 20, 0.2)  # fmt: skip
        kills = [one_kill(i + 1, canary, sentinels, nodes) for i in range(args.kills)]
        canary.stop()
        results["kills"] = kills
        master_port = wait_until("a settled master", 60, lambda: settled(sentinels, nodes), 0.2)
        results["cost"] = cost(procs, binary, sentinels, master_port, args.cost_seconds)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        procs.stop_all()
        return 130
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        procs.stop_all()
        return 1
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nevery reading: {args.out}")
    return 0


def print_table(results: dict) -> None:
    kills = results["kills"]
    print("\n| kill | kill -> +switch-master | kill -> first write accepted | canary episode | "
          "episode - switch | episode - first write | disrupted after | cleared after | switches |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in kills:
        fw = k["kill_to_first_write_s"]
        print(f"| {k['kill']} | {k['kill_to_switch_s']:.3f} s | {fw:.3f} s | {k['episode_s']:.3f} s "
              f"({k['episodes']:.0f}) | {k['episode_s'] - k['kill_to_switch_s']:+.3f} s | "
              f"{k['episode_s'] - fw:+.3f} s | {k['kill_to_disrupted_s']:.3f} s | "
              f"{k['kill_to_cleared_s']:.3f} s | +{k['sentinel_master_switches']:.0f} |")  # fmt: skip
    for ref, key in (("+switch-master", "kill_to_switch_s"), ("first write accepted", "kill_to_first_write_s")):
        errs = [k["episode_s"] - k[key] for k in kills]
        print(f"\nepisode vs kill -> {ref}: median error {statistics.median(errs):+.3f} s, "
              f"worst {max(errs, key=abs):+.3f} s")  # fmt: skip
    c = results["cost"]
    print(f"\ncost over {c['window_s']} s (load average {c['loadavg_before'][0]:.2f} -> "
          f"{c['loadavg_after'][0]:.2f}, machine busy {c['machine']['busy_cores']:.2f} cores):")
    print("| target | CPU % of a core | RSS | peak RSS | operations | failed |")
    print("|---|---|---|---|---|---|")
    for name in ("standalone", "sentinel"):
        x = c[name]
        print(f"| {name} | {x['cpu_percent']:.2f} % | {x['rss_kib'] / 1024:.1f} MiB | "
              f"{x['hwm_kib'] / 1024:.1f} MiB | {x['operations']:.0f} | {x['failed']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())

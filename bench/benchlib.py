"""Plumbing for bench/run: processes that are always reaped, /proc CPU and memory readings,
real redis-server and redis-canary processes on loopback ports from port 0, a tiny RESP
client, /metrics scraping and parsing, and histogram quantiles.

Standard library only (Python 3.11). Every wait polls with a deadline; every process
started here is registered in a `Procs` and killed and reaped by `Procs.stop_all()`, which
bench/run calls from a `finally` block (and from its signal handlers, via the exception
they raise). As a backstop, children get PR_SET_PDEATHSIG=SIGKILL so a harness killed with
SIGKILL does not leave them behind either.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """Runs in the child between fork and exec: die with the harness, and have the highest
    file-descriptor limit allowed (1,000 targets need a few thousand sockets)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class BenchError(RuntimeError):
    """A benchmark could not be run (a server did not start, a scrape failed...)."""


def free_port() -> int:
    """A loopback port that was free a moment ago (bound on port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, within: float, check, interval: float = 0.02):
    """Polls `check()` until it returns a truthy value (returned) or `within` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = check()
        except (OSError, BenchError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen
    rusage: object = None  # filled by Procs.wait (os.wait4) for processes that exited

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Procs:
    """Every process the harness starts; `stop_all` kills and reaps them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.workdir,
                start_new_session=True,  # Ctrl-C reaches the harness only; it stops them
                preexec_fn=_child_setup,
            )
        p = Proc(name, argv, log, popen)
        self.procs.append(p)
        return p

    def wait(self, p: Proc, timeout: float) -> int:
        """Waits (bounded) for `p` to exit and records its resource usage (os.wait4)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.rusage = ru
                p.popen.returncode = os.waitstatus_to_exitcode(status)
                self._forget(p)
                return p.popen.returncode
            time.sleep(0.01)
        raise BenchError(f"{p.name} (pid {p.pid}) still running after {timeout}s")

    def stop(self, p: Proc, sig: int = signal.SIGTERM, grace: float = 6.0) -> None:
        """Sends `sig` (after SIGCONT, in case it was stopped), waits up to `grace` seconds,
        then SIGKILLs; always reaps."""
        if p.popen.returncode is None:
            for s in (signal.SIGCONT, sig):
                try:
                    os.kill(p.pid, s)
                except ProcessLookupError:
                    pass
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.popen.wait(timeout=10)
        self._forget(p)

    def _forget(self, p: Proc) -> None:
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.procs)):
            try:
                self.stop(p, grace=3.0)
            except Exception as e:  # keep going: every other process must still be reaped
                print(f"bench: could not stop {p.name} (pid {p.pid}): {e}")


# ---------------------------------------------------------------------------------------
# /proc readings


def cpu_times(pid: int) -> tuple[int, int]:
    """(utime, stime) of the process (all threads, exited ones included), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]), int(fields[12])


def cpu_ticks(pid: int) -> int:
    """utime + stime of the process, in clock ticks."""
    return sum(cpu_times(pid))


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all live threads of the process."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def status_kib(pid: int, key: str) -> int:
    """A `Vm*` line of /proc/PID/status, in KiB (VmRSS: now, VmHWM: peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def machine_ticks() -> list[int]:
    """The `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


class CpuWindow:
    """CPU time of some processes between `start()` and `stop()`, as % of one core; and,
    under the key `_machine`, how busy the whole machine was meanwhile (noise)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def start(self):
        self.t0 = time.monotonic()
        self.ticks0 = {n: cpu_times(p) for n, p in self.pids.items()}
        self.machine0 = machine_ticks()
        return self

    def stop(self) -> dict[str, dict]:
        ticks = {n: cpu_times(p) for n, p in self.pids.items()}
        wall = time.monotonic() - self.t0
        m = [b - a for a, b in zip(self.machine0, machine_ticks())]
        out = {}
        for n in self.pids:
            user = (ticks[n][0] - self.ticks0[n][0]) / CLK_TCK
            system = (ticks[n][1] - self.ticks0[n][1]) / CLK_TCK
            secs = user + system
            out[n] = {"cpu_seconds": secs, "user_seconds": user, "system_seconds": system,
                      "wall_seconds": wall, "cpu_percent": 100 * secs / wall}  # fmt: skip
        busy = m[0] + m[1] + m[2] + m[5] + m[6] + m[7]
        out["_machine"] = {
            # In cores: 2.0 would be both CPUs fully busy.
            "busy_cores": busy / CLK_TCK / wall,
            "steal_cores": m[7] / CLK_TCK / wall,
            "iowait_cores": m[4] / CLK_TCK / wall,
        }
        return out


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = status_mem_total()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": os.uname().release,
        "mem_mib": mem_kib // 1024,
    }


def status_mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def busy_processes(exclude: set[int], min_percent: float = 5.0, window: float = 1.0) -> list[str]:
    """Other processes using CPU right now (a note for the noise section of the results)."""

    def snapshot():
        out = {}
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) not in exclude:
                try:
                    with open(f"/proc/{d}/stat") as f:
                        text = f.read()
                    comm = text[text.index("(") + 1 : text.rindex(")")]
                    out[int(d)] = (comm, cpu_ticks(int(d)))
                except (OSError, ValueError, IndexError):
                    pass
        return out

    a = snapshot()
    time.sleep(window)
    b = snapshot()
    busy = []
    for pid, (comm, t) in b.items():
        if pid in a:
            pct = 100 * (t - a[pid][1]) / CLK_TCK / window
            if pct >= min_percent:
                busy.append(f"{comm}({pid}) {pct:.0f}%")
    return busy


# ---------------------------------------------------------------------------------------
# redis


def resp_encode(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def redis_call(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One command on a fresh connection; returns the first reply line (enough for PING,
    INFO headers, +OK)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(resp_encode(*args))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


class Redis:
    """A real redis-server on loopback (no persistence), optionally restarted on its port."""

    def __init__(self, procs: Procs, name: str, port: int | None = None, extra=()):
        self.procs = procs
        self.name = name
        self.port = port or free_port()
        self.dir = procs.workdir / name
        self.dir.mkdir(exist_ok=True)
        self.extra = list(extra)
        self.proc: Proc | None = None
        self.start()

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = self.procs.spawn(self.name, argv)
        try:
            wait_until(
                f"{self.name} to answer PING on port {self.port}",
                10,
                lambda: redis_call(self.port, "PING").startswith(b"+PONG"),
            )
        except BenchError:
            tail = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name} did not start; its log ends:\n{tail}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.procs.stop(self.proc, sig=signal.SIGKILL)

    def stop(self) -> None:
        self.procs.stop(self.proc)


# ---------------------------------------------------------------------------------------
# HTTP and /metrics


def http_get(url: str, timeout: float = 5.0, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, prefixes: tuple[str, ...] | None = None) -> list[tuple[str, dict, float]]:
    """Samples of a Prometheus/OpenMetrics text exposition, optionally only those whose
    name starts with one of `prefixes` (cheap filter for 1,000-target expositions)."""
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if prefixes and not line.startswith(prefixes):
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            name = line[:brace]
            labels = dict(_LABEL.findall(line[brace + 1 : close]))
            rest = line[close + 1 :].split()
        else:
            parts = line.split()
            name, labels, rest = parts[0], {}, parts[1:]
        if not rest:
            continue
        out.append((name, labels, float(rest[0])))
    return out


def msum(samples, name: str, **match) -> float:
    """Sum of the samples called `name` whose labels include `match`."""
    return sum(
        v
        for n, labels, v in samples
        if n == name and all(labels.get(k) == val for k, val in match.items())
    )


def buckets(samples, name: str, **match) -> list[tuple[float, float]]:
    """Cumulative (le, count) of a histogram, summed over the series matching `match`."""
    acc: dict[float, float] = {}
    for n, labels, v in samples:
        if n == name + "_bucket" and all(labels.get(k) == val for k, val in match.items()):
            le = float(labels["le"])
            acc[le] = acc.get(le, 0.0) + v
    return sorted(acc.items())


def bucket_delta(after, before) -> list[tuple[float, float]]:
    b = dict(before)
    return [(le, c - b.get(le, 0.0)) for le, c in after]


def bucket_quantile(bks: list[tuple[float, float]], q: float) -> float | None:
    """Quantile by linear interpolation inside the bucket, like PromQL histogram_quantile."""
    if not bks or bks[-1][1] <= 0:
        return None
    total = bks[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in bks:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


class Canary:
    """The real redis-canary binary (`run` or `soak`) with a config file, on a port from
    port 0; `/readyz` is polled before it is handed back."""

    def __init__(self, procs: Procs, binary: Path, name: str, config: str, mode: str = "run",
                 extra_args=(), ready_within: float = 20.0):
        self.procs = procs
        self.name = name
        self.port = free_port()
        self.config_path = procs.workdir / f"{name}.toml"
        self.config_path.write_text(config)
        argv = [str(binary), mode, "--config", str(self.config_path),
                "--listen", f"127.0.0.1:{self.port}", *extra_args]  # fmt: skip
        self.proc = procs.spawn(name, argv)
        try:
            wait_until(f"{name} /readyz", ready_within, self.ready, interval=0.05)
        except BenchError:
            raise BenchError(f"{name} did not become ready; its log ends:\n{self.proc.log_tail()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        if not self.proc.alive():
            raise BenchError(f"{self.name} exited:\n{self.proc.log_tail()}")
        try:
            http_get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
            return True
        except OSError:
            return False

    def scrape_text(self, timeout: float = 30.0) -> str:
        return http_get(
            f"http://127.0.0.1:{self.port}/metrics", timeout=timeout, accept="text/plain"
        ).decode()

    def metrics(self, prefixes=None, timeout: float = 30.0):
        return parse_metrics(self.scrape_text(timeout), prefixes)

    def stop(self) -> int | None:
        self.procs.stop(self.proc)
        return self.proc.popen.returncode


def ops_total(samples, **match) -> float:
    return msum(samples, "redis_canary_operations_total", **match)


def fmt_pct(x: float) -> str:
    return f"{x:.2f} %"


def fmt_mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def copy_binary(src: Path, workdir: Path) -> Path:
    """A private copy, so a concurrent `cargo build` cannot swap the binary mid-run."""
    dst = workdir / "redis-canary"
    shutil.copy2(src, dst)
    return dst


@dataclass
class Row:
    section: str
    check: str
    measured: str
    target: str
    status: str  # pass | fail | info
    values: dict = field(default_factory=dict)

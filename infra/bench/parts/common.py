"""What every part shares: the run's context (Ctx), logging and figure lines, percentiles,
and the launcher every measured program is started through, which reports its peak RSS
(bench.py's docstring says why)."""

import json
import math
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

# bench.py, whose aws-* subcommands Ctx.aws runs.
BENCH_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench.py")

STAGES = ["filter", "classify", "route", "respond"]
# Every function the template deploys.
FUNCTIONS = STAGES + ["digest", "links", "retrain"]
MIB = 1024 * 1024
MB = 1000 * 1000
REGION = "us-east-1"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def say(line):
    """A figure: plain line on stdout."""
    print(line, flush=True)


def pct(values, p):
    """Nearest-rank percentile (p90 of 10 samples is the 9th smallest)."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


def summary(values):
    v = [x for x in values if x is not None]
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "median": round(statistics.median(v), 3),
        "p90": round(pct(v, 90), 3),
        "min": round(min(v), 3),
        "max": round(max(v), 3),
    }


# ------------------------------------------------------------------ process launcher

# Runs as `python -S -I -c LAUNCHER FD PROGRAM ARGS...`: forks, execs PROGRAM, reports
# "pid t_spawn" then "maxrss_kib t_exit exit_code utime stime" on FD (times: CLOCK_MONOTONIC,
# which this process's time.monotonic() shares).
LAUNCHER = r"""
import os, sys, time
fd = int(sys.argv[1])
argv = sys.argv[2:]
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.close(fd)
        os.execv(argv[0], argv)
    except BaseException as e:
        os.write(2, ("launcher: cannot run %s: %s\n" % (argv[0], e)).encode())
    os._exit(127)
os.write(fd, ("%d %.6f\n" % (pid, t0)).encode())
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        pass
t1 = time.monotonic()
os.write(fd, ("%d %.6f %d %.6f %.6f\n" % (ru.ru_maxrss, t1, os.waitstatus_to_exitcode(status), ru.ru_utime, ru.ru_stime)).encode())
"""


class Launched:
    """A program started through the launcher."""

    def __init__(self, argv, env, stdout_path, stderr_path, cwd=None):
        r, w = os.pipe()
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        out = open(stdout_path, "wb")
        err = open(stderr_path, "wb") if stderr_path != stdout_path else out
        try:
            self.launcher = subprocess.Popen(
                [sys.executable, "-S", "-I", "-c", LAUNCHER, str(w), *argv],
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                pass_fds=(w,),
                cwd=cwd,
            )
        finally:
            os.close(w)
            out.close()
            if err is not out:
                err.close()
        self.fd = r
        self.buf = b""
        self.result = None
        first = self._line(timeout=30)
        if first is None:
            self._reap()
            raise RuntimeError(f"launcher for {argv[0]} did not start it")
        pid, t0 = first.split()
        self.pid, self.t_spawn = int(pid), float(t0)

    def _line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def running(self):
        return self.result is None and self.launcher.poll() is None

    def wait(self, timeout):
        """Waits for the program to end (at most timeout s); returns the result or None."""
        if self.result is None:
            line = self._line(timeout)
            if line is not None:
                maxrss, t1, code, ut, st = line.split()
                self.result = {
                    "maxrss_kib": int(maxrss),
                    "t_exit": float(t1),
                    "exit_code": int(code),
                    "cpu_s": float(ut) + float(st),
                    "user_s": float(ut),
                    "sys_s": float(st),
                }
                self._reap()
        return self.result

    def stop(self):
        """SIGTERM, then SIGKILL after 3 s; returns the wait4 result."""
        if self.result is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(3) is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait(10)
        self._reap()
        return self.result

    def _reap(self):
        try:
            self.launcher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.launcher.wait(timeout=10)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def vmhwm_kib(pid):
    """The exact peak RSS of a live process (its own address space only)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_floor_kib():
    """What a child started through the launcher reports at least, whatever it does."""
    true = shutil.which("true") or "/bin/true"
    tmp = f"/tmp/mailroom-bench-floor-{os.getpid()}.log"
    try:
        p = Launched([true], dict(os.environ), tmp, tmp)
        r = p.wait(30)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return r["maxrss_kib"] if r else None


# ------------------------------------------------------------------ context


class Ctx:
    def __init__(self, args):
        self.args = args
        self.repo = os.path.abspath(args.repo)
        self.target = os.path.abspath(args.target_dir)
        self.out = os.path.join(self.target, "bench")
        self.release = os.path.join(self.target, "release")
        self.quick = args.quick
        self.endpoint = args.endpoint or None
        self.resources = json.load(open(os.path.join(self.repo, "infra", "resources.json")))
        self.config_path = os.path.join(self.repo, "examples", "mailroom.toml")
        self.spam_root = os.path.normpath(os.path.join(self.repo, "..", "shared", "data", "spam"))
        self.previous = None
        self.floor_kib = None
        self.stack = None
        os.makedirs(self.out, exist_ok=True)

    def path(self, *parts):
        p = os.path.join(self.out, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def fresh_dir(self, *parts):
        p = os.path.join(self.out, *parts)
        shutil.rmtree(p, ignore_errors=True)
        os.makedirs(p)
        return p

    def aws(self, *argv, timeout=300):
        """Runs an AWS helper subcommand (boto3) of bench.py; returns its JSON output."""
        cmd = [sys.executable, BENCH_PY, argv[0], "--endpoint", self.endpoint, *argv[1:]]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout)

    def rss_mib(self, kib):
        if kib is None:
            return None
        return round(kib / 1024, 1)

    def at_floor(self, kib):
        return kib is not None and self.floor_kib is not None and kib <= self.floor_kib + 256


def mail_env():
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    return env


def timed_process(ctx, argv, label, folder="cli", timeout=3600, env=None):
    """Runs argv to completion through the launcher, its output in FOLDER/LABEL.out and
    .err; wall, CPU and peak RSS."""
    out_path, err_path = ctx.path(folder, f"{label}.out"), ctx.path(folder, f"{label}.err")
    p = Launched(argv, env or mail_env(), out_path, err_path, cwd=ctx.repo)
    r = p.wait(timeout)
    if r is None:
        p.stop()
        raise RuntimeError(f"{label} did not finish within {timeout} s")
    return {
        "wall_s": round(r["t_exit"] - p.t_spawn, 3),
        "cpu_s": round(r["cpu_s"], 3),
        "maxrss_kib": r["maxrss_kib"],
        "peak_rss_mib": ctx.rss_mib(r["maxrss_kib"]),
        "exit_code": r["exit_code"],
        "out": out_path,
        "err": err_path,
    }

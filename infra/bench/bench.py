#!/usr/bin/env python3
"""The measuring half of infra/bench/run.sh (see its header for what each part measures).

Standard library only in the measuring process. The AWS setup steps (`aws-setup`, `aws-put`,
`aws-drain`) run as separate processes of the repo's .venv Python because they use boto3;
keeping boto3 out of the measuring process keeps its memory low, which matters because a
child's peak RSS as wait4 reports it is never below the peak of the process that forked it
(Linux carries the pre-exec address space's high-water mark into the child's ru_maxrss).
So every measured program is started through a tiny launcher (`python -S -I`, about 8 MiB),
which forks, execs, calls os.wait4 and reports ru_maxrss; that launcher's own peak is
measured once and reported as `rss_floor_mib`: a figure at the floor means "at most that".

Every wait is bounded and every process started here is stopped here.
"""

import argparse
import base64
import hashlib
import json
import math
import os
import platform
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STAGES = ["filter", "classify", "route", "respond"]
PARTS = ["throughput", "coldstart", "memory", "size", "latency", "cost"]
MIB = 1024 * 1024
MB = 1000 * 1000
REGION = "us-east-1"
STACK = "mailroom-bench"
LARGE_SIZES_MB = [1, 10, 25, 40]
LAMBDA_MEMORY_MIB = 128


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
        """Runs an AWS helper subcommand (boto3) of this script; returns its JSON output."""
        cmd = [sys.executable, os.path.abspath(__file__), argv[0], "--endpoint", self.endpoint, *argv[1:]]
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


# ------------------------------------------------------------------ corpus


WORDS = ["invoice", "meeting", "server", "refund", "password", "offer", "urgent", "report", "order", "delivery"]


def generated_message(i):
    """The same message as generated() in shared/core/benches/pipeline.rs."""
    body = " ".join(WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(200))
    m = i % 17
    to = ["support", "billing", "sales", "info"][i % 4]
    s = WORDS[i % len(WORDS)]
    return (
        f"Return-Path: <user{i}@customer{m}.example>\r\nX-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\n"
        f"Authentication-Results: amazonses.com; spf=pass smtp.mailfrom=customer{m}.example; dkim=pass header.i=@customer{m}.example; dmarc=pass header.from=customer{m}.example;\r\n"
        f"From: User {i} <user{i}@customer{m}.example>\r\nTo: {to}@example.com\r\nSubject: {s} number {i}\r\n"
        f"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}@customer{m}.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def list_files(d):
    if not os.path.isdir(d):
        return []
    return sorted(os.path.join(d, n) for n in os.listdir(d) if os.path.isfile(os.path.join(d, n)))


def prepare_corpus(ctx):
    """The messages the criterion bench and the `mailroom run` timing both read."""
    sa = list_files(os.path.join(ctx.spam_root, "ham")) + list_files(os.path.join(ctx.spam_root, "spam"))
    if sa and not ctx.quick:
        return {
            "name": "spamassassin",
            "source": ctx.spam_root,
            "bench_env": {},
            "inputs": [os.path.join(ctx.spam_root, s) for s in ("ham", "spam") if os.path.isdir(os.path.join(ctx.spam_root, s))],
            "files": sa,
        }
    if sa:
        # Every k-th message, keeping the ham/spam mix.
        k = max(1, math.ceil(len(sa) / 500))
        picked = sa[::k]
        d = ctx.fresh_dir("corpus-quick")
        for n, src in enumerate(picked):
            shutil.copyfile(src, os.path.join(d, f"{n:05d}-{os.path.basename(src)}"))
        name = "spamassassin-quick"
        source = f"every {k}th message of {ctx.spam_root}"
    else:
        n_msgs = 500 if ctx.quick else ctx.args.messages
        d = ctx.fresh_dir("corpus")
        for i in range(n_msgs):
            with open(os.path.join(d, f"{i:05d}.eml"), "wb") as f:
                f.write(generated_message(i))
        name = "generated"
        source = f"{n_msgs} generated messages (no {ctx.spam_root})"
    return {
        "name": name,
        "source": source,
        "bench_env": {"MAILROOM_BENCH_CORPUS": d, "MAILROOM_BENCH_NAME": name},
        "inputs": [d],
        "files": list_files(d),
    }


# ------------------------------------------------------------------ trained model and anchor

SPAM_WORDS = ["winner", "free", "prize", "casino", "viagra", "loan", "crypto", "bonus", "click", "offer"]


def generated_labelled(ctx):
    """ham/ and spam/ of generated messages, for training when ../shared/data/spam is absent."""
    root = ctx.fresh_dir("train-generated")
    for label, words in (("ham", WORDS), ("spam", SPAM_WORDS)):
        d = os.path.join(root, label)
        os.makedirs(d)
        for i in range(200):
            body = " ".join(words[(i * 7 + j * 13) % len(words)] for j in range(120))
            raw = (
                f"From: sender{i}@{label}{i % 9}.example\r\nTo: support@example.com\r\nSubject: {words[i % len(words)]} {i}\r\n"
                f"Message-ID: <{label}{i}@example>\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
            )
            with open(os.path.join(d, f"{i:04d}.eml"), "w") as f:
                f.write(raw)
    return root


def train_spam_model(ctx):
    """`mailroom train` on ham/ and spam/, and a copy of the example config naming the
    model: the config every throughput figure runs with. Returns (config path, training
    folder, seconds)."""
    src = ctx.spam_root if list_files(os.path.join(ctx.spam_root, "spam")) else generated_labelled(ctx)
    d = ctx.fresh_dir("model")
    model = os.path.join(d, "spam.mrm")
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(ctx.release, "mailroom"), "train", "--out", model, src], capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"mailroom train failed: {p.stderr.strip()[-2000:]}")
    seconds = time.monotonic() - t0
    text = open(ctx.config_path).read()
    line = '# spam_model = "models/spam.mrm"'
    if line not in text:
        raise RuntimeError(f"{ctx.config_path} has no `{line}` line to enable")
    config = os.path.join(d, "mailroom.toml")
    with open(config, "w") as f:
        f.write(text.replace(line, f"spam_model = {json.dumps(model)}"))
    return config, src, seconds


def one_core():
    """The command prefix that pins a process to one CPU (empty when taskset is missing)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", "0"] if taskset else []


def anchor_python(ctx):
    """The anchor's virtual environment (scikit-learn from PyPI), made once; None, with the
    reason, when it cannot be made."""
    venv = os.path.join(ctx.out, "anchor-venv")
    py = os.path.join(venv, "bin", "python")
    if os.path.isfile(py) and subprocess.run([py, "-c", "import sklearn"], capture_output=True).returncode == 0:
        return py, None
    shutil.rmtree(venv, ignore_errors=True)
    for cmd in ([sys.executable if sys.prefix == sys.base_prefix else "python3", "-m", "venv", venv], [py, "-m", "pip", "install", "-q", "scikit-learn"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            return None, f"`{' '.join(cmd)}` failed: {(p.stderr or p.stdout).strip()[-500:]}"
    return py, None


def timed_process(ctx, argv, label, env=None):
    """Runs argv to completion through the launcher; wall, CPU and peak RSS."""
    out_path, err_path = ctx.path("cli", f"{label}.out"), ctx.path("cli", f"{label}.err")
    p = Launched(argv, env or mail_env(), out_path, err_path, cwd=ctx.repo)
    r = p.wait(3600)
    if r is None:
        p.stop()
        raise RuntimeError(f"{label} did not finish within an hour")
    return {
        "wall_s": round(r["t_exit"] - p.t_spawn, 3),
        "cpu_s": round(r["cpu_s"], 3),
        "peak_rss_mib": ctx.rss_mib(r["maxrss_kib"]),
        "exit_code": r["exit_code"],
        "out": out_path,
        "err": err_path,
    }


def part_anchor(ctx, res, corpus, mailroom_wall):
    """The Python anchor over the same corpus on one core, beside `mailroom run --jobs 1`."""
    py, why = anchor_python(ctx)
    if py is None:
        res["anchor"] = {"skipped": why}
        say(f"anchor skipped: {why}")
        return
    src = ctx.spam_root if list_files(os.path.join(ctx.spam_root, "spam")) else os.path.join(ctx.out, "train-generated")
    model = ctx.path("model", "anchor.pkl")
    script = os.path.join(ctx.repo, "infra", "bench", "anchor.py")
    t0 = time.monotonic()
    p = subprocess.run([py, script, "train", model, src], capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"anchor training failed: {p.stderr.strip()[-2000:]}")
    train_s = time.monotonic() - t0
    r = timed_process(ctx, [*one_core(), py, script, "predict", model, *corpus["inputs"]], "anchor")
    if r["exit_code"] != 0:
        raise RuntimeError(f"the anchor exited {r['exit_code']}; see {r['err']}")
    n = sum(1 for line in open(r["out"]) if line.strip())
    a = {
        "what": "Python email (policy.default) + scikit-learn TF-IDF word 1-2-grams LinearSVC, parse + predict in batches of 128, one process on one core",
        "sklearn_python": py,
        "train_s": round(train_s, 2),
        "messages": n,
        **{k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mib")},
        "messages_per_s": round(n / r["wall_s"], 1),
        "mailroom_speedup": round(r["wall_s"] / mailroom_wall, 2) if mailroom_wall else None,
    }
    res["anchor"] = a
    say(
        f"anchor (Python + scikit-learn, one core): {n} messages in {a['wall_s']:.2f} s wall: "
        f"{a['messages_per_s']:.0f} msg/s, peak RSS {a['peak_rss_mib']} MiB; "
        f"mailroom run --jobs 1 is {a['mailroom_speedup']}x as fast"
    )


# ------------------------------------------------------------------ throughput

CORPUS_LINE = re.compile(
    r"corpus (\S+): (\d+) messages, (\d+) bytes, \d+ bytes on average; (\d+) parsed, (\d+) bytes"
)


def criterion_results(ctx, name, since):
    root = os.path.join(ctx.target, "criterion")
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in filenames:
            continue
        est_path = os.path.join(dirpath, "estimates.json")
        if not os.path.exists(est_path) or os.path.getmtime(est_path) < since:
            continue
        bm = json.load(open(os.path.join(dirpath, "benchmark.json")))
        if bm.get("group_id") not in (f"stage/{name}", f"pipeline/{name}"):
            continue
        est = json.load(open(est_path))
        out[bm["group_id"].split("/")[0] + "/" + bm["function_id"]] = (bm, est)
    return out


def part_throughput(ctx, res):
    corpus = prepare_corpus(ctx)
    files = corpus["files"]
    total_bytes = sum(os.path.getsize(f) for f in files)
    res["corpus"] = {"name": corpus["name"], "source": corpus["source"], "messages": len(files), "bytes": total_bytes}
    say(f"corpus {corpus['name']}: {len(files)} messages, {total_bytes / MB:.2f} MB ({corpus['source']})")
    config, trained_on, train_s = train_spam_model(ctx)
    res["model"] = {"config": os.path.relpath(config, ctx.repo), "trained_on": trained_on, "train_s": round(train_s, 2)}
    say(f"spam model: mailroom train on {trained_on} in {train_s:.1f} s; every throughput figure runs with it")

    # In process: criterion.
    cmd = ["cargo", "bench", "-p", "mailroom-core", "--bench", "pipeline", "--", "--noplot"]
    if ctx.quick:
        cmd += ["--warm-up-time", "1", "--measurement-time", "2"]
    env = dict(os.environ, **corpus["bench_env"], MAILROOM_BENCH_CONFIG=config)
    bench_log = ctx.path("criterion.log")
    log(f"running {' '.join(cmd)} (log {bench_log}); cargo may wait for the build lock")
    since = time.time() - 1
    t0 = time.monotonic()
    with open(bench_log, "w") as lf:
        p = subprocess.Popen(cmd, cwd=ctx.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in p.stdout:
                lf.write(line)
                if line.startswith("corpus ") or "time:" in line or line.startswith(("stage/", "pipeline/")):
                    print(f"  {line.rstrip()}", file=sys.stderr, flush=True)
            p.wait(timeout=3600)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"cargo bench failed ({p.returncode}); see {bench_log}")
    res["criterion_seconds"] = round(time.monotonic() - t0, 1)
    text = open(bench_log).read()
    m = CORPUS_LINE.search(text)
    if not m:
        raise RuntimeError(f"no corpus line in {bench_log}")
    name, n_msgs, n_bytes, n_parsed, parsed_bytes = m.group(1), *map(int, m.groups()[1:])
    res["corpus"].update({"bench_messages": n_msgs, "bench_bytes": n_bytes, "parsed": n_parsed, "parsed_bytes": parsed_bytes})
    found = criterion_results(ctx, name, since)
    if not found:
        raise RuntimeError(f"no fresh criterion results for {name} under {ctx.target}/criterion")
    crit = {}
    for key in ["stage/parse", "stage/filter", "stage/classify", "stage/route", "stage/respond", "pipeline/messages"]:
        if key not in found:
            continue
        bm, est = found[key]
        elements = bm["throughput"]["Elements"]
        basis = est.get("slope") or est["mean"]
        ns = basis["point_estimate"]
        per_msg_bytes = (n_bytes / max(n_msgs, 1)) if key in ("stage/parse", "pipeline/messages") else (parsed_bytes / max(n_parsed, 1))
        msgs_s = elements / (ns / 1e9)
        lo, hi = basis["confidence_interval"]["lower_bound"], basis["confidence_interval"]["upper_bound"]
        crit[key] = {
            "messages_per_iter": elements,
            "ns_per_iter": round(ns),
            "us_per_message": round(ns / elements / 1000, 3),
            "messages_per_s": round(msgs_s, 1),
            "mb_per_s": round(msgs_s * per_msg_bytes / MB, 2),
            "messages_per_s_ci95": [round(elements / (hi / 1e9), 1), round(elements / (lo / 1e9), 1)],
            "median_ns_per_iter": round(est["median"]["point_estimate"]),
            "estimate": "slope" if est.get("slope") else "mean",
        }
        c = crit[key]
        say(
            f"in-process {key}: {c['messages_per_s']:.0f} msg/s, {c['mb_per_s']:.2f} MB/s, "
            f"{c['us_per_message']:.1f} us/msg (95% CI {c['messages_per_s_ci95'][0]:.0f}-{c['messages_per_s_ci95'][1]:.0f} msg/s)"
        )
    res["criterion"] = crit

    # As a whole process: on one core, then on every core.
    cli = cli_run(ctx, corpus, config, jobs=1, pin=True)
    res["cli"] = cli
    cores = os.cpu_count() or 1
    if cores > 1:
        multi = cli_run(ctx, corpus, config, jobs=cores, pin=False)
        multi["speedup_over_one_core"] = round(cli["wall_s"] / multi["wall_s"], 2)
        res["cli_all_cores"] = multi
        say(f"mailroom run --jobs {cores} is {multi['speedup_over_one_core']}x its --jobs 1 speed")
    mx = cli["mix"]
    say(
        "corpus mix: verdicts " + ", ".join(f"{k} {v}" for k, v in sorted(mx["verdicts"].items()))
        + "; actions " + ", ".join(f"{k} {v}" for k, v in sorted(mx["actions"].items()))
        + "; auto-reply " + ", ".join(f"{k} {v}" for k, v in sorted(mx["auto_reply"].items()))
    )
    part_anchor(ctx, res, corpus, cli["wall_s"])


def cli_run(ctx, corpus, config, jobs, pin):
    """`mailroom run --format jsonl` over the corpus with fresh state and outbox."""
    mailroom = os.path.join(ctx.release, "mailroom")
    if not os.path.isfile(mailroom):
        raise RuntimeError(f"{mailroom} is missing (cargo build --release -p mailroom-cli)")
    state = ctx.fresh_dir("cli", "state")
    outbox = ctx.fresh_dir("cli", "outbox")
    args = ["run", "--jobs", str(jobs), "--config", config, "--format", "jsonl", "--state", state, "--outbox", outbox]
    prefix = one_core() if pin else []
    r = timed_process(ctx, [*prefix, mailroom, *args, *corpus["inputs"]], f"run-jobs{jobs}")
    rows = [json.loads(line) for line in open(r["out"]) if line.strip()]
    wall = r["wall_s"]
    cli = {
        "command": " ".join([*(["taskset -c 0"] if prefix else []), "mailroom", *args[:3], "--config", os.path.relpath(config, ctx.repo), "--format jsonl --state DIR --outbox DIR"]
                            + [os.path.relpath(i, ctx.repo) for i in corpus["inputs"]]),
        "jobs": jobs,
        "pinned_to_one_core": bool(prefix),
        "exit_code": r["exit_code"],
        "messages": len(rows),
        "errors": sum(1 for x in rows if x.get("error")),
        "bytes": sum(os.path.getsize(f) for f in corpus["files"]),
        "wall_s": wall,
        "cpu_s": r["cpu_s"],
        "messages_per_s": round(len(rows) / wall, 1),
        "cpu_messages_per_s": round(len(rows) / max(r["cpu_s"], 1e-9), 1),
        "peak_rss_mib": r["peak_rss_mib"],
        "mix": mix_of(rows),
    }
    cli["mb_per_s"] = round(cli["bytes"] / MB / wall, 2)
    if r["exit_code"] not in (0, 1):
        raise RuntimeError(f"mailroom run exited {r['exit_code']}; see {r['err']}")
    say(
        f"process mailroom run --jobs {jobs}{' (one core)' if prefix else ''}: {cli['messages']} messages in {wall:.2f} s wall, "
        f"{cli['cpu_s']:.2f} s CPU: {cli['messages_per_s']:.0f} msg/s, {cli['mb_per_s']:.2f} MB/s, peak RSS {cli['peak_rss_mib']} MiB"
        f" (exit {cli['exit_code']}, {cli['errors']} rows with an error)"
    )
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(outbox, ignore_errors=True)
    return cli


def mix_of(rows):
    """What the messages of a run did, as the cost model counts requests."""
    verdicts, actions, replies = {}, {}, {}
    forward_sends = 0
    for x in rows:
        v = x.get("verdict") or "none"
        verdicts[v] = verdicts.get(v, 0) + 1
        for r in x.get("routes") or []:
            kind, _, arg = r.partition(":")
            actions[kind] = actions.get(kind, 0) + 1
            if kind == "forward":
                n = len([a for a in re.split(r"[ ,]+", arg) if a])
                forward_sends += max(1, math.ceil(n / 50))
        ar = x.get("auto_reply") or {}
        status = ar.get("status", "none")
        if status == "suppressed" and "rate limited" in (ar.get("reason") or ""):
            status = "rate_limited"
        replies[status] = replies.get(status, 0) + 1
    return {"messages": len(rows), "verdicts": verdicts, "actions": actions, "forward_sends": forward_sends, "auto_reply": replies}


# ------------------------------------------------------------------ Lambda Runtime API


class Invocations:
    """One function process's view of the Runtime API: its events and what it reported."""

    def __init__(self, events, function_arn):
        self.events = [(str(uuid.uuid4()), e) for e in events]
        self.arn = function_arn
        self.lock = threading.Lock()
        self.handed = 0
        self.gets = []  # arrival times of GET /next
        self.responses = []  # (time, request id, body)
        self.errors = []  # (time, kind, body)
        self.closed = threading.Event()
        self.done = threading.Event()

    def _check_done(self):
        if len(self.responses) + len(self.errors) >= len(self.events) or any(k == "init" for _, k, _ in self.errors):
            self.done.set()


class RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    PREFIX = "/2018-06-01/runtime/"

    def log_message(self, *args):
        pass

    def _send(self, code, body=b'{"status":"OK"}', headers=()):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        inv = self.server.current
        t = time.monotonic()
        if inv is None or self.path != self.PREFIX + "invocation/next":
            self._send(404, b'{"errorMessage":"unknown path"}')
            return
        with inv.lock:
            inv.gets.append(t)
            ev = inv.events[inv.handed] if inv.handed < len(inv.events) else None
            if ev is not None:
                inv.handed += 1
        if ev is None:
            # No more work: hold the long poll, as Lambda does, until this process is stopped.
            inv.closed.wait(timeout=900)
            self.close_connection = True
            return
        request_id, body = ev
        deadline = int(time.time() * 1000) + 1000 * self.server.timeout_seconds
        self._send(
            200,
            body.encode(),
            [
                ("Lambda-Runtime-Aws-Request-Id", request_id),
                ("Lambda-Runtime-Deadline-Ms", str(deadline)),
                ("Lambda-Runtime-Invoked-Function-Arn", inv.arn),
                ("Lambda-Runtime-Trace-Id", "Root=1-6745a3c0-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0"),
            ],
        )

    def do_POST(self):
        inv = self.server.current
        body = self._body()
        t = time.monotonic()
        parts = self.path[len(self.PREFIX):].split("/") if self.path.startswith(self.PREFIX) else []
        if inv is None:
            self._send(404, b'{"errorMessage":"no invocation"}')
            return
        with inv.lock:
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
                inv.responses.append((t, parts[1], body.decode(errors="replace")))
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] == "error":
                inv.errors.append((t, "invocation", body.decode(errors="replace")))
            elif parts == ["init", "error"]:
                inv.errors.append((t, "init", body.decode(errors="replace")))
            else:
                self._send(404, b'{"errorMessage":"unknown path"}')
                return
            inv._check_done()
        self._send(202)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A stopped function process resets its connections; that is expected.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RuntimeApi:
    def __init__(self, timeout_seconds):
        self.server = QuietServer(("127.0.0.1", 0), RuntimeHandler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.current = None
        self.server.timeout_seconds = timeout_seconds
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def begin(self, events, arn):
        inv = Invocations(events, arn)
        self.server.current = inv
        return inv

    def end(self, inv):
        inv.closed.set()
        if self.server.current is inv:
            self.server.current = None

    def close(self):
        if self.server.current is not None:
            self.end(self.server.current)
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ the stack on moto


def sqs_event(body, queue_arn):
    now_ms = str(int(time.time() * 1000))
    return json.dumps(
        {
            "Records": [
                {
                    "messageId": str(uuid.uuid4()),
                    "receiptHandle": "bench-" + uuid.uuid4().hex,
                    "body": body,
                    "attributes": {
                        "ApproximateReceiveCount": "1",
                        "SentTimestamp": now_ms,
                        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                        "ApproximateFirstReceiveTimestamp": now_ms,
                    },
                    "messageAttributes": {},
                    "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue_arn,
                    "awsRegion": REGION,
                }
            ]
        }
    )


def ses_notification(bucket, key, path):
    """The receipt notification SES publishes once its S3 action stored the message (as the
    inbound queue receives it, with raw message delivery): the envelope recipients are the
    message's To and Cc addresses, the verdicts all PASS."""
    import email
    import email.utils

    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f)
    recipients = [a for _, a in email.utils.getaddresses(msg.get_all("To", []) + msg.get_all("Cc", [])) if a]
    source = email.utils.parseaddr(msg.get("Return-Path", "") or msg.get("From", ""))[1]
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    status = {"status": "PASS"}
    return json.dumps(
        {
            "notificationType": "Received",
            "mail": {"timestamp": now, "source": source, "messageId": key.rsplit("/", 1)[-1], "destination": recipients},
            "receipt": {
                "timestamp": now,
                "recipients": recipients,
                "spamVerdict": status,
                "virusVerdict": status,
                "spfVerdict": status,
                "dkimVerdict": status,
                "dmarcVerdict": status,
                "action": {"type": "S3", "bucketName": bucket, "objectKey": key},
            },
        }
    )


def ensure_stack(ctx):
    if ctx.stack is None:
        if not ctx.endpoint:
            raise RuntimeError("no AWS emulator endpoint (run.sh starts moto for coldstart and memory)")
        ctx.stack = ctx.aws("aws-setup", "--stack", STACK, "--config", ctx.config_path, "--resources", os.path.join(ctx.repo, "infra", "resources.json"))
        log(f"stack {STACK} on {ctx.endpoint}: bucket {ctx.stack['bucket']}, table {ctx.stack['table']}")
    return ctx.stack


def function_env(ctx, stage, api):
    r = ctx.resources
    st = ctx.stack
    spec = next(f for f in r["functions"] if f["key"] == stage)
    values = {
        r["env"]["bucket"]: st["bucket"],
        r["env"]["table"]: st["table"],
        r["env"]["config_key"]: r["bucket"]["config_key"],
        r["env"]["from_address"]: st["from_address"],
        r["env"]["deliver_queue_prefix"]: STACK + r["deliver_queue_name_prefix"],
        r["env"]["retention_days"]: "30",
        r["env"]["raw_retention_days"]: "30",
        r["env"]["log"]: "info",
        # As the template's TlsRoots; MAILROOM_TLS_ROOTS=native measures the system store.
        r["env"]["tls_roots"]: os.environ.get("MAILROOM_TLS_ROOTS", "amazon"),
    }
    if spec.get("next_queue"):
        values[r["env"]["next_queue_url"]] = st["queues"][spec["next_queue"]]["url"]
    env = {name: values[name] for name in spec["env"]}
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": api.addr,
            "AWS_LAMBDA_FUNCTION_NAME": STACK + spec["name_suffix"],
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(r["function_settings"]["memory_mb"]),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_ENDPOINT_URL": ctx.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def function_binary(ctx, stage):
    """A copy of the release binary, so a parallel build cannot swap it mid-run."""
    src = os.path.join(ctx.release, f"mailroom-{stage}")
    if not os.path.isfile(src):
        raise RuntimeError(f"{src} is missing (cargo build --release -p mailroom-{stage})")
    dst = ctx.path("bin", f"mailroom-{stage}")
    if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src) or os.path.getsize(dst) != os.path.getsize(src):
        shutil.copy2(src, dst)
    return dst


def invoke(ctx, api, stage, event_bodies, label, timeout):
    """Starts a function process, serves it these SQS events one by one, stops it after the
    last response. Times are ms from process start (launcher's fork)."""
    st = ctx.stack
    spec = next(f for f in ctx.resources["functions"] if f["key"] == stage)
    arn = f"arn:aws:lambda:{REGION}:{st['account']}:function:{STACK}{spec['name_suffix']}"
    queue_arn = st["queues"][spec["source_queue"]]["arn"]
    inv = api.begin([sqs_event(b, queue_arn) for b in event_bodies], arn)
    logp = ctx.path("logs", f"{label}.log")
    proc, exited = None, False
    try:
        proc = Launched([function_binary(ctx, stage)], function_env(ctx, stage, api), logp, logp)
        deadline = time.monotonic() + timeout
        while not inv.done.wait(0.02):
            if not proc.running() or time.monotonic() > deadline:
                break
        exited = not proc.running()
        hwm = vmhwm_kib(proc.pid)
        r = proc.stop()
    finally:
        if proc is not None and proc.result is None:
            proc.stop()
        api.end(inv)
    t0 = proc.t_spawn
    ms = lambda t: None if t is None else round((t - t0) * 1000, 3)
    out = {
        "label": label,
        "events": len(event_bodies),
        "responses": len(inv.responses),
        "errors": [f"{k}: {b[:300]}" for _, k, b in inv.errors],
        "init_ms": ms(inv.gets[0]) if inv.gets else None,
        "peak_rss_mib": ctx.rss_mib(r["maxrss_kib"]) if r else None,
        "vmhwm_mib": ctx.rss_mib(hwm),
        "cpu_s": round(r["cpu_s"], 3) if r else None,
        "log_bytes": os.path.getsize(logp),
        "log": os.path.relpath(logp, ctx.repo),
    }
    # Per event: GET /next that received it -> its response.
    spans = []
    for i, (t_resp, _, body) in enumerate(inv.responses):
        t_get = inv.gets[i] if i < len(inv.gets) else None
        try:
            failures = json.loads(body).get("batchItemFailures") or []
        except ValueError:
            failures = ["unreadable response"]
        if failures:
            out["errors"].append(f"event {i}: batchItemFailures {failures}")
        spans.append({"response_ms": ms(t_resp), "invoke_ms": None if t_get is None else round((t_resp - t_get) * 1000, 3)})
    out["spans"] = spans
    if len(inv.responses) < len(event_bodies):
        out["errors"].append(f"{len(inv.responses)} of {len(event_bodies)} responses (process {'exited with ' + str(r['exit_code']) if exited and r else 'stopped after ' + str(timeout) + ' s'}; log {out['log']})")
    out["ok"] = not out["errors"]
    if not out["ok"]:
        tail = open(logp, errors="replace").read()[-1500:]
        log(f"{label} failed: {out['errors']}; log tail:\n{tail}")
    return out


def support_messages(ctx, n):
    """n variants of examples/mail/01-support-request.eml (support@: deliver + auto-reply),
    each from its own sender so no auto-reply is rate limited."""
    base = open(os.path.join(ctx.repo, "examples", "mail", "01-support-request.eml"), "rb").read()
    d = ctx.fresh_dir("coldstart", "mail")
    paths = []
    for i in range(n):
        m = base.replace(b"ann@customer.example", f"ann.{i}@customer.example".encode())
        m = m.replace(b"<login-1@customer.example>", f"<login-bench-{i}-{uuid.uuid4().hex[:8]}@customer.example>".encode())
        p = os.path.join(d, f"msg-{i:03d}.eml")
        open(p, "wb").write(m)
        paths.append(p)
    return paths


def upload_raw(ctx, paths, label):
    """Puts the files under raw/ with SES-like ids; returns their receipt notifications."""
    raw = ctx.resources["bucket"]["prefixes"]["raw"]
    keys = [f"{raw}{label}{i:03d}{uuid.uuid4().hex[:12]}" for i in range(len(paths))]
    ctx.aws("aws-put", "--bucket", ctx.stack["bucket"], *[f"{k}={p}" for k, p in zip(keys, paths)])
    return [ses_notification(ctx.stack["bucket"], k, p) for k, p in zip(keys, paths)]


def drain(ctx, queue_key, count, timeout=60):
    url = ctx.stack["queues"][queue_key]["url"]
    return ctx.aws("aws-drain", "--queue-url", url, "--count", str(count), "--timeout", str(timeout))


def part_coldstart(ctx, res):
    ensure_stack(ctx)
    runs = 3 if ctx.quick else ctx.args.runs
    api = RuntimeApi(ctx.resources["function_settings"]["timeout_seconds"])
    res.update({
        "runs": runs,
        "message": "examples/mail/01-support-request.eml (support@: tag, deliver to a queue, auto-reply), one sender per message",
        "method": "each run starts the release binary, serves it 2 single-record SQS events (cold, then warm) and stops it; "
        "init = process start -> first GET /next (includes the config GET from moto); first_response = process start -> "
        "POST of the first response; cold/warm invoke = GET /next of that event -> its response (S3, DynamoDB, SQS and SES on moto)",
        "functions": {},
    })
    try:
        bodies = upload_raw(ctx, support_messages(ctx, 2 * runs), "cold")
        for stage in STAGES:
            samples = []
            for i in range(runs):
                evs = [bodies[(2 * i) % len(bodies)], bodies[(2 * i + 1) % len(bodies)]]
                samples.append(invoke(ctx, api, stage, evs, f"coldstart-{stage}-{i}", timeout=60))
            f = {
                "init_ms": summary([s["init_ms"] for s in samples]),
                "first_response_ms": summary([s["spans"][0]["response_ms"] if s["spans"] else None for s in samples]),
                "cold_invoke_ms": summary([s["spans"][0]["invoke_ms"] if s["spans"] else None for s in samples]),
                "warm_invoke_ms": summary([s["spans"][1]["invoke_ms"] if len(s["spans"]) > 1 else None for s in samples]),
                "peak_rss_mib": summary([s["peak_rss_mib"] for s in samples]),
                "vmhwm_mib": summary([s["vmhwm_mib"] for s in samples]),
                "log_bytes_per_event": round(statistics.mean(s["log_bytes"] for s in samples) / 2),
                "failed_runs": sum(1 for s in samples if not s["ok"]),
                "samples": samples,
            }
            res["functions"][stage] = f
            say(
                f"coldstart {stage}: start->GET /next median {f['init_ms'].get('median')} ms p90 {f['init_ms'].get('p90')} ms; "
                f"start->first response median {f['first_response_ms'].get('median')} ms p90 {f['first_response_ms'].get('p90')} ms; "
                f"warm invoke median {f['warm_invoke_ms'].get('median')} ms; peak RSS median {f['peak_rss_mib'].get('median')} MiB "
                f"(n={runs}, {f['failed_runs']} failed)"
            )
            nxt = next(x for x in ctx.resources["functions"] if x["key"] == stage).get("next_queue")
            if nxt:
                got = drain(ctx, nxt, 2 * runs)
                if not got:
                    raise RuntimeError(f"{stage} published nothing to the {nxt} queue; see target/bench/logs")
                if len(got) < 2 * runs:
                    log(f"{stage} published {len(got)} of {2 * runs} envelopes; reusing them")
                bodies = got
    finally:
        api.close()


# ------------------------------------------------------------------ large messages


def b64_lines(src, out):
    """Base64 of src (a file), 76 characters a line, CRLF, streamed."""
    while True:
        chunk = src.read(57 * 1024)
        if not chunk:
            return
        enc = base64.b64encode(chunk)
        out.write(b"\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + b"\r\n")


def encoded_size(n):
    chars = 4 * math.ceil(n / 3)
    return chars + 2 * math.ceil(chars / 76)


def write_random(f, rnd, n):
    while n > 0:
        k = min(n, 1 << 20)
        f.write(rnd.randbytes(k))
        n -= k


def write_large(path, size_mb):
    """A message of at most size_mb × 10^6 bytes in the shape SES stores: SES headers, a text
    body, a PDF-like and a (real, stored) ZIP attachment of random bytes, base64."""
    target = size_mb * MB
    rnd = random.Random(size_mb)
    boundary = f"----=_Part_{size_mb}_bench"
    head = (
        "Return-Path: <ap@bigcustomer.example>\r\n"
        "Received: from mail.bigcustomer.example (mail.bigcustomer.example [198.51.100.7])\r\n"
        " by inbound-smtp.us-east-1.amazonaws.com with SMTP id 0bench{n}large\r\n"
        " for billing@example.com;\r\n Mon, 02 Nov 2026 10:00:00 +0000 (UTC)\r\n"
        "X-SES-Spam-Verdict: PASS\r\nX-SES-Virus-Verdict: PASS\r\n"
        "Received-SPF: pass (spfCheck: domain of bigcustomer.example designates 198.51.100.7 as permitted sender) client-ip=198.51.100.7; envelope-from=ap@bigcustomer.example; helo=mail.bigcustomer.example;\r\n"
        "Authentication-Results: amazonses.com;\r\n spf=pass (spfCheck: domain of bigcustomer.example designates 198.51.100.7 as permitted sender) smtp.mailfrom=ap@bigcustomer.example;\r\n"
        " dkim=pass header.i=@bigcustomer.example;\r\n dmarc=pass header.from=bigcustomer.example;\r\n"
        "X-SES-RECEIPT: AEFBQUFBQUFBQUFFbmNoTWFyaw==\r\n"
        "X-SES-DKIM-SIGNATURE: a=rsa-sha256; q=dns/txt; b=YmVuY2g=; c=relaxed/simple; s=bench; d=amazonses.com; t=1793613600; v=1; bh=YmVuY2g=; h=From:To:Subject;\r\n"
        "From: Big Customer Accounts Payable <ap@bigcustomer.example>\r\nTo: billing@example.com\r\n"
        "Subject: Invoice 2026-0042 and statement ({n} MB)\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <large-{n}@bigcustomer.example>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    ).replace("{n}", str(size_mb)).encode()
    text = ("Hello,\r\n\r\nplease find attached invoice 2026-0042 and the quarterly statement.\r\n" * 20 + "\r\nRegards,\r\nAccounts Payable\r\n").encode()
    pdf_head = f'--{boundary}\r\nContent-Type: application/pdf; name="invoice-2026-0042.pdf"\r\nContent-Disposition: attachment; filename="invoice-2026-0042.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'.encode()
    zip_head = f'--{boundary}\r\nContent-Type: application/zip; name="statement.zip"\r\nContent-Disposition: attachment; filename="statement.zip"\r\nContent-Transfer-Encoding: base64\r\n\r\n'.encode()
    tail = f"--{boundary}--\r\n".encode()
    budget = target - len(head) - len(text) - len(pdf_head) - len(zip_head) - len(tail) - 4096
    pdf_n = (int(budget * 0.6) // 78) * 57
    zip_n = ((budget - encoded_size(pdf_n)) // 78) * 57
    tmp = path + ".parts"
    os.makedirs(tmp, exist_ok=True)
    pdf_path, zip_path = os.path.join(tmp, "a.pdf"), os.path.join(tmp, "b.zip")
    with open(pdf_path, "wb") as f:
        prefix, suffix = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", b"\n%%EOF\n"
        f.write(prefix)
        write_random(f, rnd, pdf_n - len(prefix) - len(suffix))
        f.write(suffix)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("README.txt", "Quarterly statement data.\n")
        with z.open("statement-data.bin", "w", force_zip64=False) as f:
            write_random(f, rnd, max(0, zip_n - 400))
    with open(path, "wb") as out:
        out.write(head + text)
        for h, p in ((pdf_head, pdf_path), (zip_head, zip_path)):
            out.write(h)
            with open(p, "rb") as src:
                b64_lines(src, out)
        out.write(tail)
    shutil.rmtree(tmp)
    size = os.path.getsize(path)
    if size > target:
        raise RuntimeError(f"{path} is {size} bytes, over {target}")
    return size


# The example config's billing route, and the same with a second forward: the memory part
# measures a 40 MB message forwarded twice (and stored), the route stage's worst case.
BILLING_ACTIONS = 'actions = [{ forward = ["finance@corp.example"] }, { store = "billing/" }]'
TWO_FORWARDS = 'actions = [{ forward = ["finance@corp.example"] }, { forward = ["audit@corp.example"] }, { store = "billing/" }]'


def two_forwards_config(ctx, d):
    text = open(ctx.config_path).read()
    if BILLING_ACTIONS not in text:
        raise RuntimeError(f"{ctx.config_path} has no `{BILLING_ACTIONS}` line to add a second forward to")
    path = os.path.join(d, "mailroom-two-forwards.toml")
    with open(path, "w") as f:
        f.write(text.replace(BILLING_ACTIONS, TWO_FORWARDS))
    return path


def part_memory(ctx, res):
    d = ctx.fresh_dir("large")
    config = two_forwards_config(ctx, d)
    files = {}
    for n in LARGE_SIZES_MB:
        p = os.path.join(d, f"large-{n}mb.eml")
        files[n] = (p, write_large(p, n))
    res.update({
        "message": "SES-shaped: headers, text body, base64 PDF-like and ZIP attachments of random bytes, to billing@ (the example config with billing's route made two forwards + store, then the auto-reply); N MB = at most N×10^6 bytes (the example config's 40MB limit is 40×10^6)",
        "lambda_memory_mib": LAMBDA_MEMORY_MIB,
        "cli": {},
        "functions": {},
    })
    mailroom = os.path.join(ctx.release, "mailroom")
    if not os.path.isfile(mailroom):
        raise RuntimeError(f"{mailroom} is missing (cargo build --release -p mailroom-cli)")
    for n in LARGE_SIZES_MB:
        path, size = files[n]
        state, outbox = ctx.fresh_dir("large", f"state-{n}"), ctx.fresh_dir("large", f"outbox-{n}")
        out_path, err_path = ctx.path("large", f"run-{n}.jsonl"), ctx.path("large", f"run-{n}.err")
        p = Launched([mailroom, "run", "--config", config, "--format", "jsonl", "--state", state, "--outbox", outbox, path], mail_env(), out_path, err_path, cwd=ctx.repo)
        r = p.wait(600)
        if r is None:
            p.stop()
            raise RuntimeError(f"mailroom run on {path} did not finish in 10 minutes")
        rows = [json.loads(x) for x in open(out_path) if x.strip()]
        row = rows[0] if rows else {}
        e = {
            "size_mb": n,
            "bytes": size,
            "peak_rss_mib": ctx.rss_mib(r["maxrss_kib"]),
            "rss_per_message_byte": round(r["maxrss_kib"] * 1024 / size, 2),
            "wall_s": round(r["t_exit"] - p.t_spawn, 3),
            "cpu_s": round(r["cpu_s"], 3),
            "exit_code": r["exit_code"],
            "verdict": row.get("verdict"),
            "routes": row.get("routes"),
            "error": row.get("error"),
        }
        res["cli"][f"{n}MB"] = e
        say(
            f"large {n} MB, mailroom run (all four stages): peak RSS {e['peak_rss_mib']} MiB "
            f"({e['rss_per_message_byte']}x the message), wall {e['wall_s']} s, CPU {e['cpu_s']} s; "
            f"verdict {e['verdict']}, routes {', '.join(e['routes'] or [])}"
        )
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(outbox, ignore_errors=True)

    ensure_stack(ctx)
    big = max(LARGE_SIZES_MB)
    api = RuntimeApi(ctx.resources["function_settings"]["timeout_seconds"])
    config_key = ctx.resources["bucket"]["config_key"]
    ctx.aws("aws-put", "--bucket", ctx.stack["bucket"], f"{config_key}={config}")
    try:
        bodies = upload_raw(ctx, [files[big][0]], f"large{big}mb")
        for stage in STAGES:
            s = invoke(ctx, api, stage, bodies[:1], f"large-{big}mb-{stage}", timeout=300)
            over = None
            if s["peak_rss_mib"] is not None:
                over = round(s["peak_rss_mib"] - LAMBDA_MEMORY_MIB, 1)
            s["size_mb"] = big
            s["over_128mib_by_mib"] = over if over is not None and over > 0 else 0
            res["functions"][stage] = s
            span = s["spans"][0] if s["spans"] else {}
            flag = f"OVER {LAMBDA_MEMORY_MIB} MiB by {over} MiB" if over and over > 0 else f"within {LAMBDA_MEMORY_MIB} MiB"
            say(
                f"large {big} MB, {stage} function: peak RSS {s['peak_rss_mib']} MiB ({flag}); "
                f"start->response {span.get('response_ms')} ms, invoke {span.get('invoke_ms')} ms"
                + ("" if s["ok"] else f"; FAILED: {'; '.join(s['errors'])}")
            )
            nxt = next(x for x in ctx.resources["functions"] if x["key"] == stage).get("next_queue")
            if nxt:
                bodies = drain(ctx, nxt, 1, timeout=60)
                if not bodies:
                    log(f"{stage} published nothing for the {big} MB message; the later stages are skipped")
                    break
    finally:
        api.close()
        ctx.aws("aws-put", "--bucket", ctx.stack["bucket"], f"{config_key}={ctx.config_path}")


# ------------------------------------------------------------------ size


def part_size(ctx, res):
    res.update({"arch": platform.machine(), "note": "host build (target/release); sam build cross-compiles for arm64, whose size differs", "functions": {}})
    for stage in STAGES:
        b = os.path.join(ctx.release, f"mailroom-{stage}")
        if not os.path.isfile(b):
            raise RuntimeError(f"{b} is missing (cargo build --release -p mailroom-{stage})")
        z = ctx.path("zip", f"mailroom-{stage}.zip")
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo("bootstrap", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(b, "rb") as f:
                zf.writestr(info, f.read())
        f = {"binary_bytes": os.path.getsize(b), "zip_bytes": os.path.getsize(z)}
        f["binary_mib"] = round(f["binary_bytes"] / MIB, 2)
        f["zip_mib"] = round(f["zip_bytes"] / MIB, 2)
        res["functions"][stage] = f
        say(f"size {stage}: binary {f['binary_mib']} MiB ({f['binary_bytes']} bytes), zip with bootstrap {f['zip_mib']} MiB ({f['zip_bytes']} bytes)")


# ------------------------------------------------------------------ latency


def part_latency(ctx, res):
    """tests/benches/latency.rs: one message alone, notification to auto-reply, on moto."""
    if not ctx.endpoint:
        raise RuntimeError("the latency part needs the emulator (run.sh starts it)")
    env = dict(os.environ, MAILROOM_TEST_ENDPOINT=ctx.endpoint, MAILROOM_REQUIRE_EMULATOR="1")
    out = subprocess.run(
        ["cargo", "bench", "-p", "mailroom-tests", "--bench", "latency"],
        cwd=ctx.repo, env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=True,
    ).stdout
    doc = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    res.update(doc)
    res["note"] = "four stage handlers against moto, each queue read at once (batching window 0); AWS adds the event source mapping's pickup per hop (docs/cost-model.md)"
    say(f"latency notification -> auto-reply (batching window 0, moto): median {doc['median_ms']} ms, p90 {doc['p90_ms']} ms over {doc['runs']} runs")


# ------------------------------------------------------------------ cost

PRICES = {
    "_as_of": "us-east-1 list prices as AWS published them in 2025; free tiers ignored; check the current prices before relying on them",
    "lambda_arm64_per_ms_128mb": 0.0000000017,  # $0.0000133334 per GB-s × 0.125 GB / 1000 (unchanged since arm64 launched, Sep 2021)
    "lambda_per_request": 0.20 / 1e6,
    "sqs_per_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk, after the first 1M/month
    "s3_put_per_request": 0.005 / 1000,  # S3 Standard PUT/COPY/POST/LIST
    "s3_get_per_request": 0.0004 / 1000,  # S3 Standard GET (and HEAD)
    "sns_per_publish": 0.50 / 1e6,  # per 64 KB chunk; delivery to SQS is free
    "dynamodb_per_wru": 0.625 / 1e6,  # on-demand write request unit, after the 50% cut of 1 Nov 2024
    "ses_receive_per_mail": 0.10 / 1000,
    "ses_receive_per_256kb_chunk": 0.09 / 1000,
    "ses_send_per_mail": 0.10 / 1000,
    "cloudwatch_logs_per_gb": 0.50,  # ingestion, standard class
}

ASSUMPTIONS = {
    "batch_sizes": [10, 1],
    "cpu_scale_128mb": round(1769 / 128, 2),
    "cold_start_fraction": 0.01,
    "platform_log_bytes_per_invocation": 350,
}


def latest_part(doc, name, need):
    """A part's figures, measured by this run or carried over from an earlier one."""
    part = doc.get(name) or {}
    if all(k in part for k in need):
        return part, f"the run of {part['carried_from']}" if "carried_from" in part else "this run"
    return None, None


def requests_per_message(mix, batch, avg_bytes):
    """AWS requests one message makes, from the code (see docs/cost-model.md)."""
    n = max(mix["messages"], 1)
    a = mix["actions"]
    r = mix["auto_reply"]
    forward_sends = mix.get("forward_sends", a.get("forward", 0)) / n
    deliver = a.get("deliver", 0) / n
    store = a.get("store", 0) / n
    quarantine = a.get("quarantine", 0) / n
    sent = r.get("sent", 0) / n
    limited = r.get("rate_limited", 0) / n
    hops = 4  # SNS receipt notification -> inbound, filter -> classify, classify -> route, route -> respond
    return {
        "lambda_invocations": 4 / batch,
        "sqs_requests": hops + deliver + 2 * 4 / batch,  # sends + ReceiveMessage and DeleteMessageBatch per batch per queue
        "s3_get": 4,  # every stage reads the raw mail
        "s3_put": 1 + store + quarantine,  # SES stores the raw mail, plus store/quarantine actions
        # + the summary (and its by-time and by-sender index copies, by-quarantine while
        # quarantined) and one item per recipient (one assumed)
        "dynamodb_wru": 8 + 2 * forward_sends + 2 * deliver + 3 * sent + limited + 4 + quarantine,
        "sns_publish": 1,  # SES's receipt notification
        "ses_send": forward_sends + sent,
        "ses_receive_chunks": max(1, math.ceil(avg_bytes / (256 * 1024))),
    }


def part_cost(ctx, res, doc):
    tp, tp_from = latest_part(doc, "throughput", ["criterion", "cli", "corpus"])
    cs, cs_from = latest_part(doc, "coldstart", ["functions"])
    if tp is None:
        raise RuntimeError("the cost part needs throughput figures (run --only throughput,cost, or a full run first)")
    crit = tp["criterion"]
    parse_us = crit["stage/parse"]["us_per_message"]
    compute_ms = {s: (parse_us + crit[f"stage/{s}"]["us_per_message"]) / 1000 for s in STAGES}
    scale = ASSUMPTIONS["cpu_scale_128mb"]
    overhead_ms, init_ms, log_bytes = {}, {}, {}
    for s in STAGES:
        f = (cs or {}).get("functions", {}).get(s, {})
        warm = f.get("warm_invoke_ms", {}).get("median")
        # The warm invoke of the bench message also spent its (host-speed) compute; what is left
        # is the I/O waits against the emulator, standing in for AWS API latency.
        overhead_ms[s] = max(0.0, warm - compute_ms[s]) if warm is not None else 30.0
        init_ms[s] = f.get("init_ms", {}).get("median") or 150.0
        log_bytes[s] = f.get("log_bytes_per_event") or 600
    avg_bytes = tp["corpus"]["bytes"] / max(tp["corpus"]["messages"], 1)
    per_msg_ms = {s: compute_ms[s] * scale + overhead_ms[s] for s in STAGES}
    res.update({
        "prices": PRICES,
        "assumptions": dict(
            ASSUMPTIONS,
            per_message_ms="(parse + stage) in-process us/msg x cpu_scale_128mb (128/1769 of a vCPU at 128 MB; Graviton core = host core) + warm invoke overhead measured against moto (stands in for AWS API latency)",
            init="median start->GET /next per function, billed on cold starts (custom runtime: init is billed)",
            logs="measured function log bytes per record + platform START/END/REPORT lines per invocation",
            dynamodb="every item <= 1 KB = 1 WRU; conditional writes that fail are billed too",
            figures_from={"throughput": tp_from, "coldstart": cs_from or "defaults (no cold-start figures): 30 ms I/O per record, 150 ms init, 600 log bytes per record"},
        ),
        "per_message_ms": {s: round(v, 3) for s, v in per_msg_ms.items()},
        "compute_ms_host": {s: round(v, 4) for s, v in compute_ms.items()},
        "io_overhead_ms": {s: round(v, 3) for s, v in overhead_ms.items()},
        "init_ms": init_ms,
        "scenarios": {},
    })
    say(
        "cost inputs: billed ms per message at 128 MB = "
        + ", ".join(f"{s} {per_msg_ms[s]:.1f}" for s in STAGES)
        + f" (compute x{scale} + I/O overhead from {cs_from or 'defaults'}); prices: {PRICES['_as_of']}"
    )
    support_mix = {"messages": 1, "actions": {"tag": 1, "deliver": 1}, "forward_sends": 0, "auto_reply": {"sent": 1}}
    mixes = {"corpus_mix": tp["cli"]["mix"], "support_request": support_mix}
    for mix_name, mix in mixes.items():
        for batch in ASSUMPTIONS["batch_sizes"]:
            rq = requests_per_message(mix, batch, avg_bytes)
            M = 1e6
            P = PRICES
            lambda_ms = sum(per_msg_ms.values()) + ASSUMPTIONS["cold_start_fraction"] * sum(init_ms[s] for s in STAGES) / batch
            logs_gb = (sum(log_bytes.values()) + ASSUMPTIONS["platform_log_bytes_per_invocation"] * 4 / batch) * M / 1e9
            lines = {
                "lambda_requests": rq["lambda_invocations"] * M * P["lambda_per_request"],
                "lambda_duration": lambda_ms * M * P["lambda_arm64_per_ms_128mb"],
                "sqs": rq["sqs_requests"] * M * P["sqs_per_request"],
                "sns": rq["sns_publish"] * M * P["sns_per_publish"],
                "s3_requests": rq["s3_put"] * M * P["s3_put_per_request"] + rq["s3_get"] * M * P["s3_get_per_request"],
                "dynamodb_writes": rq["dynamodb_wru"] * M * P["dynamodb_per_wru"],
                "ses_sending": rq["ses_send"] * M * P["ses_send_per_mail"],
                "cloudwatch_logs": logs_gb * P["cloudwatch_logs_per_gb"],
            }
            ses_recv = M * (P["ses_receive_per_mail"] + rq["ses_receive_chunks"] * P["ses_receive_per_256kb_chunk"])
            excl = sum(lines.values())
            key = f"{mix_name}_batch{batch}"
            res["scenarios"][key] = {
                "requests_per_message": {k: round(v, 4) for k, v in rq.items()},
                "lambda_ms_per_message": round(lambda_ms, 3),
                "usd_per_million": {k: round(v, 2) for k, v in lines.items()},
                "ses_receiving_usd_per_million": round(ses_recv, 2),
                "total_usd_per_million_excl_ses_receiving": round(excl, 2),
                "total_usd_per_million_incl_ses_receiving": round(excl + ses_recv, 2),
            }
            sc = res["scenarios"][key]
            say(
                f"cost {mix_name}, batch {batch}: ${sc['total_usd_per_million_excl_ses_receiving']:.2f} per 1M messages excluding SES receiving, "
                f"${sc['total_usd_per_million_incl_ses_receiving']:.2f} including it ("
                + ", ".join(f"{k} ${v:.2f}" for k, v in sc["usd_per_million"].items())
                + f", SES receiving ${sc['ses_receiving_usd_per_million']:.2f})"
            )


# ------------------------------------------------------------------ compare


def flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("samples", "prices", "assumptions", "machine", "git", "carried_from", "carried_commit") or k.startswith("_"):
                continue
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix[:-1]] = d
    return out


# Figures --compare leaves out: sample counts, spreads, raw criterion nanoseconds and the
# cost model's intermediate counts (its totals and line items are compared).
NOT_COMPARED = re.compile(
    r"(^seconds$|\.seconds$|\.n$|\.min$|\.max$|_ci95|ns_per_iter|messages_per_iter|requests_per_message|"
    r"\.mix\.|rss_per_message_byte|^rss_floor_mib$|\.exit_code$|\.log_bytes$|\.events$|\.responses$)"
)


def compare(old, new):
    a, b = flatten(old), flatten(new)
    rows = []
    for k in sorted(set(a) & set(b)):
        if NOT_COMPARED.search(k):
            continue
        x, y = a[k], b[k]
        if x == y:
            continue
        rel = None if x == 0 else (y - x) / abs(x) * 100
        rows.append({"key": k, "old": x, "new": y, "delta": round(y - x, 4), "percent": None if rel is None else round(rel, 1)})
    return rows


# ------------------------------------------------------------------ main


def git_info(repo):
    def run(*a):
        try:
            return subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def machine_info():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rustc = ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rustc": rustc,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def cmd_run(args):
    ctx = Ctx(args)
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"unknown part(s) {', '.join(bad)}; known: {', '.join(PARTS)}")
    latest = os.path.join(ctx.out, "latest.json")
    if os.path.exists(latest):
        try:
            ctx.previous = json.load(open(latest))
        except ValueError:
            ctx.previous = None
    started = time.time()
    doc = {
        "schema": 1,
        "tool": "infra/bench/run.sh",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "quick": ctx.quick,
        "parts": parts,
        "git": git_info(ctx.repo),
        "machine": machine_info(),
    }
    ctx.floor_kib = rss_floor_kib()
    doc["rss_floor_mib"] = ctx.rss_mib(ctx.floor_kib)
    doc["notes"] = [
        "MB = 10^6 bytes; MiB = 2^20 bytes (RSS). Peak RSS is wait4's ru_maxrss of the child, started through a launcher "
        f"whose own peak ({doc['rss_floor_mib']} MiB) is a floor: a figure at the floor means at most that.",
        "Figures depend on machine load: load averages at start and end are under machine. Compare runs on the same machine and load.",
        "Cold-start and function figures run against moto on loopback: its latency stands in for AWS API latency, and the host CPU for a Lambda one.",
    ]
    la = doc["machine"]["loadavg_start"]
    say(f"machine: {doc['machine']['cpus']} CPUs ({doc['machine']['cpu_model']}), load average {la[0]} {la[1]} {la[2]} at start; {'quick' if ctx.quick else 'full'} run of {', '.join(parts)}")
    # Parts not run keep their last figures (marked), so latest.json always holds the
    # newest figures of every part and the cost part can use them.
    for part in PARTS:
        prev = (ctx.previous or {}).get(part)
        if part not in parts and prev and "error" not in prev:
            doc[part] = dict(
                prev,
                carried_from=prev.get("carried_from") or ctx.previous.get("started_at"),
                carried_commit=prev.get("carried_commit") or (ctx.previous.get("git") or {}).get("commit"),
            )
    failed = []
    for part in PARTS:
        if part not in parts:
            continue
        t0 = time.monotonic()
        log(f"part {part}")
        doc[part] = {}
        try:
            if part == "cost":
                part_cost(ctx, doc[part], doc)
            else:
                globals()[f"part_{part}"](ctx, doc[part])
        except Exception as e:  # noqa: BLE001 - one part failing must not lose the others
            failed.append(part)
            # What the part measured before it failed stays in the document.
            doc[part]["error"] = f"{type(e).__name__}: {e}"
            say(f"{part}: FAILED: {e}")
        doc[part]["seconds"] = round(time.monotonic() - t0, 1)
    problems = []
    measured = lambda part: doc.get(part, {}) if part in parts else {}
    for stage, f in (measured("memory").get("functions") or {}).items():
        if f.get("over_128mib_by_mib"):
            problems.append(f"{stage} function peaks at {f['peak_rss_mib']} MiB on the {f['size_mb']} MB message: {f['over_128mib_by_mib']} MiB over the {LAMBDA_MEMORY_MIB} MiB Lambda size")
        elif not f.get("ok", True):
            problems.append(f"{stage} function failed on the large message: {'; '.join(f.get('errors', []))}")
    for stage, f in (measured("coldstart").get("functions") or {}).items():
        if f.get("failed_runs"):
            problems.append(f"{stage} function: {f['failed_runs']} cold-start run(s) failed (logs under target/bench/logs)")
    doc["problems"] = problems
    for p in problems:
        say(f"PROBLEM: {p}")
    doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc["seconds"] = round(time.time() - started, 1)
    le = doc["machine"]["loadavg_end"]
    say(f"machine: load average {le[0]} {le[1]} {le[2]} at end; {doc['seconds']} s")
    if args.compare:
        old = json.load(open(args.compare))
        rows = compare(old, doc)
        doc["compare"] = {"against": os.path.abspath(args.compare), "old_started_at": old.get("started_at"), "deltas": rows}
        say(f"compare with {args.compare} ({old.get('started_at')}): {len(rows)} figures changed")
        def corpus(d):
            c = (d.get("throughput") or {}).get("corpus")
            return c and f"{c.get('name')} ({c.get('messages')} messages)"

        for what, get in (("corpus", corpus), ("cold-start runs", lambda d: (d.get("coldstart") or {}).get("runs"))):
            a, b = get(old), get(doc)
            if a and b and a != b:
                say(f"  note: the {what} differ ({a}, then {b}): those deltas are not like for like")
        if old.get("quick") != doc.get("quick"):
            say(f"  note: comparing a {'quick' if old.get('quick') else 'full'} run with a {'quick' if doc.get('quick') else 'full'} one")
        for r in rows:
            pc = "" if r["percent"] is None else f" ({r['percent']:+.1f}%)"
            say(f"  {r['key']}: {r['old']} -> {r['new']}{pc}")
    if os.path.exists(latest):
        shutil.copyfile(latest, os.path.join(ctx.out, "previous.json"))
    text = json.dumps(doc, indent=2, sort_keys=False)
    with open(latest + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(latest + ".tmp", latest)
    print(text, flush=True)
    log(f"wrote {latest}")
    return 1 if failed else 0


# ------------------------------------------------------------------ AWS helpers (boto3)


def boto(endpoint, service):
    import boto3  # the repo's .venv (infra/setup-venv.sh)

    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION).client(
        service, endpoint_url=endpoint
    )


def cmd_aws_setup(args):
    import tomllib

    r = json.load(open(args.resources))
    qs = r["queue_settings"]
    stack = args.stack
    sqs = boto(args.endpoint, "sqs")
    account = boto(args.endpoint, "sts").get_caller_identity()["Account"]

    def queue(name, attrs):
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    queues = {}
    for q in r["queues"]:
        _, dlq_arn = queue(stack + q["dlq_name_suffix"], {"MessageRetentionPeriod": str(qs["dlq_retention_seconds"])})
        url, arn = queue(
            stack + q["name_suffix"],
            {
                "VisibilityTimeout": str(qs["visibility_timeout_seconds"]),
                "ReceiveMessageWaitTimeSeconds": str(qs["receive_wait_seconds"]),
                "MessageRetentionPeriod": str(qs["message_retention_seconds"]),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": qs["max_receive_count"]}),
            },
        )
        queues[q["key"]] = {"url": url, "arn": arn}
    config_text = open(args.config).read()
    config = tomllib.loads(config_text)
    deliver = set()
    for rule in config.get("route", []) + [{"actions": config.get("routing", {}).get("default_actions", [])}]:
        for a in rule.get("actions", []):
            if isinstance(a, dict) and "deliver" in a:
                deliver.add(a["deliver"])
    for name in sorted(deliver):
        queue(stack + r["deliver_queue_name_prefix"] + name, {})
    t = r["table"]
    table = stack + t["name_suffix"]
    ddb = boto(args.endpoint, "dynamodb")
    index_attrs = sorted({a for i in t["indexes"] for a in (i["partition_key"], i["sort_key"])})
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": t["partition_key"]["name"], "AttributeType": t["partition_key"]["type"]},
            {"AttributeName": t["sort_key"]["name"], "AttributeType": t["sort_key"]["type"]},
        ]
        + [{"AttributeName": a, "AttributeType": "S"} for a in index_attrs],
        KeySchema=[
            {"AttributeName": t["partition_key"]["name"], "KeyType": "HASH"},
            {"AttributeName": t["sort_key"]["name"], "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": i["name"],
                "KeySchema": [
                    {"AttributeName": i["partition_key"], "KeyType": "HASH"},
                    {"AttributeName": i["sort_key"], "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for i in t["indexes"]
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": t["ttl_attribute"]})
    bucket = r["bucket"]["name_format"].replace("{stack}", stack).replace("{account}", account)
    s3 = boto(args.endpoint, "s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=r["bucket"]["config_key"], Body=config_text.encode(), ContentType="application/toml")
    from_address = config.get("mailroom", {}).get("from_address", "mailroom@example.com")
    boto(args.endpoint, "sesv2").create_email_identity(EmailIdentity=from_address.rsplit("@", 1)[1])
    json.dump({"account": account, "bucket": bucket, "table": table, "queues": queues, "from_address": from_address, "deliver_queues": sorted(deliver)}, sys.stdout)


def cmd_aws_put(args):
    s3 = boto(args.endpoint, "s3")
    for pair in args.objects:
        key, path = pair.split("=", 1)
        with open(path, "rb") as f:
            s3.put_object(Bucket=args.bucket, Key=key, Body=f.read(), ContentType="message/rfc822")
    json.dump({"put": len(args.objects)}, sys.stdout)


def cmd_aws_drain(args):
    sqs = boto(args.endpoint, "sqs")
    bodies = []
    deadline = time.monotonic() + args.timeout
    for _ in range(1000):
        if len(bodies) >= args.count or time.monotonic() > deadline:
            break
        out = sqs.receive_message(QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=600)
        for m in out.get("Messages", []):
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=m["ReceiptHandle"])
    json.dump(bodies, sys.stdout)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure (what run.sh calls)")
    r.add_argument("--repo", required=True)
    r.add_argument("--target-dir", required=True)
    r.add_argument("--parts", default=",".join(PARTS))
    r.add_argument("--quick", action="store_true")
    r.add_argument("--compare")
    r.add_argument("--endpoint", default="")
    r.add_argument("--runs", type=int, default=10)
    r.add_argument("--messages", type=int, default=2000)
    s = sub.add_parser("aws-setup")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--stack", required=True)
    s.add_argument("--config", required=True)
    s.add_argument("--resources", required=True)
    p = sub.add_parser("aws-put")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("objects", nargs="+", metavar="KEY=PATH")
    d = sub.add_parser("aws-drain")
    d.add_argument("--endpoint", required=True)
    d.add_argument("--queue-url", required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    if args.cmd == "run":
        # SIGTERM unwinds like Ctrl-C, so every finally block stops what it started.
        signal.signal(signal.SIGTERM, _interrupt)
        sys.exit(cmd_run(args))
    {"aws-setup": cmd_aws_setup, "aws-put": cmd_aws_put, "aws-drain": cmd_aws_drain}[args.cmd](args)


if __name__ == "__main__":
    main()

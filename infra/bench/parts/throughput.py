"""Throughput, with a spam model `mailroom train` makes: the criterion bench in process (per
stage and for the whole pipeline), `mailroom run` as one process on one core and on every
core, and the Python anchor (infra/bench/anchor.py) on the same core."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

from .common import MB, log, say, timed_process
from .corpus import WORDS, list_files, prepare_corpus


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


def part_anchor(ctx, res, corpus, mailroom_wall):
    """The Python anchor over the same corpus on one core, beside `mailroom run --jobs 1`."""
    py, why = anchor_python(ctx)
    if py is None:
        res["anchor"] = {"skipped": why}
        say(f"anchor skipped: {why}")
        return
    src = res["model"]["trained_on"]
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


def run_dirs(ctx):
    """A folder for a run's state and outbox, and where it is. On tmpfs when /dev/shm is
    writable: each run creates a file per stored or quarantined message (4,066 over the
    SpamAssassin corpus), and on an ext4 without a journal, as this bench machine's root
    is, the kernel's inode allocator steps over every inode deleted in the last 30 s: a
    run soon after another run's cleanup spent 0.7-1.6 s more in the kernel (against
    0.2-0.4 s on tmpfs), a figure of the disk's history rather than of the pipeline."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        d = os.path.join(shm, f"mailroom-bench-{os.getpid()}")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d, "tmpfs"
    return ctx.fresh_dir("cli"), "the bench folder's file system"


def cli_run(ctx, corpus, config, jobs, pin):
    """`mailroom run --format jsonl` over the corpus with fresh state and outbox."""
    mailroom = os.path.join(ctx.release, "mailroom")
    if not os.path.isfile(mailroom):
        raise RuntimeError(f"{mailroom} is missing (cargo build --release -p mailroom-cli)")
    root, state_on = run_dirs(ctx)
    state = os.path.join(root, "state")
    outbox = os.path.join(root, "outbox")
    os.makedirs(state)
    os.makedirs(outbox)
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
        "state_on": state_on,
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
        f" (exit {cli['exit_code']}, {cli['errors']} rows with an error; state and outbox on {state_on})"
    )
    shutil.rmtree(root, ignore_errors=True)
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

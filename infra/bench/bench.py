#!/usr/bin/env python3
"""The measuring half of infra/bench/run.sh (see its header for what each part measures).

Standard library only in the measuring process. The AWS setup steps (`aws-setup`, `aws-put`,
`aws-drain`) run as separate processes of the repo's .venv Python because they use boto3;
keeping boto3 out of the measuring process keeps its memory low, which matters because a
child's peak RSS as wait4 reports it is never below the peak of the process that forked it
(Linux carries the pre-exec address space's high-water mark into the child's ru_maxrss).
So every measured program is started through a tiny launcher (`python -S -I`, about 8 MiB;
Launched in parts/common.py), which forks, execs, calls os.wait4 and reports ru_maxrss; that
launcher's own peak is measured once and reported as `rss_floor_mib`: a figure at the floor
means "at most that".

Every wait is bounded and every process started here is stopped here.

This file parses the command line, runs the parts and writes (and compares) the JSON. Each
part is a module of parts/ (throughput, coldstart, memory, size, latency, cost) over what
they share: common.py (the context, the launcher, the figure helpers), corpus.py,
runtime_api.py (the local Lambda Runtime API) and stack.py (the stack on moto, one function
invocation). The aws-* subcommands are parts/aws_helpers.py, the only module importing boto3.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

from parts.aws_helpers import cmd_aws_drain, cmd_aws_put, cmd_aws_setup
from parts.common import Ctx, log, rss_floor_kib, say

# cmd_run calls each part's part_<name> from this module's globals.
from parts.build import part_build
from parts.coldstart import part_coldstart
from parts.cost import part_cost
from parts.hostile import part_hostile
from parts.latency import part_latency
from parts.memory import LAMBDA_MEMORY_MIB, part_memory
from parts.size import part_size
from parts.throughput import part_throughput

PARTS = ["throughput", "coldstart", "memory", "size", "latency", "hostile", "cost", "build"]


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
    hostile = measured("hostile")
    if hostile.get("within_limit") is False:
        problems.append(f"hostile message {hostile['worst']} took {hostile['worst_ms']} ms through all four stages, over the 1,000 ms limit")
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

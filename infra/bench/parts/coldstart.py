"""Cold start of each function binary against moto and the local Runtime API, --runs times:
process start -> first GET /next, -> first response, and a warm invocation; and the floor,
a function that does nothing (shared/aws/examples/floor.rs), the same way."""

import os
import statistics
import time
import uuid

from .common import REGION, STAGES, Launched, log, say, summary
from .runtime_api import RuntimeApi
from .stack import drain, ensure_stack, invoke, upload_raw


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
        # The floor first, so that each function's line can print it beside its own.
        fl = floor(ctx, api, runs)
        res["floor"] = fl
        say(
            f"coldstart floor (a function that does nothing): start->GET /next median {fl['init_ms'].get('median')} ms "
            f"p90 {fl['init_ms'].get('p90')} ms; start->first response median {fl['first_response_ms'].get('median')} ms "
            f"({fl['answered']} of {runs} answered)"
        )
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
                # init = before main (exec, loading, the runtime) + these two, from the
                # function's "ready" line.
                "init_phases_ms": {
                    k: summary([s["init_phases_ms"].get(k) for s in samples]) for k in INIT_PHASES
                },
                "before_main_ms": summary([before_main(s) for s in samples]),
                "failed_runs": sum(1 for s in samples if not s["ok"]),
                "failures": [f"{s['label']}: {'; '.join(s['errors'])}" for s in samples if not s["ok"]],
                "samples": samples,
            }
            res["functions"][stage] = f
            say(
                f"coldstart {stage}: start->GET /next median {f['init_ms'].get('median')} ms p90 {f['init_ms'].get('p90')} ms "
                f"(floor {fl['init_ms'].get('median')} ms); "
                f"start->first response median {f['first_response_ms'].get('median')} ms p90 {f['first_response_ms'].get('p90')} ms; "
                f"warm invoke median {f['warm_invoke_ms'].get('median')} ms; peak RSS median {f['peak_rss_mib'].get('median')} MiB "
                f"(n={runs}, {f['failed_runs']} failed)"
            )
            ph = f["init_phases_ms"]
            say(
                f"  init of {stage}, medians: before main {f['before_main_ms'].get('median')} ms, "
                f"settings and SDK config {ph['settings_and_sdk_ms'].get('median')} ms, "
                f"clients, config and models from S3 {ph['config_and_models_ms'].get('median')} ms"
            )
            for why in f["failures"]:
                say(f"  failed: {why}")
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


INIT_PHASES = ("settings_and_sdk_ms", "config_and_models_ms")


def before_main(sample):
    """Process start to main: init less the phases the function timed itself."""
    phases = sample["init_phases_ms"]
    if sample["init_ms"] is None or any(phases.get(k) is None for k in INIT_PHASES):
        return None
    return round(sample["init_ms"] - sum(phases[k] for k in INIT_PHASES), 3)


def floor(ctx, api, runs):
    """The trivial function's start -> first GET /next and -> first response, in ms."""
    binary = os.path.join(ctx.release, "examples", "floor")
    if not os.path.isfile(binary):
        raise RuntimeError(f"{binary} is missing (cargo build --release -p mailroom-aws --example floor)")
    init, first = [], []
    for i in range(runs):
        inv = api.begin(['{"Records": []}'], f"arn:aws:lambda:{REGION}:123456789012:function:floor")
        env = {
            "AWS_LAMBDA_RUNTIME_API": inv.addr,
            "AWS_LAMBDA_FUNCTION_NAME": "floor",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(ctx.resources["function_settings"]["memory_mb"]),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        }
        logp = ctx.path("logs", f"coldstart-floor-{i}.log")
        proc = Launched([binary], env, logp, logp)
        try:
            deadline = time.monotonic() + 30
            while not inv.done.wait(0.02) and proc.running() and time.monotonic() < deadline:
                pass
        finally:
            proc.stop()
            api.end(inv)
        if inv.gets:
            init.append(round((inv.gets[0] - proc.t_spawn) * 1000, 3))
        if inv.responses:
            first.append(round((inv.responses[0][0] - proc.t_spawn) * 1000, 3))
    return {"init_ms": summary(init), "first_response_ms": summary(first), "runs": runs, "answered": len(first)}

"""The stack on moto (bucket, table, queues as infra/resources.json names them) and one
function binary run against it and the local Runtime API: its start, first GET /next,
responses and peak RSS. Used by the coldstart and memory parts."""

import hashlib
import json
import os
import shutil
import time
import uuid

from .common import REGION, Launched, log, vmhwm_kib

STACK = "mailroom-bench"


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


def function_env(ctx, stage, inv):
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
            "AWS_LAMBDA_RUNTIME_API": inv.addr,
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


def ready_phases(logp):
    """The init phases (ms from the start of main) of the function's "ready" log line, or {}."""
    with open(logp, errors="replace") as f:
        for line in f:
            try:
                fields = json.loads(line).get("fields", {})
            except (ValueError, AttributeError):
                continue
            if fields.get("message") == "ready":
                return {k: v for k, v in fields.items() if k.endswith("_ms")}
    return {}


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
        proc = Launched([function_binary(ctx, stage)], function_env(ctx, stage, inv), logp, logp)
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
        "init_phases_ms": ready_phases(logp),
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


def upload_raw(ctx, paths, label):
    """Puts the files under raw/ with SES-like ids; returns their receipt notifications."""
    raw = ctx.resources["bucket"]["prefixes"]["raw"]
    keys = [f"{raw}{label}{i:03d}{uuid.uuid4().hex[:12]}" for i in range(len(paths))]
    ctx.aws("aws-put", "--bucket", ctx.stack["bucket"], *[f"{k}={p}" for k, p in zip(keys, paths)])
    return [ses_notification(ctx.stack["bucket"], k, p) for k, p in zip(keys, paths)]


def drain(ctx, queue_key, count, timeout=60):
    url = ctx.stack["queues"][queue_key]["url"]
    return ctx.aws("aws-drain", "--queue-url", url, "--count", str(count), "--timeout", str(timeout))

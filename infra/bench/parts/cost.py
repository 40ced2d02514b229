"""Cost per million messages at public AWS prices (docs/cost-model.md), from this run's
figures or, for parts not run, the ones latest.json carries over."""

import math

from .common import STAGES, say


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
        "s3_get": 3,  # filter, classify and route read the raw mail; respond reads none
        "s3_put": 1 + store + quarantine,  # SES stores the raw mail, plus store/quarantine actions
        # one audit record per stage (also its record of having finished), + the summary
        # (and its by-time and by-sender index copies, by-quarantine while quarantined) and
        # one item per recipient (one assumed)
        "dynamodb_wru": 4 + 2 * forward_sends + 2 * deliver + 3 * sent + limited + 4 + quarantine,
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

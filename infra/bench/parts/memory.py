"""Peak RSS and wall of `mailroom run` on 1, 10, 25 and 40 MB messages forwarded twice and
stored, and of each function binary on the 40 MB one (S3 on moto), against Lambda's
128 MiB."""

import base64
import json
import math
import os
import random
import shutil
import zipfile

from .common import MB, STAGES, log, say, timed_process
from .runtime_api import RuntimeApi
from .stack import drain, ensure_stack, invoke, upload_raw

LARGE_SIZES_MB = [1, 10, 25, 40]
LAMBDA_MEMORY_MIB = 128


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
        argv = [mailroom, "run", "--config", config, "--format", "jsonl", "--state", state, "--outbox", outbox, path]
        r = timed_process(ctx, argv, f"run-{n}", folder="large", timeout=600)
        rows = [json.loads(x) for x in open(r["out"]) if x.strip()]
        row = rows[0] if rows else {}
        e = {
            "size_mb": n,
            "bytes": size,
            "peak_rss_mib": r["peak_rss_mib"],
            "rss_per_message_byte": round(r["maxrss_kib"] * 1024 / size, 2),
            "wall_s": r["wall_s"],
            "cpu_s": r["cpu_s"],
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

"""The messages the throughput part measures: ../shared/data/spam/{ham,spam} (every k-th of
them with --quick), else generated ones like shared/core/benches/pipeline.rs's."""

import math
import os
import shutil


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

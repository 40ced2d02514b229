"""One message alone, from the receipt notification to the auto-reply handed to SES, on moto
(cargo bench -p mailroom-tests --bench latency)."""

import json
import os
import subprocess
import sys

from .common import say


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

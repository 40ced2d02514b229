"""The hostile corpus through all four stages, one core: the slowest message's time
(cargo bench -p mailroom-tests --bench hostile)."""

import json
import os
import shutil
import subprocess
import sys

from .common import say


# ------------------------------------------------------------------ hostile


def part_hostile(ctx, res):
    """tests/benches/hostile.rs: every message of tests/fixtures/hostile and the generated
    ones (10,000 zip names of 1,024 bytes, attached messages 100,000 deep), best of three
    runs each, pinned to one core where taskset exists."""
    cmd = ["cargo", "bench", "-p", "mailroom-tests", "--bench", "hostile"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, cwd=ctx.repo, env=dict(os.environ), stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=True).stdout
    doc = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    res.update(doc)
    res["one_core"] = bool(shutil.which("taskset"))
    res["limit_ms"] = 1000
    res["within_limit"] = doc["worst_ms"] < 1000
    say(f"hostile: slowest of {doc['messages']} messages through all four stages: {doc['worst']} {doc['worst_ms']} ms (limit 1,000 ms on one core)")

"""The seven functions built from nothing, one after another, as `sam build` builds them."""

import os
import shutil
import subprocess
import time

from .common import FUNCTIONS, log, say

# The README's deploy section promises a `sam build` within this, on a 2-core machine.
BUILD_BUDGET_S = 8 * 60


# ------------------------------------------------------------------ build


def part_build(ctx, res):
    """`sam build` runs `cargo lambda build --release --bin mailroom-<stage>` in each
    function's CodeUri, one function after another, so each picks up functions/.cargo/
    config.toml (the functions' release profile) and later builds reuse what earlier ones
    compiled. This does the same with plain cargo in a target directory of its own, so
    nothing is reused from earlier builds: the download of crates, cargo lambda's zig
    cross-link and SAM's copy steps are not in the figure."""
    scratch = os.path.join(ctx.out, "build-target")
    shutil.rmtree(scratch, ignore_errors=True)
    env = dict(os.environ, CARGO_TARGET_DIR=scratch, CARGO_TERM_COLOR="never")
    res.update({"functions": {}, "budget_s": BUILD_BUDGET_S, "note": "each function built from functions/<stage> in an empty target directory, in template order"})
    total = 0.0
    try:
        for stage in FUNCTIONS:
            log(f"build: cargo build --release --bin mailroom-{stage} (in functions/{stage})")
            t0 = time.monotonic()
            p = subprocess.run(
                ["cargo", "build", "--release", "--timings", "--bin", f"mailroom-{stage}"],
                cwd=os.path.join(ctx.repo, "functions", stage),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            seconds = time.monotonic() - t0
            if p.returncode != 0:
                raise RuntimeError(f"building mailroom-{stage} failed: {p.stderr.strip()[-2000:]}")
            binary = os.path.join(scratch, "release", f"mailroom-{stage}")
            # cargo's own report of where the time went (which crates, how parallel).
            report = os.path.join(scratch, "cargo-timings", "cargo-timing.html")
            if os.path.isfile(report):
                shutil.copyfile(report, ctx.path("build-timings", f"{stage}.html"))
            total += seconds
            res["functions"][stage] = {"seconds": round(seconds, 1), "binary_bytes": os.path.getsize(binary)}
            say(f"build {stage}: {seconds:.1f} s ({total:.1f} s so far), binary {os.path.getsize(binary)} bytes")
    finally:
        # A build from nothing is about 3 GB; keep none of it.
        shutil.rmtree(scratch, ignore_errors=True)
    res["total_s"] = round(total, 1)
    res["within_budget"] = total <= BUILD_BUDGET_S
    say(f"build: the seven functions in {total / 60:.1f} min ({total:.0f} s; budget {BUILD_BUDGET_S // 60} min)")

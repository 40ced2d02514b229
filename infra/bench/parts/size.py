"""Each function's release binary and a zip of it named bootstrap, beside two floors: a
function that does nothing (shared/aws/examples/floor.rs) and one that carries only the SDK
config and the S3, SQS and DynamoDB clients every function has (examples/sdk_floor.rs)."""

import os
import platform
import zipfile

from .common import FUNCTIONS, MIB, say


# ------------------------------------------------------------------ size


def part_size(ctx, res):
    res.update({"arch": platform.machine(), "note": "host build (target/release); sam build cross-compiles for arm64, whose size differs", "functions": {}})
    floors = {}
    for name in ("floor", "sdk_floor"):
        b = os.path.join(ctx.release, "examples", name)
        if not os.path.isfile(b):
            raise RuntimeError(f"{b} is missing (cd functions && cargo build --release -p mailroom-aws --example {name})")
        floors[name] = measure(ctx, name, b)
    res["floors"] = floors
    say(f"size floor (a function that does nothing): binary {floors['floor']['binary_mib']} MiB, zip {floors['floor']['zip_mib']} MiB")
    sdk = floors["sdk_floor"]
    say(f"size sdk floor (SDK config, S3, SQS and DynamoDB clients, one call each): binary {sdk['binary_mib']} MiB, zip {sdk['zip_mib']} MiB")
    for stage in FUNCTIONS:
        b = os.path.join(ctx.release, f"mailroom-{stage}")
        if not os.path.isfile(b):
            raise RuntimeError(f"{b} is missing (cargo build --release -p mailroom-{stage})")
        f = measure(ctx, f"mailroom-{stage}", b)
        f["above_sdk_floor_mib"] = round((f["binary_bytes"] - sdk["binary_bytes"]) / MIB, 2)
        res["functions"][stage] = f
        say(f"size {stage}: binary {f['binary_mib']} MiB ({f['binary_bytes']} bytes), zip with bootstrap {f['zip_mib']} MiB ({f['zip_bytes']} bytes); {f['above_sdk_floor_mib']} MiB above the sdk floor")


def measure(ctx, name, b):
    """The binary's size, and that of a zip holding it as bootstrap, as a deploy package does."""
    z = ctx.path("zip", f"{name}.zip")
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("bootstrap", date_time=(2026, 1, 1, 0, 0, 0))
        info.external_attr = (0o100755 << 16)
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(b, "rb") as f:
            zf.writestr(info, f.read())
    f = {"binary_bytes": os.path.getsize(b), "zip_bytes": os.path.getsize(z)}
    f["binary_mib"] = round(f["binary_bytes"] / MIB, 2)
    f["zip_mib"] = round(f["zip_bytes"] / MIB, 2)
    return f

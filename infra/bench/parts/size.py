"""Each function's release binary and a zip of it named bootstrap."""

import os
import platform
import zipfile

from .common import FUNCTIONS, MIB, say


# ------------------------------------------------------------------ size


def part_size(ctx, res):
    res.update({"arch": platform.machine(), "note": "host build (target/release); sam build cross-compiles for arm64, whose size differs", "functions": {}})
    for stage in FUNCTIONS:
        b = os.path.join(ctx.release, f"mailroom-{stage}")
        if not os.path.isfile(b):
            raise RuntimeError(f"{b} is missing (cargo build --release -p mailroom-{stage})")
        z = ctx.path("zip", f"mailroom-{stage}.zip")
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo("bootstrap", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(b, "rb") as f:
                zf.writestr(info, f.read())
        f = {"binary_bytes": os.path.getsize(b), "zip_bytes": os.path.getsize(z)}
        f["binary_mib"] = round(f["binary_bytes"] / MIB, 2)
        f["zip_mib"] = round(f["zip_bytes"] / MIB, 2)
        res["functions"][stage] = f
        say(f"size {stage}: binary {f['binary_mib']} MiB ({f['binary_bytes']} bytes), zip with bootstrap {f['zip_mib']} MiB ({f['zip_bytes']} bytes)")

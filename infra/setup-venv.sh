#!/usr/bin/env bash
# Create or refresh <repo>/.venv with the pinned infra tools (moto server,
# cfn-lint, sam). Idempotent: a stamp holding the hash of requirements.txt
# (and the interpreter version) makes reruns a no-op until the pins change.
# Needs only python3 with the venv module and access to PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${repo_root}/.venv"
req="${repo_root}/infra/requirements.txt"
stamp="${venv}/.mailroom-requirements.sha256"
python="${PYTHON:-python3}"

# Hash with python rather than sha256sum so this also runs on macOS.
want="$("$python" - "$req" <<'EOF'
import hashlib, sys
h = hashlib.sha256(open(sys.argv[1], "rb").read())
h.update(sys.version.encode())
print(h.hexdigest())
EOF
)"

if [[ -x "${venv}/bin/python" ]] && [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]]; then
    echo "infra venv up to date: ${venv}"
    exit 0
fi

# A venv whose interpreter no longer runs (python upgraded or removed) is rebuilt.
if [[ -d "$venv" ]] && ! "${venv}/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "removing broken venv at ${venv}"
    rm -rf "$venv"
fi
if [[ ! -x "${venv}/bin/python" ]]; then
    echo "creating venv at ${venv}"
    "$python" -m venv "$venv"
fi

# Drop the stamp first so an interrupted install is retried next time.
rm -f "$stamp"
echo "installing infra/requirements.txt into ${venv} (quiet; first run takes a minute or two)"
PIP_DISABLE_PIP_VERSION_CHECK=1 "${venv}/bin/python" -m pip install --quiet -r "$req"
echo "$want" >"$stamp"
echo "infra venv ready: ${venv} (activate with: source ${venv}/bin/activate)"

#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the template lint, unit, golden, CLI
# and integration tests, including the AWS tests against an emulator. Installs what it
# needs (the Python tools in .venv) and starts and stops the services it needs (a moto
# server on a free loopback port). This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root="$(pwd)"

step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

# Incremental caches only help repeated local builds; in a full run they add gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A run from a clean clone writes about 3.7 GB under target/. With less free, the linker
# dies with a bus error that does not say why, so say it first.
target_dir="${CARGO_TARGET_DIR:-${repo_root}/target}"
mkdir -p "$target_dir"
free_mb="$(df -Pm "$target_dir" | awk 'NR == 2 { print $4 }')"
if [[ -n "$free_mb" ]] && (( free_mb < 3072 )); then
    echo "warning: only ${free_mb} MB free on the filesystem of ${target_dir};" \
        "a build from scratch needs about 3 GB (a linker 'Bus error' means the disk filled)" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings (the CLI with and without its aws feature)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features mailroom-cli/aws -- -D warnings

# sam build compiles each function alone, so with only its own mailroom-aws features; the
# workspace builds above turn them all on. A warning in mailroom-aws under one function's
# features fails here.
step "cargo clippy -p mailroom-<function>, each alone with only its own features"
for f in filter classify route respond digest links retrain; do
    if ! out="$(cargo clippy -p "mailroom-${f}" -- -D warnings 2>&1)" || grep -q '^warning' <<<"$out"; then
        echo "$out"
        echo "mailroom-${f}, built alone with only its own features, has errors or warnings" >&2
        exit 1
    fi
done

step "infra tools (.venv: moto server, cfn-lint, sam)"
bash infra/setup-venv.sh

step "browser for the console tests (Debian's chromium and chromium-driver)"
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    export MAILROOM_REQUIRE_BROWSER=1
elif command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; then
    export MAILROOM_REQUIRE_BROWSER=1
elif command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] &&
    apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; then
    export MAILROOM_REQUIRE_BROWSER=1
else
    echo "warning: could not install chromium and chromium-driver; the console's browser test will skip" >&2
fi
if [[ "${MAILROOM_REQUIRE_BROWSER:-}" == 1 ]]; then
    /usr/bin/chromium --version
fi

step "template lint"
bash infra/lint-template.sh

# The AWS tests run the Lambda binaries and `mailroom` on a stack, so the CLI is built (and
# tested) with its aws feature; the clippy step above checks the build without it.
step "cargo build --workspace --bins --features mailroom-cli/aws"
cargo build --workspace --bins --features mailroom-cli/aws

step "AWS emulator (moto server)"
python="${repo_root}/.venv/bin/python"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
endpoint="http://127.0.0.1:${port}"
moto_log="$(mktemp "${TMPDIR:-/tmp}/mailroom-moto.XXXXXX.log")"
"${repo_root}/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
# Stop it however this script ends; keep its log only when something failed.
stop_moto() {
    local status=$?
    if kill -0 "$moto_pid" 2>/dev/null; then
        kill "$moto_pid" 2>/dev/null || true
        wait "$moto_pid" 2>/dev/null || true
    fi
    if [[ $status -eq 0 ]]; then
        rm -f "$moto_log"
    else
        echo "moto server log kept at ${moto_log}" >&2
    fi
}
trap stop_moto EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait (at most 30 s) until it answers.
ready=0
for _ in $(seq 1 60); do
    if ! kill -0 "$moto_pid" 2>/dev/null; then
        break
    fi
    if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()' \
        "${endpoint}/moto-api/" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ $ready -ne 1 ]]; then
    echo "moto server did not come up on ${endpoint}; its log (${moto_log}):" >&2
    cat "$moto_log" >&2
    exit 1
fi
echo "moto server ${endpoint} (pid ${moto_pid}, log ${moto_log})"

step "cargo test --workspace"
export MAILROOM_TEST_ENDPOINT="$endpoint"
export MAILROOM_REQUIRE_EMULATOR=1
# Tests that cannot run here (no data kit beside the repository, say) pass as `ok` in
# libtest's count; each writes a line here instead, and the summary lists them.
export MAILROOM_SKIPPED="${target_dir}/skipped-tests.txt"
rm -f "$MAILROOM_SKIPPED"
cargo test --workspace --features mailroom-cli/aws
if [[ -s "$MAILROOM_SKIPPED" ]]; then
    step "$(sort -u "$MAILROOM_SKIPPED" | wc -l) tests skipped (they passed without running):"
    sort -u "$MAILROOM_SKIPPED"
else
    step "no test skipped"
fi

step "all tests passed in $((SECONDS - started)) s"

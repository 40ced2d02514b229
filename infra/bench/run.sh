#!/usr/bin/env bash
# mailroom's performance harness (issue 5). Prints every figure as a plain line, then one
# JSON document with all of them; the JSON also goes to target/bench/latest.json (the one it
# replaces is kept as target/bench/previous.json), where parts not run keep their last
# figures, marked with `carried_from`. Progress and build output go to stderr.
#
#   bash infra/bench/run.sh [--quick] [--only PART,...] [--compare OLD.json] [--runs N] [--messages N]
#
# Parts (all by default; pick with --only throughput,coldstart,memory,size,latency,hostile,cost,build):
#   throughput  with a spam model `mailroom train` makes from ../shared/data/spam (or a
#               generated ham/spam corpus) in a copy of the example config: in process, per
#               stage and for the whole pipeline, the criterion bench (cargo bench -p
#               mailroom-core --bench pipeline), messages/s and MB/s; `mailroom run --format
#               jsonl` as one process over the same corpus, pinned to one core (--jobs 1) and
#               on every core (--jobs N): messages/s, MB/s, wall and CPU time, peak RSS, and
#               what the messages did (for the cost); and the Python anchor
#               (infra/bench/anchor.py: email + a scikit-learn TF-IDF LinearSVC trained on the
#               same folders, in target/bench/anchor-venv, skipped with the reason when pip
#               cannot install scikit-learn) on the same core
#   coldstart   each release function binary against moto (bucket, table, queues as
#               infra/resources.json names them, examples/mailroom.toml as the config) and a
#               local Lambda Runtime API, N runs (--runs, default 10): process start -> first
#               GET /next, -> first response, and a warm invocation; median and p90; and
#               the same for a function that does nothing (shared/aws/examples/floor.rs)
#   memory      1, 10, 25 and 40 MB messages (SES shape, base64 attachments) to billing@,
#               whose route is made two forwards and a store, in target/bench/large: peak
#               RSS and wall of `mailroom run` on each, and of each function binary handling
#               the 40 MB one (S3 on moto); flags any over 128 MiB
#   size        each function's release binary (all seven, each built alone in its own
#               directory as sam build builds it) and a zip of it named bootstrap, beside
#               a function that does nothing and one with only the SDK config and the S3,
#               SQS and DynamoDB clients every function has (examples/sdk_floor.rs)
#   latency     one message alone, from the receipt notification to the auto-reply handed to
#               SES: the four stage handlers against moto, each queue read at once (cargo
#               bench -p mailroom-tests --bench latency), 30 runs; median and p90
#   hostile     every message of tests/fixtures/hostile and the generated attacks too big to
#               commit through all four stages, best of three, pinned to one core (cargo
#               bench -p mailroom-tests --bench hostile): the slowest message and its time,
#               a problem when it is 1 s or more
#   cost        cost per million messages at public AWS prices (see docs/cost-model.md),
#               from this run's figures or, for parts not run, target/bench/latest.json's
#   build       the seven functions built from nothing, one after another in template order
#               from their own directories, as sam build builds them: seconds for each and
#               in all, against the README's 8 minutes (about 10 minutes and 3 GB, in
#               target/bench/build-target, removed after; cargo's timing report of each
#               build is kept in target/bench/build-timings/)
#
# --quick: a shorter criterion measurement, a ~500-message corpus, 3 cold starts per function.
# --compare OLD.json: also prints (and records) every figure that changed against OLD.json.
# Corpus: ../shared/data/spam/{ham,spam} when present, else --messages N (default 2000)
# generated messages in target/bench/corpus. Needs cargo and python3; coldstart and memory
# also need .venv (moto, boto3), which infra/setup-venv.sh installs (run here when missing).
# Figures depend on machine load (load averages are in the JSON): compare runs taken on the
# same machine under similar load. Exit status 1 when any part failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo_root="$(pwd)"

parts="throughput,coldstart,memory,size,latency,hostile,cost,build"
quick=""
compare=""
runs=10
messages=2000
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) parts="${2:?--only needs a list}"; shift 2 ;;
        --only=*) parts="${1#*=}"; shift ;;
        --quick) quick=1; shift ;;
        --compare) compare="${2:?--compare needs a file}"; shift 2 ;;
        --compare=*) compare="${1#*=}"; shift ;;
        --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
        --messages) messages="${2:?--messages needs a number}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -n "$compare" ]]; then
    [[ -f "$compare" ]] || { echo "no such file: $compare" >&2; exit 2; }
    compare="$(cd "$(dirname "$compare")" && pwd)/$(basename "$compare")"
fi
has() { [[ ",${parts}," == *",$1,"* ]]; }
for p in ${parts//,/ }; do
    case "$p" in throughput|coldstart|memory|size|latency|hostile|cost|build) ;; *) echo "unknown part: $p" >&2; exit 2 ;; esac
done

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p "${target_dir}/bench"

# Builds (cargo may wait for the build-directory lock while others build).
if has throughput || has memory; then
    echo "== cargo build --release -p mailroom-cli" >&2
    cargo build --release -p mailroom-cli >&2
fi
if has coldstart || has memory || has size; then
    # One package per build, in its own directory, as `sam build` does (cargo lambda runs in
    # each CodeUri): cargo would unify the features of packages built together, each
    # function turns on only its own stage's clients, and functions/.cargo/config.toml gives
    # the functions their release profile.
    for f in filter classify route respond digest links retrain; do
        echo "== (cd functions/${f} && cargo build --release)" >&2
        (cd "functions/${f}" && cargo build --release) >&2
    done
fi
if has coldstart || has size; then
    # The floors with the functions' profile too, so that they are like for like.
    echo "== (cd functions && cargo build --release -p mailroom-aws --example floor --example sdk_floor)" >&2
    (cd functions && cargo build --release -p mailroom-aws --example floor --example sdk_floor) >&2
fi

# The AWS emulator, stopped however this script ends.
python=python3
endpoint=""
# shellcheck source=infra/moto.sh
source "${repo_root}/infra/moto.sh"
cleanup() {
    local status=$?
    moto_stop "$status" || true
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if has coldstart || has memory || has latency; then
    bash infra/setup-venv.sh >&2
    moto_start
    endpoint="$MOTO_ENDPOINT"
fi
if [[ -x "${repo_root}/.venv/bin/python" ]]; then
    python="${repo_root}/.venv/bin/python"
fi

status=0
"$python" infra/bench/bench.py run --repo "$repo_root" --target-dir "$target_dir" --parts "$parts" \
    ${quick:+--quick} ${compare:+--compare "$compare"} --endpoint "$endpoint" --runs "$runs" \
    --messages "$messages" || status=$?
exit "$status"

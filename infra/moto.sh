# shellcheck shell=bash
# Start and stop a moto server (the AWS emulator from <repo>/.venv, installed by
# `bash infra/setup-venv.sh`) on a free loopback port. Source this file, then:
#
#   moto_start   # background server; waits (at most 30 s) until it answers; exports
#                # MOTO_ENDPOINT (http://127.0.0.1:PORT), MOTO_PID and MOTO_LOG
#   moto_stop [STATUS]  # stops it (idempotent); keeps its log when STATUS (default $?)
#                       # is not 0
#
# moto_start installs an EXIT trap that calls moto_stop (and INT/TERM traps that exit, so
# the EXIT trap runs) unless the caller already has its own: then the caller's trap must
# call moto_stop itself. Only the server this shell started is ever signalled.

_moto_repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

moto_start() {
    local venv="${_moto_repo_root}/.venv"
    if [[ -n "${MOTO_PID:-}" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        echo "moto server already running: ${MOTO_ENDPOINT} (pid ${MOTO_PID})" >&2
        return 0
    fi
    if [[ ! -x "${venv}/bin/moto_server" ]]; then
        echo "no ${venv}/bin/moto_server: run bash infra/setup-venv.sh" >&2
        return 1
    fi
    local python="${venv}/bin/python" port
    port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    MOTO_LOG="$(mktemp "${TMPDIR:-/tmp}/mailroom-moto.XXXXXX.log")"
    "${venv}/bin/moto_server" -H 127.0.0.1 -p "$port" >"$MOTO_LOG" 2>&1 &
    MOTO_PID=$!
    MOTO_ENDPOINT="http://127.0.0.1:${port}"
    export MOTO_PID MOTO_ENDPOINT MOTO_LOG
    if [[ -z "$(trap -p EXIT)" ]]; then
        trap moto_stop EXIT
        [[ -n "$(trap -p INT)" ]] || trap 'exit 130' INT
        [[ -n "$(trap -p TERM)" ]] || trap 'exit 143' TERM
    fi
    local _
    for _ in $(seq 1 60); do
        if ! kill -0 "$MOTO_PID" 2>/dev/null; then
            break
        fi
        if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2).read()' \
            "${MOTO_ENDPOINT}/moto-api/" >/dev/null 2>&1; then
            echo "moto server ${MOTO_ENDPOINT} (pid ${MOTO_PID}, log ${MOTO_LOG})" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "moto server did not come up on ${MOTO_ENDPOINT}; its log (${MOTO_LOG}):" >&2
    cat "$MOTO_LOG" >&2 || true
    moto_stop
    return 1
}

moto_stop() {
    local status=${1:-$?}
    if [[ -n "${MOTO_PID:-}" ]]; then
        if kill -0 "$MOTO_PID" 2>/dev/null; then
            kill "$MOTO_PID" 2>/dev/null || true
            local _
            for _ in $(seq 1 20); do
                kill -0 "$MOTO_PID" 2>/dev/null || break
                sleep 0.25
            done
            if kill -0 "$MOTO_PID" 2>/dev/null; then
                kill -9 "$MOTO_PID" 2>/dev/null || true
            fi
        fi
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    if [[ -n "${MOTO_LOG:-}" && -f "${MOTO_LOG}" ]]; then
        if [[ $status -eq 0 ]]; then
            rm -f "$MOTO_LOG"
        else
            echo "moto server log kept at ${MOTO_LOG}" >&2
        fi
    fi
    unset MOTO_PID MOTO_ENDPOINT MOTO_LOG
    return "$status"
}

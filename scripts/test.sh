#!/usr/bin/env bash
# The one command that runs Sonde's tests: installs prerequisites, checks formatting and lints,
# then runs every unit and integration test (the integration tests start the real binary and
# real peers on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Integration tests run the binaries, so build them first.
cargo build --workspace --bins --quiet
cargo test --workspace -- --test-threads=2

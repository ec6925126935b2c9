#!/usr/bin/env bash
# The one command that runs Sonde: builds it (release) and runs it with the given arguments.
# With no --config it runs the embedded default configuration (configs/default.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh run
cargo build --release -p sonde --quiet
exec target/release/sonde "$@"

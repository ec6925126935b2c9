#!/usr/bin/env bash
# Installs what building and testing Sonde needs on a fresh Debian machine (idempotent).
# Usage: scripts/prereqs.sh [run|test]   ("run" installs only what the binary needs to build)
set -euo pipefail
mode=${1:-test}

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
# Building Sonde compiles its eBPF programs (C, CO-RE) with clang against libbpf's headers.
have clang || need_apt+=(clang llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
have bpftool || need_apt+=(bpftool)
if [ "$mode" = test ]; then
  have go || need_apt+=(golang-go)
  have nginx || need_apt+=(nginx)
  have haproxy || need_apt+=(haproxy)
  have prometheus || need_apt+=(prometheus)
  have wrk || need_apt+=(wrk)
  have curl || need_apt+=(curl)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "$mode" = test ]; then
  py=python3
  missing=()
  $py -c "import opentelemetry.sdk" 2>/dev/null || missing+=(opentelemetry-sdk)
  $py -c "import opentelemetry.exporter.otlp.proto.grpc" 2>/dev/null || missing+=(opentelemetry-exporter-otlp-proto-grpc)
  $py -c "import opentelemetry.exporter.otlp.proto.http" 2>/dev/null || missing+=(opentelemetry-exporter-otlp-proto-http)
  $py -c "import rotel" 2>/dev/null || missing+=(rotel)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Python packages: ${missing[*]}"
    $py -m pip install -q --disable-pip-version-check "${missing[@]}"
  fi
fi

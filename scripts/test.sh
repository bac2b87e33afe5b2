#!/usr/bin/env bash
# Runs the whole test suite in release mode (the numeric tests are too slow in debug builds).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --build-tests -Xswiftc -enable-testing "$@"
swift test -c release --skip-build -Xswiftc -enable-testing "$@"

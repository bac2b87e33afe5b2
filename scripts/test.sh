#!/usr/bin/env bash
# Runs the whole test suite in release mode (the numeric tests are too slow in debug builds) and ends
# with one plain summary line: "tests: N passed, F failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh --build-tests "$@" >/dev/null
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
swift test -c release --skip-build --disable-swift-testing -Xswiftc -enable-testing "$@" 2>&1 | tee "$log" || status=$?
summary=$(grep -A1 "Test Suite 'All tests'" "$log" | grep -o "Executed [0-9]* tests, with [0-9]* failures" | tail -1)
executed=$(echo "$summary" | awk '{print $2}')
failures=$(echo "$summary" | awk '{print $5}')
if [ -z "$executed" ]; then
  echo "tests: 0 passed, 1 failed (no XCTest summary found)"
  exit 1
fi
echo "tests: $((executed - failures)) passed, $failures failed"
exit $status

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
# XCTest's closing line: "Executed N tests, with [K test(s) skipped and] F failures (...)".
summary=$(grep -A1 "Test Suite 'All tests'" "$log" | grep -o "Executed [0-9]* tests\?, with .* failures\?" | tail -1 || true)
executed=$(echo "$summary" | sed -n 's/^Executed \([0-9]*\) tests\?,.*/\1/p')
skipped=$(echo "$summary" | sed -n 's/.* with \([0-9]*\) tests\? skipped.*/\1/p')
failures=$(echo "$summary" | sed -n 's/.* \([0-9]*\) failures\?$/\1/p')
if [ -z "$executed" ]; then
  echo "tests: 0 passed, 1 failed (no XCTest summary found)"
  exit 1
fi
echo "tests: $((executed - failures - ${skipped:-0})) passed, $failures failed, ${skipped:-0} skipped"
exit $status

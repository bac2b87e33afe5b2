#!/usr/bin/env bash
# The one build every script and README command uses (release, testable), so running the example, the
# tests and the README's commands in any order builds the package once. Progress goes to stderr; the
# last line on stdout is the folder holding ppconvert, ppsample and ppfinetune.
#   scripts/build.sh                 build the executables, print the bin folder
#   scripts/build.sh --build-tests   also build the test targets (scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-c release -Xswiftc -enable-testing)
swift build "${flags[@]}" "$@" >&2
swift build "${flags[@]}" --show-bin-path

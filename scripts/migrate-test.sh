#!/usr/bin/env bash
# CI check of `ppconvert migrate` as a user runs it: a folder with two good checkpoints (the fixture
# SiT and the digits SiT), one truncated copy and a README. The first run must exit 65 with exactly
# one error line (naming the broken file), two outputs converted, one failed, the README skipped and
# migration.json written; the second run must skip both converted sources and write the same manifest
# bytes as a third.
#
#   scripts/migrate-test.sh [--bin DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
[ "${1:-}" = "--bin" ] && bin="$2"
[ -n "$bin" ] || bin="$(scripts/build.sh)"
dir=$(mktemp -d /tmp/ppflow-migrate-XXXXXX)
trap 'rm -rf "$dir"' EXIT
src="$dir/checkpoints"; dst="$dir/ppflow"
mkdir "$src"
cp Tests/Fixtures/sit.pt "$src/sit.pt"
cp examples/digits/digits-sit.zip "$src/digits-sit.zip"
head -c $(( $(stat -c %s Tests/Fixtures/sit.pt) / 2 )) Tests/Fixtures/sit.pt > "$src/broken.pt"
echo "two SiTs and a broken download" > "$src/README.txt"

fail=0
check() {  # check DESCRIPTION CONDITION...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what" >&2; fail=1; fi
}
count() { grep -c "\"$1\": \"$2\"" "$dst/migration.json" || true; }
migrate() {  # migrate: runs it, leaves the exit status in $status and stderr in $dir/err
  status=0
  "$bin/ppconvert" migrate "$src" "$dst" --heads 4 --objective velocity 2>"$dir/err" || status=$?
}

migrate
check "first run exits 65" [ "$status" = 65 ]
check "one error line on stderr" [ "$(wc -l < "$dir/err")" = 1 ]
check "the error names broken.pt" grep -q "$src/broken.pt" "$dir/err"
check "manifest written" [ -f "$dst/migration.json" ]
check "two converted" [ "$(count status converted)" = 2 ]
check "one failed" [ "$(count status failed)" = 1 ]
check "README.txt skipped" [ "$(count status skipped)" = 1 ]
check "outputs present" test -f "$dst/sit-ppf2/model.safetensors" -a -f "$dst/digits-sit-ppf2/model.safetensors"
first_err=$(cat "$dir/err")

migrate
check "second run still exits 65 (broken.pt is still broken)" [ "$status" = 65 ]
check "both converted sources skipped" [ "$(count reason "already converted from this source with these options")" = 2 ]
check "nothing converted again" [ "$(count status converted)" = 0 ]
cp "$dst/migration.json" "$dir/second.json"
migrate
check "a third run writes the same manifest bytes" cmp -s "$dir/second.json" "$dst/migration.json"

[ "$fail" = 0 ] || { echo "stderr of the first run: $first_err" >&2; echo "migrate test FAILED" >&2; exit 1; }
echo "migrate test passed"

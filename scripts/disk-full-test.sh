#!/usr/bin/env bash
# Disk full: ppconvert writes into a 5 MB tmpfs (needs root and mount; otherwise the write failure is
# injected with a file-size limit, as Tests/PPConvertTests/ReliabilityTests.swift does). Each case
# must exit 74 with one line on stderr, leave nothing new in the folder, and leave an existing output
# untouched.
#
#   scripts/disk-full-test.sh [--bin DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
[ "${1:-}" = "--bin" ] && bin="$2"
[ -n "$bin" ] || bin="$(scripts/build.sh)"
src=examples/digits/digits-sit.zip
dir=$(mktemp -d /tmp/ppflow-full-XXXXXX)
mode=tmpfs
if ! mount -t tmpfs -o size=5m tmpfs "$dir" 2>/dev/null; then mode="file-size limit (no mount allowed)"; fi
cleanup() { [ "$mode" = tmpfs ] && umount "$dir"; rm -rf "$dir"; }
trap cleanup EXIT
run() {  # run ARGS...: ppconvert on a full disk; prints "status|stderr"
  if [ "$mode" = tmpfs ]; then
    "$bin/ppconvert" "$@" 2>"$dir.err" >/dev/null && echo 0 || echo $?
  else
    sh -c "trap '' XFSZ; ulimit -f 1024; exec \"$bin/ppconvert\" \"\$@\"" sh "$@" 2>"$dir.err" >/dev/null && echo 0 || echo $?
  fi
}
digest() { (cd "$1" && find . -type f | sort | xargs -r sha256sum | sha256sum | cut -c1-16); }

echo "disk full via $mode"
"$bin/ppconvert" from-dit "$src" --no-verify --out "$dir/prev" >/dev/null
[ "$mode" = tmpfs ] && dd if=/dev/zero of="$dir/fill" bs=64k 2>/dev/null || true   # fill what is left
before=$(digest "$dir/prev"); listing=$(ls -A "$dir")
fail=0
for args in "from-dit $src --no-verify --out $dir/new" "from-dit $src --levels 3 --no-verify --out $dir/prev --force" \
            "convert $src $dir/w.pt --format torch" "convert $src $dir/w.safetensors --format safetensors"; do
  # shellcheck disable=SC2086
  status=$(run $args)
  lines=$(wc -l < "$dir.err")
  verdict=ok
  [ "$status" = 74 ] && [ "$lines" = 1 ] || verdict=FAIL
  [ "$(ls -A "$dir")" = "$listing" ] || verdict="FAIL (left: $(ls -A "$dir" | tr '\n' ' '))"
  [ "$(digest "$dir/prev")" = "$before" ] || verdict="FAIL (previous output changed)"
  [ "$verdict" = ok ] || fail=1
  echo "  ppconvert ${args//$dir/DIR}: exit $status, $lines line: $(cat "$dir.err")  $verdict"
done
rm -f "$dir.err"
exit $fail

#!/usr/bin/env bash
# Fault injection: kills `ppconvert from-dit` with SIGKILL at random moments and checks what is left.
#
#   scripts/kill-test.sh [--size small|xl] [--points N] [--seed S] [--bin DIR] [--work DIR]
#
#   small  examples/digits/digits-sit.zip (CI; each run takes about a second)
#   xl     /tmp/ppflow-bench/sit-xl-2-random.pt, the 2.7 GB SiT-XL/2-shaped checkpoint of
#          `ppconvert bench-io` (made by it if missing). Four points in five run with --no-verify
#          (the kills land in reading and writing), every 5th with the verification forward (minutes).
#
# Reference runs first: NEW = the conversion under test (levels 2), PREV = a different complete
# checkpoint (levels 3). Each point then: the output location holds PREV (odd points) or nothing (even
# points); from-dit is started and SIGKILLed after a random delay in [0, its reference time];
# afterwards the output location must hold exactly PREV, exactly NEW (the run finished first), or
# nothing (only when nothing was there before) -- anything else is a partial output. Temporary files or
# folders the killed run left beside the output are counted (they never carry the output's name) and
# removed. Every 4th point re-runs the conversion after the kill and requires NEW bit for bit.
# Points are added until N runs were really killed mid-run (at most 4N runs).
# Exit 1 if any partial output or any differing re-run is found.
set -euo pipefail
cd "$(dirname "$0")/.."

size=small; points=20; seed=1; bin=""; work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size="$2"; shift 2 ;;
    --points) points="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done
[ -n "$bin" ] || bin="$(scripts/build.sh)"
ppconvert="$bin/ppconvert"
case "$size" in
  small) source=examples/digits/digits-sit.zip; extra=() ;;
  xl)
    source=/tmp/ppflow-bench/sit-xl-2-random.pt; extra=(--heads 16 --objective velocity)
    if [ ! -f "$source" ]; then "$ppconvert" bench-io --dir /tmp/ppflow-bench --repeats 1 >/dev/null; fi ;;
  *) echo "--size small|xl" >&2; exit 64 ;;
esac
[ -n "$work" ] || work=$(mktemp -d /tmp/ppflow-kill-XXXXXX)
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
RANDOM=$seed

now() { date +%s.%N; }
digest() {  # the folder's files and their hashes, one line; "absent" if nothing is there
  if [ -e "$1" ]; then (cd "$1" && find . -type f | sort | xargs -r sha256sum | sha256sum | cut -c1-16); else echo absent; fi
}
convert() {  # convert OUT LEVELS [flags...]
  local out=$1 levels=$2; shift 2
  "$ppconvert" from-dit "$source" --levels "$levels" --out "$out" --force "${extra[@]}" "$@" >/dev/null 2>&1
}

echo "kill test: ppconvert from-dit on $source ($size), $points points, seed $seed"
[ "$size" = small ] && convert "$work/new" 2   # warms the page cache; the next runs are timed
t0=$(now); convert "$work/new" 2; t_verify=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
t0=$(now); convert "$work/new-nv" 2 --no-verify; t_noverify=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
convert "$work/prev" 3 --no-verify
NEW=$(digest "$work/new"); PREV=$(digest "$work/prev")
[ "$NEW" = "$(digest "$work/new-nv")" ] || { echo "verified and unverified conversions differ" >&2; exit 1; }
rm -rf "$work/new-nv"
echo "reference: ${t_verify}s with verification, ${t_noverify}s without; NEW $NEW, PREV $PREV"

killed=0; finished=0; partial=0; leftovers=0; reruns=0; rerun_bad=0
declare -A states=()
i=0
while [ $killed -lt "$points" ] && [ $i -lt $((4 * points)) ]; do
  i=$((i + 1))
  out="$work/run/out"
  rm -rf "$work/run"; mkdir -p "$work/run"
  had_prev=0
  if [ $((i % 2)) -eq 1 ]; then cp -r "$work/prev" "$out"; had_prev=1; fi
  flags=()
  total=$t_verify
  if [ "$size" = xl ] && [ $((i % 5)) -ne 0 ]; then flags=(--no-verify); total=$t_noverify; fi
  if [ "$size" = small ] && [ $((i % 3)) -eq 0 ]; then flags=(--no-verify); total=$t_noverify; fi
  delay=$(awk -v t="$total" -v r="$RANDOM" 'BEGIN { printf "%.3f", t * r / 32767 }')
  "$ppconvert" from-dit "$source" --levels 2 --out "$out" --force "${extra[@]}" "${flags[@]}" >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  set +e; wait "$pid" 2>/dev/null; rc=$?; set -e
  if [ $rc -eq 137 ]; then killed=$((killed + 1)); what=killed; else finished=$((finished + 1)); what="exit $rc"; fi
  state=$(digest "$out")
  verdict=ok
  if [ "$state" = "$NEW" ]; then seen=new
  elif [ "$state" = "$PREV" ] && [ $had_prev -eq 1 ]; then seen=prev
  elif [ "$state" = absent ] && [ $had_prev -eq 0 ]; then seen=nothing
  else seen="PARTIAL($state)"; verdict=FAIL; partial=$((partial + 1)); fi
  states[$seen]=$(( ${states[$seen]:-0} + 1 ))
  left=$(find "$work/run" -mindepth 1 -maxdepth 1 -name '.*' | wc -l)
  leftovers=$((leftovers + left))
  rerun=""
  if [ $((i % 4)) -eq 0 ]; then
    reruns=$((reruns + 1))
    convert "$out" 2 --no-verify || true
    if [ "$(digest "$out")" = "$NEW" ]; then rerun=", re-run identical"; else rerun=", RE-RUN DIFFERS"; rerun_bad=$((rerun_bad + 1)); verdict=FAIL; fi
  fi
  printf '  point %2d: %-8s after %6.2fs of ~%6.2fs%s: output %s, %d temporaries left%s  %s\n' \
    "$i" "$what" "$delay" "$total" "$([ ${#flags[@]} -gt 0 ] && echo ' (--no-verify)')" "$seen" "$left" "$rerun" "$verdict"
done
rm -rf "$work/run"
summary="runs started $i: $killed killed mid-run (SIGKILL), $finished finished before the kill; outputs found:"
for k in "${!states[@]}"; do summary+=" $k ${states[$k]}"; done
echo "$summary"
echo "partial outputs: $partial; temporaries left beside the output: $leftovers; re-runs after a kill: $reruns, differing: $rerun_bad"
[ $partial -eq 0 ] && [ $rerun_bad -eq 0 ] && [ $killed -ge "$points" ]

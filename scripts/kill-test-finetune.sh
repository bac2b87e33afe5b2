#!/usr/bin/env bash
# Fault injection for ppfinetune: SIGKILL at random moments, then --resume, compared bit for bit with
# a run that was never interrupted.
#
#   scripts/kill-test-finetune.sh [--points N] [--steps S] [--every K] [--seed X] [--bin DIR]
#
# recipes/digits-ppf2.json with S steps (default 12), a checkpoint every K steps (default 3), all
# checkpoints kept, the repeat initializer, batch 16, one thread (BLAS sums in thread-dependent order).
# A reference run gives the digest of every checkpoint folder (checkpoints/step-*, final). Each point:
# a fresh run is SIGKILLed after a random delay in [0, reference time]; every checkpoint folder then
# present must equal the reference's folder of that name (a complete checkpoint; anything else is a
# partial one); every third point is killed a second time during its resume; finally the run is
# resumed to the end (or started again if no checkpoint was written yet) and every checkpoint folder
# and final/ must equal the reference bit for bit. Exit 1 on any partial or differing checkpoint, or
# if fewer than N runs were really killed mid-run (points are added up to 4N runs).
set -euo pipefail
cd "$(dirname "$0")/.."

points=20; steps=12; every=3; seed=1; bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --points) points="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --every) every="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done
[ -n "$bin" ] || bin="$(scripts/build.sh)"
ppfinetune="$bin/ppfinetune"
recipe=recipes/digits-ppf2.json
options=(--steps "$steps" --set checkpoint_every="$every" --set keep_checkpoints=1000 --set validate_every="$steps"
         --set start.from_dit.initializer=repeat --set start.from_dit.detail_scale=0 --set batch_size=16 --threads 1)
work=$(mktemp -d /tmp/ppflow-kill-ft-XXXXXX)
trap 'rm -rf "$work"' EXIT
RANDOM=$seed

now() { date +%s.%N; }
digest() { (cd "$1" && find . -type f | sort | xargs -r sha256sum | sha256sum | cut -c1-16); }
checkpoints() { [ -d "$1" ] || return 0; (cd "$1" && { ls -d checkpoints/step-* final 2>/dev/null || true; }) }   # relative names
start() {  # start RUN: resume if a checkpoint exists, else a fresh run; in the background, pid in $pid
  if [ -n "$(checkpoints "$1")" ]; then
    "$ppfinetune" --recipe "$recipe" --resume "$1" "${options[@]}" >/dev/null 2>"$work/err" &
  else
    rm -rf "$1"   # nothing to resume: what a user does, start again
    "$ppfinetune" --recipe "$recipe" --out "$1" "${options[@]}" >/dev/null 2>"$work/err" &
  fi
  pid=$!
}
check() {  # check RUN: every checkpoint folder present equals the reference's; prints the bad ones
  local bad="" c
  for c in $(checkpoints "$1"); do
    [ "${ref[$c]:-missing}" = "$(digest "$1/$c")" ] || bad+=" $c"
  done
  echo "$bad"
}

echo "kill test: ppfinetune $recipe, $steps steps, checkpoint every $every, $points points, seed $seed"
t0=$(now)
"$ppfinetune" --recipe "$recipe" --out "$work/ref" "${options[@]}" >/dev/null
total=$(awk -v a="$(now)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
declare -A ref=()
for c in $(checkpoints "$work/ref"); do ref[$c]=$(digest "$work/ref/$c"); done
echo "reference: ${total}s, checkpoints: ${!ref[*]}"

killed=0; finished=0; partial=0; differing=0; leftovers=0; i=0
while [ $killed -lt "$points" ] && [ $i -lt $((4 * points)) ]; do
  i=$((i + 1))
  run="$work/run"
  rm -rf "$run"
  notes=""
  kills=1; [ $((i % 3)) -eq 0 ] && kills=2
  for k in $(seq 1 $kills); do
    delay=$(awk -v t="$total" -v r="$RANDOM" 'BEGIN { printf "%.3f", t * r / 32767 }')
    start "$run"
    sleep "$delay"
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    set +e; wait "$pid" 2>/dev/null; rc=$?; set -e
    if [ $rc -eq 137 ]; then killed=$((killed + 1)); notes+=" killed@${delay}s"; else finished=$((finished + 1)); notes+=" exit$rc@${delay}s"; fi
    have=$(checkpoints "$run" | wc -l)
    bad=$(check "$run")
    notes+="($have ckpt)"
    if [ -n "$bad" ]; then partial=$((partial + 1)); notes+=" PARTIAL:$bad"; fi
    left=$( { find "$run" "$run/checkpoints" -mindepth 1 -maxdepth 1 -name '.*' 2>/dev/null || true; } | wc -l)
    leftovers=$((leftovers + left))
  done
  # Run to the end and compare everything with the reference.
  start "$run"; set +e; wait "$pid"; rc=$?; set -e
  verdict=ok
  if [ $rc -ne 0 ]; then verdict="FAIL (resume exit $rc: $(head -1 "$work/err"))"; differing=$((differing + 1))
  else
    bad=$(check "$run")
    [ -d "$run/final" ] || bad+=" final(missing)"
    if [ -n "$bad" ]; then verdict="FAIL (differs:$bad)"; differing=$((differing + 1)); fi
  fi
  [ -n "$(echo "$notes" | grep PARTIAL || true)" ] && verdict=FAIL
  printf '  point %2d:%s; resumed to the end: %s\n' "$i" "$notes" "$verdict"
done
echo "runs started: $((killed + finished)), killed mid-run (SIGKILL): $killed, finished before the kill: $finished"
echo "partial checkpoints found: $partial; resumed runs differing from the uninterrupted one: $differing; temporaries left: $leftovers"
[ $partial -eq 0 ] && [ $differing -eq 0 ] && [ $killed -ge "$points" ]

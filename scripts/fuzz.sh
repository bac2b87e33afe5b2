#!/usr/bin/env bash
# Builds the libFuzzer targets of the readers and runs each for a given time, one after the other.
#
#   scripts/fuzz.sh [-t SECONDS] [--build-only] [--ci] [TARGET ...]
#
# Targets (entry files in Tests/Fuzz/, seed corpora in Tests/Fuzz/corpus/<target>/):
#   safetensors  SafetensorsFile.parse: header, schema, layout check; every tensor's reach is checked
#   pickle       the restricted Unpickler, then state-dict discovery and summaries over its result
#   zip          CheckpointLoader on zip bytes: ZipArchive (libzip + own central directory), torch
#                archives, zipped folders (native, diffusers, sharded, single weights); every entry read
#   config       config.json: strict JSON (parse/serialize/parse round trip), native/diffusers/sidecar
#                interpretation and the model configuration derived from it
#   recipe       the fine-tuning recipe parser (only when Sources/PPTrain/Recipe*.swift exist)
#
# Each run uses AddressSanitizer, a 10 s per-input timeout (hangs), -malloc_limit_mb (no single
# allocation beyond the limit: a reader that allocates from a header's numbers fails here) and an RSS
# limit. New inputs go to .build-fuzz/corpus/<target>/ (not committed; `-merge=1` it into the seed
# corpus by hand when worthwhile). Crashes land in .build-fuzz/artifacts/<target>/. Every run appends
# a line to .build-fuzz/runs.tsv (date, target, seconds, executions, coverage, features, crashes).
# --ci: run on the committed corpus only (nothing new is kept) and exit 1 on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
build_only=0
ci=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --ci) ci=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
have_recipe=0
ls Sources/PPTrain/Recipe*.swift >/dev/null 2>&1 && have_recipe=1
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors pickle zip config)
  [ $have_recipe -eq 1 ] && targets+=(recipe)
fi

B=.build-fuzz
M=$B/modules
mkdir -p "$M" "$B/bin"
SAN=(-sanitize=fuzzer,address)
# The modules, C libraries and resources each target needs come from Package.swift (scripts/package-graph.py,
# from the entry file's imports), so this build never keeps a second copy of the module graph.
declare -A GRAPH
for t in "${targets[@]}"; do GRAPH[$t]=$(python3 scripts/package-graph.py "Tests/Fuzz/$t.swift" Tests/Fuzz/Support.swift); done
all_lines=$(printf '%s\n' "${GRAPH[@]}")
systems=$(echo "$all_lines" | awk '$1 == "system" { print $2 }' | sort -u)
pkgs=$(echo "$all_lines" | awk '$1 == "system" && NF > 2 { print $3 }' | sort -u)
# Each module in its own Swift language mode, the entry files in the package's (all from Package.swift).
language=$(echo "$all_lines" | awk '$1 == "language" { print $2; exit }')
SWIFTFLAGS=(-O -g -parse-as-library -enable-testing -I "$M")
for name in $systems; do SWIFTFLAGS+=(-I "Sources/$name"); done
# shellcheck disable=SC2086
for flag in $(pkg-config --cflags-only-I $pkgs); do SWIFTFLAGS+=(-Xcc "$flag"); done

# SwiftPM's embedInCode resources, as the accessor it generates (PackageResources.<file_name>).
resources_for() {
  local name=$1 out=$M/$1-resources.swift
  local files; files=$(echo "$all_lines" | awk -v n="$name" '$1 == "resource" && $2 == n { print $3 }' | sort -u)
  [ -n "$files" ] || return 0
  local stale=0 f
  [ -f "$out" ] || stale=1
  for f in $files; do [ "$f" -nt "$out" ] && stale=1; done
  if [ $stale -eq 1 ]; then
    # shellcheck disable=SC2086
    python3 - "$out" $files <<'PY'
import os, re, sys
lines = ["enum PackageResources {"]
for path in sys.argv[2:]:
    name = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(path))
    lines.append("    static let %s: [UInt8] = [%s]" % (name, ",".join(map(str, open(path, "rb").read()))))
open(sys.argv[1], "w").write("\n".join(lines + ["}"]) + "\n")
PY
  fi
  echo "$out"
}

# One Swift module: .swiftmodule + one object file, rebuilt when a source or an earlier module is newer.
build_module() {
  local name=$1; shift
  local obj=$M/$name.o
  local stale=0
  local extra; extra=$(resources_for "$name")
  [ -f "$obj" ] || stale=1
  for f in Sources/$name/*.swift $extra Package.swift "$@"; do [ "$f" -nt "$obj" ] && stale=1; done
  if [ $stale -eq 1 ]; then
    echo "building $name" >&2
    # shellcheck disable=SC2086
    swiftc "${SWIFTFLAGS[@]}" "${SAN[@]}" -swift-version "$(mode_of "$name")" -module-name "$name" -wmo -emit-module -emit-module-path "$M/$name.swiftmodule" \
      -emit-object -o "$obj" Sources/$name/*.swift $extra
  fi
}

modules_for() { echo "${GRAPH[$1]}" | awk '$1 == "module" { print $2 }'; }
mode_of() { echo "$all_lines" | awk -v n="$1" '$1 == "module" && $2 == n { print $3; exit }'; }

build_modules() {
  local t name built=""
  for t in "${targets[@]}"; do
    local before=()
    for name in $(modules_for "$t"); do
      if ! printf '%s\n' $built | grep -qx "$name"; then
        build_module "$name" "${before[@]}"
        built="$built $name"
      fi
      before+=("$M/$name.o")
    done
  done
}

objects_for() { modules_for "$1" | sed "s|^|$M/|; s|$|.o|" | tr '\n' ' '; }
libraries_for() {
  local t=$1
  # shellcheck disable=SC2046
  pkg-config --libs $(echo "${GRAPH[$t]}" | awk '$1 == "system" && NF > 2 { print $3 }') | tr ' ' '\n' | grep . | sed 's/^/-Xlinker /' | tr '\n' ' '
}

build_target() {
  local t=$1 exe=$B/bin/fuzz-$t
  local objs; objs=$(objects_for "$t")
  local stale=0
  [ -f "$exe" ] || stale=1
  for f in Tests/Fuzz/$t.swift Tests/Fuzz/Support.swift $objs; do [ "$f" -nt "$exe" ] && stale=1; done
  if [ $stale -eq 1 ]; then
    echo "linking fuzz-$t" >&2
    # shellcheck disable=SC2086
    swiftc "${SWIFTFLAGS[@]}" "${SAN[@]}" -swift-version "$language" -module-name Fuzz$t Tests/Fuzz/$t.swift Tests/Fuzz/Support.swift $objs \
      -o "$exe" $(libraries_for "$t") 2>&1 \
      | { grep -v "Cannot export local symbol" || true; } >&2
  fi
}

build_modules
for t in "${targets[@]}"; do build_target "$t"; done
[ $build_only -eq 1 ] && exit 0

# Per-target limits: inputs up to 64 KiB; one allocation at most 32 MiB (the zip target may inflate a
# deflated entry, at most 1032x its compressed size, so it gets 96 MiB).
malloc_limit() { case "$1" in zip) echo 96 ;; *) echo 32 ;; esac; }

printf '%-12s %8s %12s %8s %8s %8s\n' target seconds executions cov ft crashes
status=0
for t in "${targets[@]}"; do
  seeds=Tests/Fuzz/corpus/$t
  work=$B/corpus/$t
  art=$B/artifacts/$t/
  mkdir -p "$work" "$art"
  log=$B/logs/$t-$(date +%Y%m%d-%H%M%S).log
  mkdir -p "$B/logs"
  findings() { ls "$art" | grep -cE '^(crash|timeout|oom|leak)-' || true; }   # slow-unit-* are notes, not failures
  before=$(findings)
  dirs=("$work" "$seeds")
  if [ $ci -eq 1 ]; then work=$(mktemp -d); dirs=("$work" "$seeds"); fi
  set +e
  SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=0 \
    nice -n 10 "$B/bin/fuzz-$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb="$(malloc_limit "$t")" -print_final_stats=1 -artifact_prefix="$art" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  [ $ci -eq 1 ] && rm -rf "$work"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  crashes=$(( $(findings) - before ))
  [ $rc -ne 0 ] && [ $crashes -eq 0 ] && crashes=1   # a failure without an artifact still counts
  printf '%-12s %8s %12s %8s %8s %8s\n' "$t" "$seconds" "${execs:-0}" "${cov:-0}" "${ft:-0}" "$crashes"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -Is)" "$t" "$seconds" "${execs:-0}" "${cov:-0}" "${ft:-0}" "$crashes" >> "$B/runs.tsv"
  if [ $crashes -gt 0 ]; then
    status=1
    echo "  $t: see $log and $art" >&2
    grep -m3 -E 'ERROR|SUMMARY|Fatal error|deadly signal' "$log" | sed 's/^/  /' >&2 || true
  fi
done
exit $status

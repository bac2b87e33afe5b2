#!/usr/bin/env bash
# Ready-to-copy CI job: convert every DiT/SiT checkpoint in a folder (a trainer's checkpoints/, a folder
# of downloaded models) to verified PPFlow folders, skipping what an earlier run already converted from
# the same bytes with the same options. Fails (exit 65) when any checkpoint could not be converted; the
# manifest OUT_DIR/migration.json lists every file with its status, hashes and verification numbers.
#
#   converters/ci-migrate.sh SRC_DIR [ppconvert migrate options, e.g. --levels 2,3 --objective velocity]
#
# Environment: PPCONVERT (the binary; default: build it), OUT_DIR (default: ppflow-migrated). Keep OUT_DIR
# between runs (a CI cache or artifact) and unchanged sources cost one hash each.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source_dir="$1"; shift
if [ -z "${PPCONVERT:-}" ]; then
  (cd "$here/.." && swift build -c release --product ppconvert >/dev/null)
  PPCONVERT="$(cd "$here/.." && swift build -c release --show-bin-path)/ppconvert"
fi
out_dir="${OUT_DIR:-ppflow-migrated}"
status=0
"$PPCONVERT" migrate "$source_dir" "$out_dir" "$@" || status=$?
if [ -f "$out_dir/migration.json" ]; then
  echo "manifest: $out_dir/migration.json"
  grep -A3 '"summary"' "$out_dir/migration.json" | tail -n 3 | tr -d ' ,' | paste -sd' ' -
fi
exit $status

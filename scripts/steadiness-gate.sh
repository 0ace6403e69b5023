#!/usr/bin/env bash
# The steadiness gate (issue 14): `.ci/run` from fresh clones of this repository's HEAD, N times in
# a row (default 3), each while one CPU-heavy process (a busy loop) runs alongside. Stops at the
# first run that fails. Logs: /tmp/steadiness-gate.<run>.log.
#   bash scripts/steadiness-gate.sh [runs]
# Node.js builds already in .cache/node-matrix are copied into each clone (no new download).
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-3}"
for i in $(seq 1 "$runs"); do
  dir="$(mktemp -d /tmp/steadiness-gate.XXXXXX)"
  git clone -q "$repo" "$dir"
  if [ -d "$repo/.cache/node-matrix" ]; then
    mkdir -p "$dir/.cache" && cp -r "$repo/.cache/node-matrix" "$dir/.cache/"
  fi
  (while :; do :; done) &
  hog=$!
  start=$SECONDS
  (cd "$dir" && bash .ci/run) > "/tmp/steadiness-gate.$i.log" 2>&1
  status=$?
  kill "$hog"
  echo "run $i of $runs: exit $status after $((SECONDS - start)) s ($(git -C "$dir" rev-parse --short HEAD), busy loop alongside): $(tail -n 1 "/tmp/steadiness-gate.$i.log")"
  rm -rf "$dir"
  [ "$status" -eq 0 ] || exit "$status"
done

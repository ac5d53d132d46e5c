#!/usr/bin/env bash
# Builds latchkey and loadgen (release) and runs every HTTP scenario on
# loopback, each against its baseline in the same run, then prints a summary
# table. Bounded: about 3 minutes on the 2-core machine, plus 3-6 minutes the
# first time, to seed the one-million-key registry (kept for later runs).
#
#   tools/loadgen/run-all.sh                 # everything
#   KEYS=100000 DUR=5s tools/loadgen/run-all.sh   # quicker
#   RESEED=1 tools/loadgen/run-all.sh             # seed the big registry again
#
# Environment: CARGO_TARGET_DIR (default: the workspace target/), DUR (measured
# time per load, 10s), CMP_DUR (per compare segment, 5s), KEYS (registry size,
# 1000000), OUT (results directory, $CARGO_TARGET_DIR/loadgen), RESEED=1 seeds
# the big registry again instead of reusing $OUT/registry-$KEYS (seeding a
# million keys takes 3-6 minutes here, most of the budget), KEEP=1 keeps the
# scratch directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
DUR="${DUR:-10s}"
CMP_DUR="${CMP_DUR:-5s}"
KEYS="${KEYS:-1000000}"
OUT="${OUT:-$CARGO_TARGET_DIR/loadgen}"

cargo build --release --quiet -p latchkey -p loadgen
LK="$CARGO_TARGET_DIR/release/latchkey"
LG="$CARGO_TARGET_DIR/release/loadgen"

mkdir -p "$OUT"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$OUT/results-$STAMP.jsonl"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/loadgen-run.XXXXXX")"
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

step() { echo; echo "== $* (load: $(cut -d' ' -f1-3 /proc/loadavg))"; }
run() { "$LG" --results "$RESULTS" "$@"; }

echo "date:    $(date -u +%FT%TZ)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
echo "machine: $(nproc) cores, $(uname -r)"
echo "uptime:  $(uptime)"

step "fsync latency of the data disk"
run fsync-probe --dir "$WORK"
step "POST /v1/keys, durable, 64 connections"
run create-keys --spawn "$LK" --connections 64 --duration "$DUR"
step "POST /v1/keys, durable, 1 connection (latency floor)"
run create-keys --spawn "$LK" --connections 1 --duration 3s
step "GET /.well-known/jwks.json vs static bytes"
run compare --spawn "$LK" --path /.well-known/jwks.json --connections 64 --duration "$CMP_DUR" --rounds 2
step "GET /v1/status/0 vs static bytes"
run compare --spawn "$LK" --path /v1/status/0 --connections 64 --duration "$CMP_DUR" --rounds 2
step "baseline registry: seed 1000 keys, start-up, memory, list latency"
run seed --data-dir "$WORK/small/data" --keys-dir "$WORK/small/keys" --token-file "$WORK/small/token" --count 1000
run startup --latchkey-bin "$LK" --data-dir "$WORK/small/data" --keys-dir "$WORK/small/keys" \
  --token-file "$WORK/small/token" --runs 3 --connections 64 --duration "$DUR"

BIG="$OUT/registry-$KEYS"
if [ -f "$BIG/token" ] && [ "${RESEED:-0}" != 1 ]; then
  step "reusing the $KEYS-key registry seeded earlier in $BIG (RESEED=1 seeds a new one)"
else
  step "seed $KEYS keys into $BIG (kept for later runs)"
  rm -rf "$BIG"
  run seed --data-dir "$BIG/data" --keys-dir "$BIG/keys" --token-file "$BIG/token" --count "$KEYS"
fi
step "start-up, memory and list latency with $KEYS keys"
run startup --latchkey-bin "$LK" --data-dir "$BIG/data" --keys-dir "$BIG/keys" \
  --token-file "$BIG/token" --runs 3 --connections 64 --duration "$DUR"

echo
echo "uptime:  $(uptime)"
echo "results: $RESULTS"
echo
"$LG" summary "$RESULTS" | tee "$OUT/summary-$STAMP.md"

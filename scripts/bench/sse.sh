#!/usr/bin/env bash
# SSE fan-out benchmark (docs/PERFORMANCE.md): the release server on a throwaway PostgreSQL, one
# job, N subscribers on its event stream, and an event recorded through the job event log
# (INSERT + NOTIFY, as the processor does) every 100 ms. Reports delivery latency
# (p50/p90/p99/max), missing deliveries, and the server's RSS and CPU. Two runs:
# 1,000 subscribers × 50 events (target: p99 ≤ 250 ms) and 10,000 × 10 (target: RSS ≤ 200 MB).
#
#   scripts/bench/sse.sh [more bench_sse arguments, for both runs]
#   scripts/bench/sse.sh --floor   the same two sizes on a bare axum SSE server (bench_sse_floor):
#                                  what the connections cost without our stack
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"

if [ "${1:-}" = "--floor" ]; then
  shift
  log "building bench_sse_floor (release)"
  cargo build --locked --release -p server --example bench_sse_floor
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
  for n in 1000 10000; do
    "$CARGO_TARGET_DIR/release/examples/bench_sse_floor" --subscribers "$n" "$@"
  done
  exit 0
fi

prepare_bench bench_sse

echo
echo "$(nproc) cores, open-file limit $(ulimit -n)"
log "1,000 subscribers × 50 events (latency)"
"$BENCH" --subscribers 1000 --events 50 --interval-ms 100 "$@"
log "10,000 subscribers × 10 events (memory)"
"$BENCH" --subscribers 10000 --events 10 --interval-ms 100 "$@"

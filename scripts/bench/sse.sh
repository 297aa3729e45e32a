#!/usr/bin/env bash
# SSE fan-out benchmark (docs/PERFORMANCE.md): the release server on a throwaway PostgreSQL, one
# job, N subscribers on its event stream, and an event recorded through the job event log
# (INSERT + NOTIFY, as the processor does) every 100 ms. Reports delivery latency
# (p50/p90/p99/max), missing deliveries, and the server's RSS and CPU. Two runs:
# 1,000 subscribers × 50 events (target: p99 ≤ 250 ms) and 10,000 × 10 (target: RSS ≤ 200 MB).
#
#   scripts/bench/sse.sh [more bench_sse arguments, for both runs]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"

install_apt postgresql
if [ ! -f "$SITE/pkg/lora-pipeline.js" ]; then
  # The binary embeds the site; build it once, as scripts/run does.
  install_rust_tools
  install_npm_tools
  build_site
fi
log "building lora-pipeline and bench_sse (release)"
cargo build --locked --release -p server --bin lora-pipeline --example bench_sse
export LORA_PIPELINE_BIN="$CARGO_TARGET_DIR/release/lora-pipeline"
BENCH="$CARGO_TARGET_DIR/release/examples/bench_sse"

start_test_postgres
trap stop_test_postgres EXIT
# Every subscriber is a socket in the benchmark and one in the server (which inherits the limit).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

echo
echo "$(nproc) cores, open-file limit $(ulimit -n)"
log "1,000 subscribers × 50 events (latency)"
"$BENCH" --subscribers 1000 --events 50 --interval-ms 100 "$@"
log "10,000 subscribers × 10 events (memory)"
"$BENCH" --subscribers 10000 --events 10 --interval-ms 100 "$@"

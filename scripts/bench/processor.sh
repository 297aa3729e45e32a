#!/usr/bin/env bash
# Job processor benchmark (docs/PERFORMANCE.md): the release server, configured for RunPod, on a
# throwaway PostgreSQL, against a simulated RunPod endpoint that answers after 50 ms. 1,000 jobs
# are created through the API; once all are submitted, 60 s of polling are measured: the refresh
# interval each job gets, the /status and /stream calls per 10 s window, and the server's CPU and
# memory. Targets: refresh ≤ 5 s per job, CPU ≤ 25% of a core, ≤ 2,000 /status and ≤ 2,000
# /stream calls per 10 s. The second run has the endpoint enforce RunPod's rate limits itself
# (429 beyond them) and counts the 429s.
#
#   scripts/bench/processor.sh [more bench_processor arguments, for both runs]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"

install_apt postgresql
if [ ! -f "$SITE/pkg/lora-pipeline.js" ]; then
  # The binary embeds the site; build it once, as scripts/run does.
  install_rust_tools
  install_npm_tools
  build_site
fi
log "building lora-pipeline and bench_processor (release)"
cargo build --locked --release -p server --bin lora-pipeline --example bench_processor
export LORA_PIPELINE_BIN="$CARGO_TARGET_DIR/release/lora-pipeline"
BENCH="$CARGO_TARGET_DIR/release/examples/bench_processor"

start_test_postgres
trap stop_test_postgres EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

echo
echo "$(nproc) cores"
log "1,000 jobs, 50 ms RunPod latency, 60 s measured"
"$BENCH" --jobs 1000 --latency-ms 50 --measure-s 60 "$@"
log "the same, with RunPod's rate limits enforced by the simulated endpoint"
"$BENCH" --jobs 1000 --latency-ms 50 --measure-s 60 --rate-limit "$@"

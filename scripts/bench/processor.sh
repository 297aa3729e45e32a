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

prepare_bench bench_processor

echo
echo "$(nproc) cores"
log "1,000 jobs, 50 ms RunPod latency, 60 s measured"
"$BENCH" --jobs 1000 --latency-ms 50 --measure-s 60 "$@"
log "the same, with RunPod's rate limits enforced by the simulated endpoint"
"$BENCH" --jobs 1000 --latency-ms 50 --measure-s 60 --rate-limit "$@"

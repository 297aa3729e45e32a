#!/usr/bin/env bash
# Load test (docs/PERFORMANCE.md, issue 16): the release server on a throwaway PostgreSQL, 200
# simulated users browsing pages and the API (2 s think time) and 50 jobs on a simulated RunPod
# streaming live events to their owners, for 5 minutes; p50/p99 per route, errors, server CPU
# and memory. Loopback only; bounded by --seconds. Exits 1 on any error.
#
#   scripts/bench/load.sh [bench_load arguments: --users U --jobs J --seconds S --think-ms MS]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"

prepare_bench bench_load

echo
"$BENCH" "$@"

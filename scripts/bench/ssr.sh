#!/usr/bin/env bash
# SSR and API throughput (docs/PERFORMANCE.md, issue 14): the release server on a throwaway
# PostgreSQL, one signed-in user with 50 jobs, and wrk at 64 connections on the Jobs page and
# on /api/jobs, with and without brotli, plus /api/auth/me as the floor. Loopback only; each run
# is bounded (10 s by default).
#
#   scripts/bench/ssr.sh [bench_ssr arguments: --connections N --seconds S --jobs J]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"

install_apt wrk
prepare_bench bench_ssr

echo
"$BENCH" "$@"

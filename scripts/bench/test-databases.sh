#!/usr/bin/env bash
# Test-suite benchmark (docs/PERFORMANCE.md): the Rust integration suite with a database
# migrated per test (LP_TEST_NO_TEMPLATE=1, as before) and with each test's database cloned
# from a template migrated once per run. Prints wall-clock seconds for each, twice: the whole
# suite, and only the database-bound tests (no worker training).
#
#   ./scripts/bench/test-databases.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
install_worker_env
start_test_postgres
trap stop_test_postgres EXIT
cargo nextest run --locked -p engine -p app -p server --no-run >/dev/null 2>&1
DB_BOUND='binary(/api_|tenant_isolation|queue_leases|runpod_faults/)'
run() {
  local label="$1"; shift
  local started=$SECONDS
  "$@" >/tmp/lp-bench-tests.log 2>&1 || { tail -30 /tmp/lp-bench-tests.log; exit 1; }
  local summary
  summary="$(grep -E '^\s+Summary' /tmp/lp-bench-tests.log | tail -1 | sed 's/^ *//')"
  printf '%-44s %4d s   (%s)\n' "$label" $((SECONDS - started)) "$summary"
}
for round in 1 2; do
  run "whole suite, migrate per test (round $round)" env LP_TEST_NO_TEMPLATE=1 cargo nextest run --locked -p engine -p app -p server
  run "whole suite, template clone (round $round)" cargo nextest run --locked -p engine -p app -p server
  run "database-bound, migrate per test (round $round)" env LP_TEST_NO_TEMPLATE=1 cargo nextest run --locked -p server -E "$DB_BOUND"
  run "database-bound, template clone (round $round)" cargo nextest run --locked -p server -E "$DB_BOUND"
done

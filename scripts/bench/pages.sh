#!/usr/bin/env bash
# Page-weight benchmark (docs/PERFORMANCE.md, issue 14): builds the site and the server, serves
# them on embedded defaults (open registration, a throwaway DATA_DIR, loopback only), and runs
# scripts/bench/pages.mjs: bytes as sent and time to hydrated for every page, median of 5 cold
# loads. With a URL, measures that server instead (it must allow registration).
#
#   scripts/bench/pages.sh [BASE_URL] [RUNS]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
if [ -n "${1:-}" ]; then
  node scripts/bench/pages.mjs "$@"
  exit
fi
install_worker_env
# Chromium and playwright-core (end2end's packages), as scripts/test installs them.
install_apt chromium
[ -d end2end/node_modules/playwright-core ] || (cd end2end && npm ci --silent --no-audit --no-fund)
build_site
# The release server when ./scripts/run built one (server timings as deployed), else debug.
BIN="$CARGO_TARGET_DIR/release/lora-pipeline"
if [ ! -x "$BIN" ] || [ "$BIN" -ot "$ROOT/target/site/pkg/lora-pipeline-core.js" ]; then
  cargo build --locked --quiet -p server
  BIN="$CARGO_TARGET_DIR/debug/lora-pipeline"
  log "measuring the debug server (run ./scripts/run first for release server timings)"
fi
DATA="$(mktemp -d /tmp/lora-pipeline-bench.XXXXXX)"
chmod 755 "$DATA"
PORT="$(free_port)"
env -u DATABASE_URL DATA_DIR="$DATA/data" BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn REGISTRATION=open \
  "$BIN" serve > "$DATA/serve.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 240); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/serve.log"; exit 1; }
  sleep 0.5
done
node scripts/bench/pages.mjs "http://127.0.0.1:$PORT" "${2:-5}"

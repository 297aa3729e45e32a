#!/usr/bin/env bash
# CLI upload benchmark (docs/PERFORMANCE.md): `lora-pipeline datasets upload` of a generated
# chat JSONL of SIZE_MB (default 300) to a server on embedded defaults on loopback, then the wait
# for its verdict. Prints the file size, the upload's wall time and rate, the CLI's peak RSS
# (it streams the file: the RSS must not grow with the size), and the validation's wait.
#
#   scripts/bench/cli_upload.sh [SIZE_MB]
#   LORA_PIPELINE_BIN=/path/to/lora-pipeline scripts/bench/cli_upload.sh 500   # a given build
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
SIZE_MB="${1:-300}"

install_apt postgresql time
BIN="${LORA_PIPELINE_BIN:-$CARGO_TARGET_DIR/release/lora-pipeline}"
if [ ! -x "$BIN" ]; then
  install_rust_tools
  install_npm_tools
  [ -f "$SITE/pkg/lora-pipeline-core.js" ] || build_site
  log "building lora-pipeline (release)"
  cargo build --locked --release -p server --bin lora-pipeline
fi

WORK="$(mktemp -d /tmp/lp-cli-bench.XXXXXX)"
chmod 755 "$WORK"
PORT="$(free_port)"
URL="http://127.0.0.1:$PORT"
env -u DATABASE_URL DATA_DIR="$WORK/data" BIND_ADDR="127.0.0.1:$PORT" REGISTRATION=open RUST_LOG=warn \
  "$BIN" serve > "$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 120); do
  curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log"; exit 1; }
  sleep 0.5
done

# An account and an API token, as a person would make them on Settings.
curl -sf -c "$WORK/jar" -H "Origin: $URL" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench password 123"}' "$URL/api/auth/register" >/dev/null
TOKEN="$(curl -sf -b "$WORK/jar" -H "Origin: $URL" -H 'content-type: application/json' \
  -d '{"name":"bench"}' "$URL/api/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"])')"

log "generating a ${SIZE_MB} MB chat JSONL"
python3 scripts/bench/generate_chat_jsonl.py "$WORK/chat.jsonl" "$SIZE_MB" >/dev/null
BYTES="$(stat -c%s "$WORK/chat.jsonl")"

log "lora-pipeline datasets upload (streamed; --no-wait)"
export LORA_PIPELINE_URL="$URL" LORA_PIPELINE_TOKEN="$TOKEN" LORA_PIPELINE_CONFIG="$WORK/config.toml"
/usr/bin/time -f '%M %e' -o "$WORK/time" "$BIN" datasets upload "$WORK/chat.jsonl" --no-wait --json > "$WORK/created.json"
read -r RSS_KB WALL < "$WORK/time"
ID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/created.json")"

started=$(date +%s.%N)
"$BIN" datasets show "$ID" --json > /dev/null
while :; do
  STATUS="$("$BIN" datasets show "$ID" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
  [ "$STATUS" = ready ] || [ "$STATUS" = invalid ] && break
  sleep 0.5
done
VERDICT_S="$(python3 -c "import time; print(round(time.time() - $started, 1))")"

python3 - "$BYTES" "$WALL" "$RSS_KB" "$STATUS" "$VERDICT_S" <<'EOF'
import sys
size, wall, rss_kb, status, verdict = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
print(f"file            {size / 1e6:.1f} MB")
print(f"upload          {wall:.2f} s  ({size / 1e6 / max(wall, 1e-9):.0f} MB/s, create + PUT + confirm)")
print(f"CLI peak RSS    {rss_kb / 1024:.1f} MB")
print(f"verdict         {status} after {verdict} s more")
EOF

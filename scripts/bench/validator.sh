#!/usr/bin/env bash
# Validator benchmark (docs/PERFORMANCE.md): generates a chat JSONL of SIZE_MB (default 500),
# then measures, in one run, our validator against a Python (json.loads per line + the OpenAI
# cookbook checks) and a Node (JSON.parse per line) validator computing the same statistics
# with the same approximate token count: MB/s and peak RSS of each. Then the complete
# validation with exact BPE counts, normalised output and SHA-256, and the local-store upload
# throughput against `cp`.
#
#   scripts/bench/validator.sh [SIZE_MB]
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT"
SIZE_MB="${1:-500}"
WORK="$(mktemp -d /tmp/lora-bench.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
FILE="$WORK/chat.jsonl"

log "building bench-validator (release)"
cargo build --quiet --release --features ssr --bin bench-validator
BENCH="$CARGO_TARGET_DIR/release/bench-validator"
log "generating $SIZE_MB MB of chat JSONL"
python3 scripts/bench/generate_chat_jsonl.py "$FILE" "$SIZE_MB" >/dev/null
cat "$FILE" > /dev/null # warm the page cache so every contender reads from memory

measure() { # name, command...: prints "name  MB/s  peak-RSS-MB" from the JSON line and /usr/bin/time
  local name="$1"; shift
  local out
  out="$( { /usr/bin/time -f "RSS_KB=%M" "$@" ; } 2>&1 )"
  local json rss
  json="$(echo "$out" | grep '^{')"
  rss="$(echo "$out" | sed -n 's/^RSS_KB=//p')"
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(f'{sys.argv[2]:<28} {d[\"mb_per_s\"]:>8.0f} MB/s  {int(sys.argv[3])/1024:>7.1f} MB RSS  {d[\"seconds\"]:>6.2f} s  examples={d[\"examples\"]} tokens={d[\"total_tokens\"]} p95={d[\"p95\"]}')" "$json" "$name" "$rss"
}

echo
echo "file: $(stat -c%s "$FILE") bytes, $(nproc) cores"
measure "python (json.loads)" python3 scripts/bench/python_validator.py "$FILE"
measure "node (JSON.parse)" node scripts/bench/node_validator.mjs "$FILE"
measure "lora-pipeline validator" "$BENCH" "$FILE"
measure "  … exact BPE+normalise+hash" "$BENCH" "$FILE" --exact --normalize --hash

echo
log "upload throughput: local store PUT vs cp"
cp_start=$(date +%s.%N); cp "$FILE" "$WORK/copy.jsonl"; sync "$WORK/copy.jsonl"; cp_end=$(date +%s.%N)
rm -f "$WORK/copy.jsonl"
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'cp (+sync)                   {int(sys.argv[3])/1e6/s:>8.0f} MB/s')" "$cp_start" "$cp_end" "$(stat -c%s "$FILE")"
echo "(the PUT side is measured by: cargo test -p server --test upload_memory -- --nocapture)"

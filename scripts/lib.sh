# Shared by scripts/run and scripts/test: idempotent installation of every tool the build needs,
# and the build itself. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LORA_CACHE_DIR:-$HOME/.cache/lora-pipeline}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
# Incremental compilation once produced a stale server binary (a Leptos route missing) here;
# whole-crate rebuilds of our four crates cost little and are always right.
export CARGO_INCREMENTAL=0
# Queries are checked at compile time against the committed `.sqlx/` data: no database is
# needed to build; `scripts/test` checks that data against the migrations (sqlx prepare --check).
export SQLX_OFFLINE=true
SQLX_CLI_VERSION="$(awk '/^name = "sqlx"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")"
export PATH="$HOME/.cargo/bin:$CACHE/npm/node_modules/.bin:$PATH"
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")"
BINARYEN_VERSION="132.0.0"
ECHARTS_VERSION="6.1.0"
ESBUILD_VERSION="0.25.0"
PLAYWRIGHT_VERSION="1.65.1"
SITE="$ROOT/target/site"

# Each step with the time since the script started: where a first run's minutes go.
log() { printf '\033[1m==> [%dm%02ds] %s\033[0m\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }

install_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_rust_tools() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (rustup) first" >&2; exit 1
  fi
  rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
    || { log "rustup target add wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (matches Cargo.lock)"
    # Its own lockfile pins a webpki-roots that the registry no longer serves: when the plain
    # locked install fails, relock that one crate in the downloaded source and install from there.
    if ! cargo install --quiet wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked 2>/dev/null; then
      local crate src="$CACHE/src/wasm-bindgen-cli-$WASM_BINDGEN_VERSION"
      crate="$(ls "$HOME"/.cargo/registry/cache/*/wasm-bindgen-cli-"$WASM_BINDGEN_VERSION".crate | head -1)"
      mkdir -p "$CACHE/src"
      rm -rf "$src"
      tar -xzf "$crate" -C "$CACHE/src"
      (cd "$src" && cargo update --quiet -p webpki-roots --precise 1.0.10 \
        && cargo install --quiet --path . --locked)
    fi
  fi
}

# The test runner: cargo-nextest (on this machine kind already; installed when missing). It
# stops a hung test after 4 minutes and fails it, without retries (.config/nextest.toml),
# instead of holding CI.
# sqlx-cli at the Cargo.lock's sqlx version: `cargo sqlx prepare` regenerates `.sqlx/` after a
# query changes; the tests run `--check`.
install_sqlx_cli() {
  if [ "$(sqlx --version 2>/dev/null | awk '{print $2}')" != "$SQLX_CLI_VERSION" ]; then
    log "cargo install sqlx-cli $SQLX_CLI_VERSION (compile-time checked queries)"
    cargo install --quiet sqlx-cli --version "$SQLX_CLI_VERSION" --no-default-features \
      --features postgres,rustls --locked
  fi
}

# Checks that `.sqlx/` matches every `query!` against a database migrated from `migrations/`
# (needs the test cluster: LP_TEST_ADMIN_URL).
check_sqlx_data() {
  local url="${LP_TEST_ADMIN_URL%/*}/lp_sqlx_check"
  log "sqlx prepare --check (the committed query data matches the queries and migrations)"
  psql -q "$LP_TEST_ADMIN_URL" -c "DROP DATABASE IF EXISTS lp_sqlx_check" -c "CREATE DATABASE lp_sqlx_check"
  DATABASE_URL="$url" sqlx migrate run --source "$ROOT/migrations" >/dev/null
  (cd "$ROOT" && DATABASE_URL="$url" SQLX_OFFLINE=false cargo sqlx prepare --check --workspace \
    -- -p engine --features ssr --all-targets)
}

# promtool, to check deploy/prometheus/alerts.yml and run its rule tests: the one binary from
# Debian's prometheus package, unpacked (no service installed or started).
install_promtool() {
  export PROMTOOL="$CACHE/tools/promtool"
  [ -x "$PROMTOOL" ] && return 0
  log "fetching promtool (from Debian's prometheus package)"
  local dir; dir="$(mktemp -d)"
  (cd "$dir" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$dir"/prometheus_*.deb "$dir/unpacked"
  mkdir -p "$CACHE/tools"
  cp "$dir/unpacked/usr/bin/promtool" "$PROMTOOL.tmp" && mv "$PROMTOOL.tmp" "$PROMTOOL"
  rm -rf "$dir"
}

# Every change links each test binary anew under a new hash, and the old ones are never used
# again: keep only the newest of each name (the disk would fill within a day of work).
prune_stale_binaries() {
  local deps="$CARGO_TARGET_DIR/debug/deps"
  [ -d "$deps" ] || return 0
  find "$deps" -maxdepth 1 -type f -executable -regextype posix-extended \
      -regex '.*/[a-z0-9_]+-[0-9a-f]{16}' -printf '%T@ %p\n' \
    | sort -rn \
    | awk '{ name = $2; sub(/-[0-9a-f]+$/, "", name); if (seen[name]++) print $2 }' \
    | xargs -r rm -f
}

install_nextest() {
  cargo nextest --version >/dev/null 2>&1 \
    || { log "cargo install cargo-nextest"; cargo install --quiet cargo-nextest --locked; }
}

install_npm_tools() {
  mkdir -p "$CACHE/npm"
  local wanted="binaryen@$BINARYEN_VERSION echarts@$ECHARTS_VERSION esbuild@$ESBUILD_VERSION"
  if [ "$(cat "$CACHE/npm/.installed" 2>/dev/null)" != "$wanted" ]; then
    log "npm install $wanted (wasm-opt; the chart library and its bundler)"
    [ -f "$CACHE/npm/package.json" ] || echo '{"private":true}' > "$CACHE/npm/package.json"
    (cd "$CACHE/npm" && npm install --silent --no-audit --no-fund $wanted)
    echo "$wanted" > "$CACHE/npm/.installed"
  fi
}

# The WASM bundles: one per group of pages, each with only its pages' islands (`app::bundle_for`).
BUNDLES="auth core settings charts train upload"

# Builds the hydrate WASM + JS + CSS + public files into target/site (what the binary embeds).
build_site() {
  log "building the site (WASM bundles: $BUNDLES; JS, CSS)"
  mkdir -p "$SITE/pkg"
  local wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/frontend.wasm"
  local bundle name stage sum
  for bundle in $BUNDLES; do
    name="lora-pipeline-$bundle"
    stage="$CACHE/site-stage/$bundle"
    (cd "$ROOT" && cargo build --quiet -p frontend --lib --target wasm32-unknown-unknown \
      --profile wasm-release --no-default-features --features "$bundle")
    # wasm-bindgen and wasm-opt again only when cargo's output changed (a minute per bundle).
    sum="$(sha256sum "$wasm" | cut -c1-32)"
    if [ "$(cat "$stage/.input" 2>/dev/null)" != "$sum" ] || [ ! -f "$stage/${name}_bg.wasm" ]; then
      rm -rf "$stage"; mkdir -p "$stage"
      wasm-bindgen --target web --no-typescript --out-dir "$stage" --out-name "$name" "$wasm"
      wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals "$stage/${name}_bg.wasm" -o "$stage/${name}_bg.wasm"
      echo "$sum" > "$stage/.input"
    fi
    # Copy only what changed, so the embedding crate is not rebuilt needlessly.
    for f in "$name.js" "${name}_bg.wasm"; do
      cmp -s "$stage/$f" "$SITE/pkg/$f" || cp "$stage/$f" "$SITE/pkg/$f"
    done
  done
  # The single bundle of earlier builds is not served any more.
  rm -f "$SITE"/pkg/lora-pipeline.js* "$SITE"/pkg/lora-pipeline_bg.wasm*
  cmp -s "$ROOT/style/main.css" "$SITE/pkg/lora-pipeline.css" || cp "$ROOT/style/main.css" "$SITE/pkg/lora-pipeline.css"
  cp -ru "$ROOT/public/." "$SITE/"
  # ECharts for charming, loaded only by pages that draw charts: a build with only what the
  # charts use (scripts/echarts-entry.js), bundled from the npm package when the entry changes.
  local charts="$CACHE/echarts-$ECHARTS_VERSION-$(sha256sum "$ROOT/scripts/echarts-entry.js" | cut -c1-12).min.js"
  if [ ! -f "$charts" ]; then
    cp "$ROOT/scripts/echarts-entry.js" "$CACHE/npm/echarts-entry.js"
    "$CACHE/npm/node_modules/.bin/esbuild" "$CACHE/npm/echarts-entry.js" --bundle --minify \
      --format=iife --target=es2020 --log-level=warning --outfile="$charts.tmp"
    mv "$charts.tmp" "$charts"
  fi
  cmp -s "$charts" "$SITE/pkg/echarts.min.js" || cp "$charts" "$SITE/pkg/echarts.min.js"
  # Precompressed copies: the server sends these as they are (no per-request compression).
  for f in "$SITE"/pkg/lora-pipeline-*.js "$SITE"/pkg/lora-pipeline-*_bg.wasm "$SITE"/pkg/lora-pipeline.css "$SITE"/pkg/echarts.min.js; do
    if [ ! -f "$f.br" ] || [ "$f" -nt "$f.br" ]; then
      brotli -f -q 11 -o "$f.br" "$f"
      gzip -9 -k -f "$f"
    fi
  done
}

# The GPU worker's Python environment (torch, transformers, peft; ~5 GB), outside the clone,
# reinstalled only when worker/requirements*.txt change. Exports WORKER_PYTHON.
install_worker_env() {
  local venv="$CACHE/worker-venv" base=python3 want
  if [ "$(id -u)" = 0 ]; then
    # As root the worker runs as its own user (WORKER_USER=auto), who cannot enter /root: its
    # environment lives where every user can read it, on the system's Python (not a pyenv
    # interpreter under /root).
    venv="${LORA_WORKER_VENV:-/var/cache/lora-pipeline/worker-venv}"
    [ -x /usr/bin/python3 ] && base=/usr/bin/python3
  fi
  want="$( (cat "$ROOT/worker/requirements.txt" "$ROOT/worker/requirements-test.txt"; echo "$base") | sha256sum | cut -c1-16)"
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
    log "pip install the worker's environment (torch, transformers, peft: a few GB, once)"
    if [ "$(cat "$venv/.base" 2>/dev/null)" != "$base" ]; then
      rm -rf "$venv"
      "$base" -m venv "$venv"
      echo "$base" > "$venv/.base"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/worker/requirements-test.txt"
    echo "$want" > "$venv/.installed"
  fi
  export WORKER_PYTHON="$venv/bin/python"
}

# install_worker_env in the background: a download of a few GB that need not wait for the Rust
# builds, which keep the cores busy meanwhile. finish_worker_env waits for it.
start_worker_env() {
  log "installing the worker's Python environment in the background (when missing)"
  WORKER_ENV_LOG="$(mktemp)"
  install_worker_env >"$WORKER_ENV_LOG" 2>&1 &
  WORKER_ENV_PID=$!
}

finish_worker_env() {
  if ! wait "$WORKER_ENV_PID"; then
    cat "$WORKER_ENV_LOG" >&2
    echo "installing the worker's Python environment failed (above); run the script again" >&2
    exit 1
  fi
  rm -f "$WORKER_ENV_LOG"
  install_worker_env # installed by now: only exports WORKER_PYTHON
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

pg_bin() {
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v initdb)")"
  else
    ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
  fi
}

# A throwaway PostgreSQL cluster for the integration tests; sets LP_TEST_ADMIN_URL and
# PG_SCRATCH. Stop it with stop_test_postgres.
start_test_postgres() {
  local bin port
  bin="$(pg_bin)"
  PG_SCRATCH="$(mktemp -d /tmp/lora-pipeline-test-pg.XXXXXX)"
  chmod 755 "$PG_SCRATCH"
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_SCRATCH"
  as_postgres "$bin/initdb" -D "$PG_SCRATCH/data" -U postgres --auth=trust -E UTF8 --no-locale >/dev/null
  port="$(free_port)"
  # fsync off: a throwaway cluster trades durability for speed (CREATE DATABASE per test).
  as_postgres "$bin/pg_ctl" -D "$PG_SCRATCH/data" -l "$PG_SCRATCH/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_SCRATCH -c max_connections=400 -c fsync=off -c full_page_writes=off" \
    start >/dev/null
  export LP_TEST_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "test PostgreSQL on 127.0.0.1:$port"
}

stop_test_postgres() {
  if [ -n "${PG_SCRATCH:-}" ] && [ -d "$PG_SCRATCH/data" ]; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$PG_SCRATCH/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_SCRATCH"
  fi
}

# For scripts/bench/*.sh: builds the release server and the benchmark example NAME, starts a
# throwaway PostgreSQL (stopped on exit) and raises the open-file limit. Sets BENCH and exports
# LORA_PIPELINE_BIN.
prepare_bench() {
  local name="$1"
  install_apt postgresql
  if [ ! -f "$SITE/pkg/lora-pipeline-core.js" ]; then
    # The binary embeds the site; build it once, as scripts/run does.
    install_rust_tools
    install_npm_tools
    build_site
  fi
  log "building lora-pipeline and $name (release)"
  cargo build --locked --release -p server --bin lora-pipeline --example "$name"
  export LORA_PIPELINE_BIN="$CARGO_TARGET_DIR/release/lora-pipeline"
  BENCH="$CARGO_TARGET_DIR/release/examples/$name"
  start_test_postgres
  trap stop_test_postgres EXIT
  # Every subscriber or job connection is a socket here and in the server (which inherits it).
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
}

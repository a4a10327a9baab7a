# Sourced by the load scripts (answer-load.sh, bank-scale.sh, flood-load.sh): builds the binary
# the Dockerfile ships (Cargo.toml's `production` profile) and starts or stops `elicit serve` on a
# fresh database of the cluster the PG* variables name (default 127.0.0.1:5432 as postgres).
#   elicit_build                 sets ELICIT (the binary; unless ELICIT is set already)
#   start_server NAME            creates database NAME, starts the server on it with a new admin
#                                key; sets KEY, SERVER (its pid), TARGET (its URL), SERVER_LOG
#   stop_server                  stops it and drops its database (safe to call twice)
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/elicit/target}"

elicit_build() {
  # ELICIT=path measures that binary instead (an A/B of two builds, run after one another).
  if [[ -n "${ELICIT:-}" ]]; then return; fi
  cargo build --profile production --quiet
  ELICIT="$CARGO_TARGET_DIR/production/elicit"
}

start_server() {
  SERVER_DB="$1"
  SERVER_LOG=$(mktemp)
  KEY="load-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  createdb "$SERVER_DB"
  ELICIT_DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$SERVER_DB" ELICIT_ADMIN_KEY="$KEY" \
    RUST_LOG=warn "$ELICIT" serve --port 0 >"$SERVER_LOG" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do grep -q "listening on" "$SERVER_LOG" && break; sleep 0.1; done
  TARGET=$(sed -n 's/^listening on //p' "$SERVER_LOG")
  [[ -n "$TARGET" ]] || { cat "$SERVER_LOG"; exit 1; }
}

stop_server() {
  if [[ -n "${SERVER:-}" ]]; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
  fi
  if [[ -n "${SERVER_DB:-}" ]]; then
    dropdb --if-exists "$SERVER_DB" 2>/dev/null || true
    SERVER_DB=
  fi
  rm -f "${SERVER_LOG:-}"
}

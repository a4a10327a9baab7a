#!/usr/bin/env bash
# One key flooding at 10× its rate limit beside normal onboarding clients (issue 14): elicit bench
# on this machine's PostgreSQL, paced at RATE answers/s, alternating runs without and with
# `--flood-per-s FLOOD`, ROUNDS times. Prints a Markdown table for BENCHMARKS.md.
#
#   scripts/flood-load.sh [SECONDS] [ROUNDS] [RATE] [FLOOD]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-8}"
ROUNDS="${2:-3}"
RATE="${3:-400}"
FLOOD="${4:-1000}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/elicit/target}"
cargo build --release --quiet
ELICIT="$CARGO_TARGET_DIR/release/elicit"
KEY="flood-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
DB=elicit_flood_$$
LOG=$(mktemp)
cleanup() {
  [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  dropdb --if-exists "$DB" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT
createdb "$DB"
ELICIT_DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB" ELICIT_ADMIN_KEY="$KEY" RUST_LOG=warn \
  "$ELICIT" serve --port 0 >"$LOG" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
TARGET=$(sed -n 's/^listening on //p' "$LOG")
[[ -n "$TARGET" ]] || { cat "$LOG"; exit 1; }

bench() {
  "$ELICIT" bench --target "$TARGET" --api-key "$KEY" --clients 16 --bank 40 --dims 16 \
    --seconds "$SECONDS_PER_RUN" --rate "$RATE" --json "$@"
}
field() { python3 -c "import json,sys; r=json.load(sys.stdin); print(eval('r' + ''.join(f'[{k!r}]' for k in '$1'.split('.'))))"; }

echo "| round | flood | answers/s | answer p50 ms | answer p99 ms | flood sent | refused (429) | accepted |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for flood in no yes; do
    if [[ $flood == yes ]]; then report=$(bench --seed "$round" --flood-per-s "$FLOOD"); else report=$(bench --seed "$round"); fi
    if [[ $flood == yes ]]; then
      extra="$(field flood.sent <<<"$report") | $(field flood.limited <<<"$report") | $(field flood.accepted <<<"$report")"
    else
      extra=" | | "
    fi
    printf '| %s | %s | %.0f | %.2f | %.2f | %s |\n' "$round" "$flood" \
      "$(field answers_per_s <<<"$report")" "$(field answer_p50_ms <<<"$report")" \
      "$(field answer_p99_ms <<<"$report")" "$extra"
  done
done

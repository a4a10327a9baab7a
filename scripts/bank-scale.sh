#!/usr/bin/env bash
# The answer path as the bank grows, in one run on PostgreSQL (issue 24). Each row is one
# `elicit bench --dims 16 --json` against a fresh release server on a fresh database, so that the
# server's peak RSS (VmHWM, from /proc) is that row's own:
#   16 clients at 40, 10,000 and 100,000 items; one client at 100,000; 16 clients keeping 2,000
#   sessions open at 100,000 (--sessions 2000); and, unless SKIP_MILLION=1, one client on a
#   1,000,000-item bank (uploaded as ten PUTs of 100,000).
# Usage: scripts/bank-scale.sh [SECONDS_PER_RUN]   (PG* variables select the cluster; default
# 127.0.0.1:5432 as postgres). Prints a Markdown table; leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-6}"
source scripts/lib/server.sh
elicit_build
DB=elicit_scale_$$
OUT=$(mktemp)
BENCH_LOG=$(mktemp)
cleanup() {
  stop_server
  rm -f "$OUT" "$BENCH_LOG"
}
trap cleanup EXIT

# The server's peak resident set so far, MiB.
peak_rss_mib() { awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER/status"; }
# What the server's run cache holds: sessions and KB a session (its /metrics gauges).
run_cache() {
  curl -s "$TARGET/metrics" | awk '/^elicit_run_cache_bytes / { b = $2 } /^elicit_run_cache_sessions / { n = $2 }
    END { if (n > 0) printf "%d × %.1f", n, b / n / 1024; else printf "0" }'
}
field() { python3 -c "import json,sys; print(json.load(open('$OUT'))['$1'])"; }

BASE_RATE=
echo "| run | answers/s | answer p50 ms | answer p99 ms | create p50 / p99 ms | ratio to 40 items | server peak RSS MiB | run cache: sessions × KB | bank MiB | upload s | first session ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
row() {
  local name="$1"
  shift
  start_server "$DB"
  "$ELICIT" bench --target "$TARGET" --api-key "$KEY" --dims 16 --json "$@" >"$OUT" 2>"$BENCH_LOG" \
    || { cat "$BENCH_LOG" "$SERVER_LOG"; exit 1; }
  local rate
  rate=$(field answers_per_s)
  [[ -n "$BASE_RATE" ]] || BASE_RATE="$rate"
  printf '| %s | %.0f | %.2f | %.2f | %.2f / %.2f | %.2f | %s | %s | %.2f | %.1f | %.0f |\n' "$name" "$rate" \
    "$(field answer_p50_ms)" "$(field answer_p99_ms)" "$(field create_p50_ms)" "$(field create_p99_ms)" \
    "$(python3 -c "print($rate / $BASE_RATE)")" "$(peak_rss_mib)" "$(run_cache)" "$(field bank_mib)" \
    "$(field upload_seconds)" "$(field first_session_ms)"
  stop_server
}

row "40 items, 16 clients" --clients 16 --seconds "$SECONDS_PER_RUN" --bank 40
row "10,000 items, 16 clients" --clients 16 --seconds "$SECONDS_PER_RUN" --bank 10000
row "100,000 items, 16 clients" --clients 16 --seconds "$SECONDS_PER_RUN" --bank 100000
row "100,000 items, 1 client" --clients 1 --seconds "$SECONDS_PER_RUN" --bank 100000
row "100,000 items, 16 clients, 2,000 open sessions" --clients 16 --seconds "$SECONDS_PER_RUN" \
  --bank 100000 --sessions 2000
if [[ "${SKIP_MILLION:-0}" != 1 ]]; then
  row "1,000,000 items, 1 client" --clients 1 --seconds "$SECONDS_PER_RUN" --bank 1000000
fi

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
source scripts/lib/server.sh
elicit_build
BENCH_ERR=$(mktemp)
cleanup() {
  stop_server
  rm -f "$BENCH_ERR"
}
trap cleanup EXIT
start_server elicit_flood_$$

bench() {
  "$ELICIT" bench --target "$TARGET" --api-key "$KEY" --clients 16 --bank 40 --dims 16 \
    --seconds "$SECONDS_PER_RUN" --rate "$RATE" --json "$@" 2>"$BENCH_ERR" || { cat "$BENCH_ERR" >&2; return 1; }
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

#!/usr/bin/env bash
# The answer path against PostgreSQL's own ceiling, measured in one run on one cluster:
#   1. `pgbench -N`, pgbench running the service's own answer commit (scripts/answer-ceiling.py:
#      what PostgreSQL could do if HTTP, JSON and the engine cost nothing) and `elicit bench` in
#      alternation (16 clients, 40-, 1,000- and 100,000-item banks, J = 16): answers/s as a ratio of
#      pgbench's tps, median over the rounds, and the CPU each process spent per answer
#      (server, load generator, PostgreSQL: from /proc over the middle of the onboarding phase);
#   2. `elicit bench` at half the measured answer rate: p99 latency;
#   3. the answer commit's lighter variants (what storing less would save PostgreSQL);
#   4. one client answering 200-question sessions over a 1,000-item bank: median latency by
#      position in the session (answers 1–20 against 181–200).
# Usage: scripts/answer-load.sh [SECONDS_PER_RUN] [ROUNDS]   (PG* variables select the cluster;
# default 127.0.0.1:5432 as postgres). Prints a Markdown table; leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-8}"
ROUNDS="${2:-3}"
CLIENTS=16
source scripts/lib/server.sh
elicit_build
DB=elicit_load_$$
PGB=pgbench_load_$$
CEILING=$(mktemp -d)
BENCH_ERR=$(mktemp)
cleanup() {
  stop_server
  dropdb --if-exists "$PGB" 2>/dev/null || true
  rm -rf "$CEILING" "$BENCH_ERR"
}
trap cleanup EXIT
start_server "$DB"
createdb "$PGB"
pgbench -i -s 10 -q "$PGB" >/dev/null 2>&1

# The service's answer commit on its own, on 20,000 sessions of the service's schema in $DB.
python3 scripts/answer-ceiling.py "$CEILING" 20000
psql -q -d "$DB" -f "$CEILING/setup.sql" >/dev/null
CEILING_VARS=()
while IFS= read -r define; do CEILING_VARS+=(-D "$define"); done <"$CEILING/defines"

tps_of() { sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
pgbench_tps() { pgbench -N -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "$PGB" 2>/dev/null | tps_of; }
# pgbench running one of answer-ceiling.py's scripts (default: the answer commit as it is).
ceiling_tps() {
  pgbench -n -M prepared -f "$CEILING/${1:-answer}.pgbench" "${CEILING_VARS[@]}" -c "$CLIENTS" -j 2 \
    -T "$SECONDS_PER_RUN" "$DB" 2>/dev/null | tps_of
}
BENCH=("$ELICIT" bench --target "$TARGET" --api-key "$KEY" --dims 16 --json)
bench() { "${BENCH[@]}" "$@" 2>"$BENCH_ERR" || { cat "$BENCH_ERR" >&2; return 1; }; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# "/proc/PID/stat TICKS" for each given process still running: its CPU clock ticks (user +
# system) so far.
cpu_snapshot() {
  local pid
  for pid in "$@"; do awk '{ print FILENAME, $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || true; done
}

# "KIND /proc/PID/stat TICKS" for the server, the load generator (pid $1) and every PostgreSQL
# process running now.
processes_cpu() {
  cpu_snapshot "$SERVER" | sed 's/^/server /'
  cpu_snapshot "$1" | sed 's/^/generator /'
  cpu_snapshot $(pgrep -x postgres) | sed 's/^/postgres /'
}

# Runs `elicit bench` with "$@" and, over its onboarding phase less a second at each end, reads
# the CPU time of the server, of the load generator and of every PostgreSQL process (a process
# that exits in between is missed); prints the report with `cpu_ms_per_answer` = [server,
# generator, PostgreSQL] added.
measured_bench() {
  local out err before after t0 t1
  out=$(mktemp); err=$(mktemp); before=$(mktemp); after=$(mktemp)
  "${BENCH[@]}" "$@" >"$out" 2>"$err" &
  local generator=$!
  # The model's upload and the bank's first load come before the onboarding phase.
  for _ in $(seq 600); do grep -q "onboarding phase starting" "$err" && break; sleep 0.1; done
  sleep 1
  processes_cpu "$generator" >"$before"
  t0=$(date +%s.%N)
  sleep $((SECONDS_PER_RUN - 2))
  processes_cpu "$generator" >"$after"
  t1=$(date +%s.%N)
  wait "$generator"
  python3 - "$out" "$before" "$after" "$t0" "$t1" <<'PY'
import json, os, sys
out, before, after, t0, t1 = sys.argv[1:]
def read(path):
    return {(kind, pid): int(ticks) for kind, pid, ticks in (l.split() for l in open(path))}
b, a = read(before), read(after)
used = {k: 0 for k in ("server", "generator", "postgres")}
for (kind, pid), ticks in a.items():
    used[kind] += ticks - b.get((kind, pid), 0)
r = json.load(open(out))
answers = r["answers_per_s"] * (float(t1) - float(t0))
ms = 1000 / os.sysconf("SC_CLK_TCK") / answers
r["cpu_ms_per_answer"] = [used[k] * ms for k in ("server", "generator", "postgres")]
print(json.dumps(r))
PY
  rm -f "$out" "$err" "$before" "$after"
}

echo "| bank | pgbench -N tps | answer commit alone tps | answers/s | ratio | ceiling ratio | CPU ms/answer: server / generator / PostgreSQL | answer p50 ms | answer p99 ms | scores/s (100 candidates) | score p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for bank in 40 1000 100000; do
  ratios=()
  for round in $(seq "$ROUNDS"); do
    tps=$(pgbench_tps)
    ceiling=$(ceiling_tps)
    report=$(measured_bench --clients "$CLIENTS" --bank "$bank" --seed "$round" --seconds "$SECONDS_PER_RUN")
    answers=$(field answers_per_s <<<"$report")
    ratio=$(python3 -c "print(f'{$answers / $tps:.2f}')")
    ratios+=("$ratio")
    cpu=$(python3 -c "import json,sys; print(' / '.join(f'{x:.3f}' for x in json.load(sys.stdin)['cpu_ms_per_answer']))" <<<"$report")
    printf '| %s | %.0f | %.0f | %.0f | %s | %.2f | %s | %.2f | %.2f | %.0f | %.2f |\n' "$bank" "$tps" "$ceiling" \
      "$answers" "$ratio" "$(python3 -c "print($ceiling / $tps)")" "$cpu" \
      "$(field answer_p50_ms <<<"$report")" "$(field answer_p99_ms <<<"$report")" \
      "$(field scores_per_s <<<"$report")" "$(field score_p99_ms <<<"$report")"
  done
  median=$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")
  echo "| $bank | | | | **median $median** | | | | | | |"
  half=$(python3 -c "print($answers / 2)")
  report=$(bench --clients "$CLIENTS" --bank "$bank" --rate "$half" --seconds "$SECONDS_PER_RUN")
  printf '| %s at %.0f answers/s (half) | | | %.0f | | | | %.2f | %.2f | | |\n' "$bank" "$half" \
    "$(field answers_per_s <<<"$report")" "$(field answer_p50_ms <<<"$report")" "$(field answer_p99_ms <<<"$report")"
done

echo
echo "What storing less per answer would save PostgreSQL: the commit's lighter variants, tps"
echo
echo "| round | as it is | without the profile upsert | also without the posterior in the session row |"
echo "|---|---|---|---|"
for round in 1 2; do
  printf '| %s | %.0f | %.0f | %.0f |\n' "$round" "$(ceiling_tps)" "$(ceiling_tps without-profile)" "$(ceiling_tps lean)"
done

echo
echo "One client, 200-question sessions, 1,000 items, J = 16: median answer latency by position"
bench --clients 1 --bank 1000 --questions 200 --seconds $((SECONDS_PER_RUN * 2)) | python3 -c "
import json, sys
r = json.load(sys.stdin)
rows = r['answer_p50_ms_by_position']
print(' '.join(f\"{p['from']}-{p['to']}: {p['p50_ms']:.2f} ms;\" for p in rows))
first, last = rows[0]['p50_ms'], rows[-1]['p50_ms']
print(f'answers 181-200 / answers 1-20: {last / first:.2f} ({last:.2f} ms / {first:.2f} ms)')"

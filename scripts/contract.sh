#!/usr/bin/env bash
# The API contract under schemathesis: every check, against the served /openapi.json, on the
# embedded store in a temp dir. Exits non-zero on any failure.
#
#   scripts/contract.sh [PATH_TO_ELICIT_BINARY]
#
# The binary defaults to the one `cargo test` builds. Settings (examples per operation, seed, the
# two documented exceptions) live in config/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
binary="${1:-$target/debug/elicit}"; shift || true
[ -x "$binary" ] || { echo "no elicit binary at $binary (run cargo build first)"; exit 1; }

scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [ ! -x "$scripts_dir/st" ]; then
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5'
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
ELICIT_DATABASE_URL="sqlite://$work/contract.db" ELICIT_ADMIN_KEY=contract-admin ELICIT_LOG_JSON=true \
  "$binary" serve --port "$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; [ -n "${CONTRACT_KEEP:-}" ] && cp "$work/server.log" /tmp/st/contract-server.log; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done

# Data for the operations that name a model, an item, a session or a user, so that the fuzzer
# reaches their logic rather than a 404 (config/schemathesis.toml reads these variables).
api() { curl -fsS -X "$1" "http://127.0.0.1:$port$2" -H "Authorization: Bearer contract-admin" \
  -H 'content-type: application/json' ${3:+-d "$3"}; }
for model in contract doomed; do
  api POST /v1/models '{"name":"'$model'","dimensions":["concise","formal","humour"]}' >/dev/null
done
api PUT /v1/models/contract/items '{"items":[{"id":"a1","features":[1,0,0.2]},{"id":"a2","features":[0,1,0]},
  {"id":"a3","features":[0.3,0.1,1]},{"id":"a4","features":[0.5,0.5,0.5]}]}' >/dev/null
api POST /v1/sessions '{"model":"contract","user_id":"doomed-user"}' >/dev/null
export CONTRACT_SESSION
CONTRACT_SESSION="$(api POST /v1/sessions '{"model":"contract","user_id":"contract-user","max_questions":30}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"

"$scripts_dir/st" --config-file config/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --checks all -H "Authorization: Bearer contract-admin" --no-color "$@"

#!/usr/bin/env bash
# Service-mode load test on loopback with wrk (Debian package):
#   1. link registration through the batch endpoint (BATCH links a request,
#      every one new), 2. the same through the one-link endpoint (the peer:
#      what an integration does without batching), 3. explain.
# Prints throughput and p50/p99 latency, and the batch/one-by-one ratio.
# Usage: benches/serve.sh [LEADS] [SECONDS]     (default 20000 leads, 15 s)
set -euo pipefail
cd "$(dirname "$0")/.."
LEADS=${1:-20000}
SECS=${2:-15}
BATCH=${BATCH:-500}
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
LETHE=$PWD/target/release/lethe
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$LETHE" demo --dir "$work/demo" --leads "$LEADS" --generate-only >/dev/null
"$LETHE" -c "$work/demo/lethe.toml" index >/dev/null
TOKEN=bench-token-0123456789abcdef
cat >>"$work/demo/lethe.toml" <<TOML

[[serve.token]]
name = "bench"
sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
scope = "admin"
TOML
RUST_LOG=warn "$LETHE" -c "$work/demo/lethe.toml" serve --listen 127.0.0.1:0 >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/^lethe serve: listening on //p' "$work/out")
export TOKEN BATCH LEADS

run() { # name script threads connections
    wrk -t"$3" -c"$4" -d"${SECS}s" --latency -s "benches/wrk/$2" "$base" >"$work/$1.txt"
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$1.txt")
    p50=$(awk '$1 == "50%" {print $2}' "$work/$1.txt")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$1.txt")
    errors=$(awk '/Non-2xx/ {print $5}' "$work/$1.txt")
    echo "$1 $rps $p50 $p99 ${errors:-0}"
}
# Warm the explain cache (the first request loads the CRM graph).
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$base/v1/entities/lead:1/explain"

read -r _ b_rps b_p50 b_p99 b_err < <(run batch register_batch.lua 2 2)
read -r _ o_rps o_p50 o_p99 o_err < <(run one register_one.lua 2 8)
read -r _ e_rps e_p50 e_p99 e_err < <(run explain explain.lua 2 8)
registered=$(sqlite3 "$work/demo/lethe-state.db" "SELECT count(*) FROM registered_links")
python3 - "$b_rps" "$o_rps" "$e_rps" "$BATCH" <<PY
import sys
b, o, e, batch = map(float, sys.argv[1:5])
print(f"lethe serve on loopback, {int(batch)} links per batch request, ${SECS} s per run, ${LEADS} leads")
print(f"  batch  /v1/links/batch : {b:8.1f} req/s = {b*batch:9.0f} links/s   p50 $b_p50  p99 $b_p99  (non-2xx: $b_err)")
print(f"  single /v1/links       : {o:8.1f} req/s = {o:9.0f} links/s   p50 $o_p50  p99 $o_p99  (non-2xx: $o_err)")
print(f"  explain                : {e:8.1f} req/s                       p50 $e_p50  p99 $e_p99  (non-2xx: $e_err)")
print(f"  batch / one-by-one links/s ratio: {b*batch/o:.1f}x   (target: batch >= 5000 links/s)")
print(f"  links stored: $registered")
PY

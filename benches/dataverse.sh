#!/usr/bin/env bash
# lethe's Dataverse backend vs. a naive Web API client, in one run against the
# OData test server (tests/odata) behind its proxy, which counts requests and
# delays each by DELAY_MS to stand in for a remote environment.
#   1. N old leads, each with an opportunity and a quote, seeded
#      (/_test/seed); every case is due.
#   2. `lethe sweep` (index, plan, apply: the re-check reads and the $batch
#      change sets, verify) through the proxy; its requests counted.
#   3. The same rows seeded again; the naive client (benches/dataverse_naive.py:
#      list the keys, then one DELETE per row, children first, no batching,
#      as many in flight as lethe's cap) through the proxy; counted.
#   4. Deletes per second, requests per deleted entity, both ratios, and the
#      projected time for 100,000 leads (300,000 entities) under Dataverse's
#      documented limit of 6,000 requests per 5 minutes per user.
# Usage: benches/dataverse.sh [N]     (default 2000 leads)
#        DELAY_MS=20   the proxy's delay per request
#        IN_FLIGHT=16  requests in flight (lethe's [crm] max_in_flight; the naive client's threads)
#        LIMIT=600 WINDOW_S=30  a second round under Dataverse's service
#                      protection rate (6,000 requests per 300 s = 20 per second),
#                      its window scaled down to WINDOW_S so that the limit bites
#                      within a benchmark's run; LIMIT=0 skips it
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
DELAY_MS=${DELAY_MS:-20}
IN_FLIGHT=${IN_FLIGHT:-16}
ODATA=${LETHE_TEST_ODATA:-$PWD/tests/odata}
[ -x "$ODATA/node_modules/.bin/node" ] || (cd "$ODATA" && npm ci --no-audit --no-fund >/dev/null)
cargo build --release --quiet
LETHE=${CARGO_TARGET_DIR:-$PWD/target}/release/lethe
work=$(mktemp -d)
mkfifo "$work/stdin"
# The server ends when its stdin closes: hold it open until the script ends.
"$ODATA/node_modules/.bin/node" "$ODATA/server.js" <"$work/stdin" >"$work/server.json" 2>"$work/server.log" &
server=$!
exec 9>"$work/stdin"
trap 'exec 9>&-; kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/server.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/server.json" "$1"; }
DIRECT=$(field direct)
PROXY=$(field proxy)
export AZURE_TENANT_ID=$(field tenant) AZURE_CLIENT_ID=$(field client_id) AZURE_CLIENT_SECRET=$(field client_secret)
export AZURE_AUTHORITY_HOST="$DIRECT/"
post() { curl -sf -X POST "$DIRECT$1" -H 'content-type: application/json' --data-binary "${2:-{\}}" >/dev/null; }
seed() {
    post /_test/reset
    python3 - "$N" >"$work/seed.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
g = lambda t, i: f"00000000-0000-0000-{t:04}-{i:012}"
old = "2020-01-01T00:00:00Z"
print(json.dumps({
    "leads": [{"leadid": g(1, i), "fullname": f"Lead {i}", "emailaddress1": f"lead{i}@example.com",
               "createdon": old, "modifiedon": old} for i in range(1, n + 1)],
    "opportunities": [{"opportunityid": g(2, i), "_originatingleadid_value": g(1, i), "statecode": 2,
                       "modifiedon": old} for i in range(1, n + 1)],
    "quotes": [{"quoteid": g(3, i), "_opportunityid_value": g(2, i), "modifiedon": old}
               for i in range(1, n + 1)],
}))
EOF
    curl -sf -X POST "$DIRECT/_test/seed" -H 'content-type: application/json' --data-binary @"$work/seed.json" >/dev/null
}
stats() { curl -sf "$DIRECT/_test/stats"; }

mkdir -p "$work/run/technical"
cat >"$work/run/lethe.toml" <<EOF
[crm]
url = "${PROXY/http:/dataverse+http:}"
max_in_flight = $IN_FLIGHT
[crm.entities.lead]
table = "leads"
key = "leadid"
clock = ["modifiedon", "createdon"]
subject = ["emailaddress1"]
identifiers = ["emailaddress1"]
[crm.entities.opportunity]
table = "opportunities"
key = "opportunityid"
clock = "modifiedon"
parent = { lead = "_originatingleadid_value" }
[crm.entities.quote]
table = "quotes"
key = "quoteid"
clock = "modifiedon"
parent = { opportunity = "_opportunityid_value" }
[technical]
url = "technical"
[safety]
max_delete_fraction = 1.0
[[policy]]
name = "unconverted-sales"
root = "lead"
retain = "24 months"
keep_if = [{ entity = "opportunity", where = "statecode eq 0" }]
basis = "GDPR Art. 5(1)(e)"
[audit]
key = "dataverse-bench-key-0123456789"
EOF

echo "machine: $(nproc) cores, $(uname -sr); $N leads + $N opportunities + $N quotes; proxy delay ${DELAY_MS} ms per request; $IN_FLIGHT in flight"
LIMIT=${LIMIT:-600}
WINDOW_S=${WINDOW_S:-30}
round() { # $1: the faults; $2: a label
seed
post /_test/faults "$1"
post /_test/stats/reset
rm -rf "$work/run/lethe-state.db"* "$work/run/technical"; mkdir -p "$work/run/technical"
echo "-- $2"
t0=$(date +%s.%N)
"$LETHE" -c "$work/run/lethe.toml" --format json sweep --as-of 2026-06-30 >"$work/sweep.json"
t1=$(date +%s.%N)
stats >"$work/lethe.stats"
left=$(python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
def find(v):
    if isinstance(v, dict):
        if isinstance(v.get('entities_deleted'), dict):
            return sum(v['entities_deleted'].values())
        for x in v.values():
            r = find(x)
            if r is not None:
                return r
    return None
print(find(d) or 0)
" "$work/sweep.json")

seed
post /_test/faults "$1"
post /_test/stats/reset
t2=$(date +%s.%N)
python3 benches/dataverse_naive.py "$PROXY" "$DIRECT" "$IN_FLIGHT" >"$work/naive.out"
t3=$(date +%s.%N)
stats >"$work/naive.stats"

python3 - "$N" "$t0" "$t1" "$t2" "$t3" "$work/lethe.stats" "$work/naive.stats" "$left" "$work/naive.out" <<'EOF'
import json, sys
n = int(sys.argv[1]); t0, t1, t2, t3 = map(float, sys.argv[2:6])
ls, ns = json.load(open(sys.argv[6])), json.load(open(sys.argv[7]))
lethe_deleted = int(sys.argv[8]); naive_deleted = int(open(sys.argv[9]).read().split()[0])
def line(name, secs, st, deleted):
    rate = deleted / secs
    per = st["requests"] / deleted
    print(f"{name:6} {deleted:7d} entities in {secs:7.2f} s = {rate:8.1f} deletes/s; "
          f"{st['requests']:6d} requests ({st['by_method']}, {st['batch_requests']} $batch of "
          f"{st['batch_parts']} parts, max {st['max_in_flight']} in flight) = {per:.4f} requests per entity")
    return rate, per
lr, lp = line("lethe", t1 - t0, ls, lethe_deleted)
nr, np_ = line("naive", t3 - t2, ns, naive_deleted)
print(f"lethe vs naive: {nr and lr / nr:.1f}x the rate, {np_ / lp:.1f}x fewer requests per entity")
entities = 300_000
for name, per in (("lethe", lp), ("naive", np_)):
    reqs = entities * per
    minutes = reqs / 6000 * 5
    print(f"100,000 leads (300,000 entities) at 6,000 requests / 5 min: {name} {reqs:,.0f} requests, "
          f">= {minutes:,.1f} min ({minutes / 60:.1f} h) of request budget")
EOF
}
round "{\"delay_ms\": $DELAY_MS}" "no service protection: ${DELAY_MS} ms per request"
if [ "$LIMIT" -gt 0 ]; then
  round "{\"delay_ms\": $DELAY_MS, \"limit_requests\": $LIMIT, \"limit_window_ms\": $((WINDOW_S * 1000))}" \
    "service protection at Dataverse's rate: $LIMIT requests per $WINDOW_S s (20/s), 429 + Retry-After beyond; ${DELAY_MS} ms per request"
fi

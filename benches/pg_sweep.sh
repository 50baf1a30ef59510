#!/usr/bin/env bash
# lethe apply with the CRM on PostgreSQL vs. one set-based DELETE of the same
# rows through psql, in one run on two copies of the same CRM.
#   1. `lethe demo --generate-only` builds the CRM (SQLite) and payloads; its
#      tables are copied into two PostgreSQL databases, lethe_bench and
#      lethe_bench_raw (dropped and re-created: nothing else is touched).
#   2. lethe index + plan against lethe_bench; the plan's entity keys are
#      exported from the state store.
#   3. lethe apply (the CRM phase: re-check in the transaction, journal,
#      audit) vs. psql: the same keys loaded with \copy and one DELETE per
#      table, children first, in one transaction.
#   4. Both databases end with the same rows (checked).
# Usage: benches/pg_sweep.sh [LEADS]   (default 100000)
#        BATCH_CASES=N  cases per CRM transaction (default: lethe's, 1000)
#        PGURL=postgres://postgres@127.0.0.1:5432   (the server; trust auth)
set -euo pipefail
cd "$(dirname "$0")/.."
LEADS=${1:-100000}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
cargo build --release --quiet
LETHE=$PWD/target/release/lethe
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "generating $LEADS leads ..."
"$LETHE" demo --dir "$work/demo" --leads "$LEADS" --generate-only >/dev/null
TABLES="leads opportunities quotes contracts"
for db in lethe_bench lethe_bench_raw; do
    psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    sqlite3 "$work/demo/crm.db" ".schema" | grep -v "^CREATE TABLE sqlite_" | psql -q "$PGURL/$db" >/dev/null
    for t in $TABLES; do
        sqlite3 -csv "$work/demo/crm.db" "SELECT * FROM $t" | psql -q "$PGURL/$db" -c "\\copy $t FROM STDIN CSV"
    done
    psql -q "$PGURL/$db" -c "ANALYZE" >/dev/null
done
sed -e "s|^url = \"sqlite://crm.db\"|url = \"$PGURL/lethe_bench\"|" "$work/demo/lethe.toml" >"$work/demo/pg.toml"
# Cases per CRM transaction (lethe's default is 1000).
[ -z "${BATCH_CASES:-}" ] || printf '\n[apply]\nbatch_cases = %s\n' "$BATCH_CASES" >>"$work/demo/pg.toml"
echo "index + plan ..."
"$LETHE" -c "$work/demo/pg.toml" index >/dev/null
"$LETHE" -c "$work/demo/pg.toml" --format json plan >"$work/plan.json"
plan_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/plan.json")
for t in lead opportunity quote contract; do
    sqlite3 "$work/demo/lethe-state.db" "SELECT entity_key FROM plan_entities WHERE plan_id = '$plan_id' AND entity_type = '$t'" >"$work/del_$t.txt"
done
entities=$(cat "$work"/del_*.txt | wc -l)

echo "lethe apply ($entities entities planned) ..."
report=$("$LETHE" -c "$work/demo/pg.toml" --format json apply)
read -r lethe_cases lethe_deleted < <(echo "$report" | python3 -c 'import json,sys; r=json.load(sys.stdin)["apply"]; print(round(r["seconds_cases"],3), sum(r["entities_deleted"].values()))')

echo "psql: the same rows, set-based ..."
cat >"$work/raw.sql" <<SQL
BEGIN;
CREATE TEMP TABLE del_lead (id integer PRIMARY KEY);
CREATE TEMP TABLE del_opportunity (id integer PRIMARY KEY);
CREATE TEMP TABLE del_quote (id integer PRIMARY KEY);
CREATE TEMP TABLE del_contract (id integer PRIMARY KEY);
\\copy del_lead FROM '$work/del_lead.txt'
\\copy del_opportunity FROM '$work/del_opportunity.txt'
\\copy del_quote FROM '$work/del_quote.txt'
\\copy del_contract FROM '$work/del_contract.txt'
DELETE FROM contracts WHERE id IN (SELECT id FROM del_contract);
DELETE FROM quotes WHERE id IN (SELECT id FROM del_quote);
DELETE FROM opportunities WHERE id IN (SELECT id FROM del_opportunity);
DELETE FROM leads WHERE id IN (SELECT id FROM del_lead);
COMMIT;
SQL
start=$(date +%s.%N)
psql -q -v ON_ERROR_STOP=1 "$PGURL/lethe_bench_raw" -f "$work/raw.sql"
raw=$(python3 -c "import time; print(round(time.time() - $start, 3))")

# Both sides end with the same rows.
for t in $TABLES; do
    a=$(psql -tA "$PGURL/lethe_bench" -c "SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM $t")
    b=$(psql -tA "$PGURL/lethe_bench_raw" -c "SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM $t")
    [ "$a" = "$b" ] || { echo "$t differs between lethe and psql" >&2; exit 1; }
done
python3 - "$LEADS" "$entities" "$lethe_deleted" "$lethe_cases" "$raw" <<'PY'
import sys
leads, planned, deleted = map(int, sys.argv[1:4])
l, r = map(float, sys.argv[4:6])
print(f"PostgreSQL CRM, {leads} leads: {deleted} of {planned} planned entities deleted (same rows on both sides)")
print(f"  lethe apply, CRM phase: {l:8.2f} s  {deleted/l:9.0f} entities/s  (re-check in the transaction, journal, audit)")
print(f"  psql set-based DELETE : {r:8.2f} s  {deleted/r:9.0f} entities/s")
print(f"  lethe / psql: {l/r:.1f}x   (target: within 2x)")
PY
for db in lethe_bench lethe_bench_raw; do psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $db"; done

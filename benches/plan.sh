#!/usr/bin/env bash
# Benchmark: `lethe plan` against a raw pipeline doing the same reads and
# writes with the sqlite3 CLI, in the same run, on the same data:
#
#   1. the CRM's configured columns (each type's key, clock and parent
#      columns) of the four demo tables, read in full;
#   2. the index: every object (key, size, modified time, etag, status) and
#      every link (object, entity, rule, record);
#   3. the plan's rows: the cases, entities, objects and review rows lethe's
#      plan wrote, inserted again under another plan id into the same
#      tables (same indexes), in one transaction.
#
# The raw side does no evaluation at all (no graph, no policies, no
# closure): the ratio is what lethe's judgement costs on top of moving the
# same rows.
#
#   benches/plan.sh [LEADS]        default 1000000
#   CRM=postgres benches/plan.sh   the CRM's four tables copied into the
#                                  PostgreSQL database lethe_bench_plan
#                                  (dropped and re-created; PGURL, default
#                                  postgres://postgres@127.0.0.1:5432, trust
#                                  auth); the raw side reads the same
#                                  columns with psql's \copy instead
#
# BENCH_DIR=DIR reuses DIR when it holds a generated and indexed demo
# (`DIR/lethe`, `DIR/state-indexed.db`): the state is restored to the
# indexed copy before each run. Needs cargo, sqlite3, GNU time.
set -euo pipefail
LEADS="${1:-1000000}"
AS_OF="${AS_OF:-2026-12-01}"
cd "$(dirname "$0")/.."
cargo build --release -q
LETHE="${LETHE:-${CARGO_TARGET_DIR:-$PWD/target}/release/lethe}"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-plan.XXXXXX)}"
mkdir -p "$DIR"
echo "bench dir: $DIR  leads: $LEADS  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
C="$DIR/lethe/lethe.toml"
S="$DIR/lethe/lethe-state.db"
if [ ! -f "$DIR/state-indexed.db" ]; then
  "$LETHE" demo --dir "$DIR/lethe" --leads "$LEADS" --generate-only
  sed -i 's/^max_delete_fraction = .*/max_delete_fraction = 1.0/' "$C"
  "$LETHE" -c "$C" --format json index > /dev/null
  sqlite3 "$S" "PRAGMA wal_checkpoint(TRUNCATE);" > /dev/null
  cp "$S" "$DIR/state-indexed.db"
fi
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
PGDB=lethe_bench_plan
if [ "${CRM:-sqlite}" = postgres ]; then
  # The same rows, the same schema (primary keys and indexes) on the server;
  # lethe reads it through the same config with only [crm].url changed.
  psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $PGDB" -c "CREATE DATABASE $PGDB"
  sqlite3 "$DIR/lethe/crm.db" ".schema" | grep -v "^CREATE TABLE sqlite_" | psql -q "$PGURL/$PGDB" > /dev/null
  for tb in leads opportunities quotes contracts; do
    sqlite3 -csv "$DIR/lethe/crm.db" "SELECT * FROM $tb" | psql -q "$PGURL/$PGDB" -c "\\copy $tb FROM STDIN CSV"
  done
  psql -q "$PGURL/$PGDB" -c "VACUUM ANALYZE" > /dev/null
  sed -e "s|^url = \"sqlite://crm.db\"|url = \"$PGURL/$PGDB\"|" "$C" > "$DIR/lethe/pg.toml"
  grep -q "^url = \"$PGURL/$PGDB\"" "$DIR/lethe/pg.toml" || { echo "no sqlite://crm.db url in $C" >&2; exit 1; }
  C="$DIR/lethe/pg.toml"
fi
restore() { rm -f "$S-wal" "$S-shm"; cp "$DIR/state-indexed.db" "$S"; }

t() { /usr/bin/time -f "%e %M" -o "$DIR/time.$1" "${@:2}" > "$DIR/out.$1"; read -r s kb < "$DIR/time.$1"; echo "$1: ${s}s, peak RSS $((kb / 1024)) MB"; }

# lethe: a fresh plan on the indexed state.
restore
sync
t lethe "$LETHE" -c "$C" --format json plan --as-of "$AS_OF"
read -r lethe_s _ < "$DIR/time.lethe"
PLAN=$(sqlite3 "$S" "SELECT id FROM plans ORDER BY seq DESC LIMIT 1")
echo "plan $PLAN: $(sqlite3 "$S" "SELECT (SELECT count(*) FROM plan_cases WHERE plan_id='$PLAN') || ' cases, ' || (SELECT count(*) FROM plan_entities WHERE plan_id='$PLAN') || ' entities, ' || (SELECT count(*) FROM plan_objects WHERE plan_id='$PLAN') || ' objects, ' || (SELECT count(*) FROM plan_review WHERE plan_id='$PLAN') || ' review rows'")"

# The raw pipeline's rows to insert come from lethe's plan; they are set
# aside first (not timed), and the state is restored to the indexed copy.
sqlite3 "$S" > /dev/null <<SQL
ATTACH '$DIR/rows.db' AS r;
DROP TABLE IF EXISTS r.c; DROP TABLE IF EXISTS r.e; DROP TABLE IF EXISTS r.o; DROP TABLE IF EXISTS r.v;
CREATE TABLE r.c AS SELECT * FROM plan_cases WHERE plan_id='$PLAN';
CREATE TABLE r.e AS SELECT * FROM plan_entities WHERE plan_id='$PLAN';
CREATE TABLE r.o AS SELECT * FROM plan_objects WHERE plan_id='$PLAN';
CREATE TABLE r.v AS SELECT * FROM plan_review WHERE plan_id='$PLAN';
SQL
restore
sync

raw() {
  if [ "${CRM:-sqlite}" = postgres ]; then
    psql -q "$PGURL/$PGDB" > /dev/null <<'SQL'
\copy (SELECT id, modified_at, created_at FROM leads) TO '/dev/null'
\copy (SELECT id, modified_at, lead_id FROM opportunities) TO '/dev/null'
\copy (SELECT id, modified_at, opportunity_id FROM quotes) TO '/dev/null'
\copy (SELECT id, modified_at, quote_id FROM contracts) TO '/dev/null'
SQL
  else
    sqlite3 "$DIR/lethe/crm.db" > /dev/null <<'SQL'
SELECT id, modified_at, created_at FROM leads;
SELECT id, modified_at, lead_id FROM opportunities;
SELECT id, modified_at, opportunity_id FROM quotes;
SELECT id, modified_at, quote_id FROM contracts;
SQL
  fi
  sqlite3 "$S" > /dev/null <<SQL
SELECT id, key, size, modified, etag, status FROM objects;
SELECT object_id, entity_type, entity_key, rule, record FROM links;
ATTACH '$DIR/rows.db' AS r;
BEGIN;
INSERT INTO plan_cases SELECT 'raw', case_id, policy, root_type, root_key, root_kind, status, reason, attempts, claimed_by, case_clock FROM r.c;
INSERT INTO plan_entities SELECT 'raw', case_id, entity_type, entity_key, key_kind, status FROM r.e;
INSERT INTO plan_objects SELECT 'raw', item, key, size, fate, policy, links, status, reason, attempts, claimed_by, entities, records, new_digest FROM r.o;
INSERT INTO plan_review SELECT 'raw', item, kind, entity_type, key, size, fate, reason, entities FROM r.v;
COMMIT;
SQL
}
export DIR S CRM PGURL PGDB
export -f raw
t raw bash -c raw
read -r raw_s _ < "$DIR/time.raw"
restore
[ "${CRM:-sqlite}" = postgres ] && psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $PGDB"
echo "CRM: ${CRM:-sqlite}"
echo "lethe plan / raw pipeline: $(echo "scale=2; $lethe_s / $raw_s" | bc)x  (target: within 3x; under 30 s; peak RSS under 600 MB)"

#!/usr/bin/env bash
# Benchmark: lethe plan + apply on a generated CRM and technical folder,
# against the raw work done by hand in the same run on the same data:
# deleting the same files (xargs rm + find -empty -delete) and deleting the
# same rows with set-based DELETEs through the sqlite3 CLI.
#
#   benches/sweep.sh [LEADS]        default 1000000 (about 2.5M entities, 1M+ files)
#
# Needs: cargo, sqlite3, GNU time (/usr/bin/time). Writes into $BENCH_DIR
# (default: a fresh folder under /tmp) and removes nothing outside it.
set -euo pipefail
LEADS="${1:-1000000}"
cd "$(dirname "$0")/.."
cargo build --release -q
LETHE="$PWD/target/release/lethe"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-bench.XXXXXX)}"
mkdir -p "$DIR"
echo "bench dir: $DIR  leads: $LEADS"

"$LETHE" demo --dir "$DIR/lethe" --leads "$LEADS" --generate-only
C="$DIR/lethe/lethe.toml"
# The benchmark measures mass deletion on purpose.
sed -i 's/^max_delete_fraction = .*/max_delete_fraction = 1.0/' "$C"

# The raw baseline works on a copy: hard links for the files (unlinking a
# hard link costs what unlinking the file costs), a file copy of the CRM.
cp -al "$DIR/lethe/technical" "$DIR/raw-technical"
cp "$DIR/lethe/crm.db" "$DIR/raw-crm.db"

t() { /usr/bin/time -f "%e %M" -o "$DIR/time.$1" "${@:2}" > "$DIR/out.$1"; read -r s kb < "$DIR/time.$1"; echo "$1: ${s}s, peak RSS $((kb / 1024)) MB"; }

t index "$LETHE" -c "$C" --format json index
t plan "$LETHE" -c "$C" --format json plan
PLAN=$(sqlite3 "$DIR/lethe/lethe-state.db" "SELECT id FROM plans ORDER BY seq DESC LIMIT 1")
ENT=$(sqlite3 "$DIR/lethe/lethe-state.db" "SELECT count(*) FROM plan_entities WHERE plan_id='$PLAN'")
OBJ=$(sqlite3 "$DIR/lethe/lethe-state.db" "SELECT count(*) FROM plan_objects WHERE plan_id='$PLAN' AND fate <> 'redact'")
RED=$(sqlite3 "$DIR/lethe/lethe-state.db" "SELECT count(*) FROM plan_objects WHERE plan_id='$PLAN' AND fate = 'redact'")
echo "plan $PLAN: $ENT entities, $OBJ objects to delete, $RED to redact (rewritten by lethe, left to the raw side)"
# The raw side deletes what lethe deletes; the shared exports lethe redacts
# stay (the raw side has no redaction: its time is that of the deletes).
sqlite3 "$DIR/lethe/lethe-state.db" "SELECT key FROM plan_objects WHERE plan_id='$PLAN' AND fate <> 'redact'" > "$DIR/objects.txt"
t apply "$LETHE" -c "$C" --format json apply "$PLAN"

# Raw: the same files, the same rows.
start=$(date +%s.%N)
(cd "$DIR/raw-technical" && xargs -d '\n' rm -f < "$DIR/objects.txt" && find . -mindepth 1 -type d -empty -delete)
files_s=$(echo "$(date +%s.%N) - $start" | bc)
start=$(date +%s.%N)
sqlite3 "$DIR/raw-crm.db" > /dev/null <<SQL
ATTACH '$DIR/lethe/lethe-state.db' AS s;
PRAGMA secure_delete = ON;
BEGIN;
DELETE FROM contracts WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='contract');
DELETE FROM quotes WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='quote');
DELETE FROM opportunities WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='opportunity');
DELETE FROM leads WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='lead');
COMMIT;
SQL
sql_s=$(echo "$(date +%s.%N) - $start" | bc)
read -r apply_s _ < "$DIR/time.apply"
raw=$(echo "$files_s + $sql_s" | bc)
echo "raw file deletion: ${files_s}s; raw SQL delete: ${sql_s}s; together ${raw}s"
echo "ratio apply / raw: $(echo "scale=2; $apply_s / $raw" | bc)"
cases_s=$(grep -o '"seconds_cases": [0-9.]*' "$DIR/out.apply" | grep -o '[0-9.]*$')
echo "apply throughput: $(echo "$ENT / $apply_s" | bc) entities/s overall; CRM phase ${cases_s}s = $(echo "$ENT / $cases_s" | bc) entities/s (with re-check, journal and audit)"
# Same result on both sides?
for t in leads opportunities quotes contracts; do
  a=$(sqlite3 "$DIR/lethe/crm.db" "SELECT count(*) FROM $t"); b=$(sqlite3 "$DIR/raw-crm.db" "SELECT count(*) FROM $t")
  [ "$a" = "$b" ] || echo "MISMATCH in $t: lethe $a, raw $b"
done
a=$(find "$DIR/lethe/technical" -type f | wc -l); b=$(find "$DIR/raw-technical" -type f | wc -l)
[ "$a" = "$b" ] || echo "MISMATCH in files: lethe $a, raw $b"
echo "done; remove $DIR when finished"

#!/usr/bin/env bash
# Benchmark: the whole sweep — lethe index + plan + apply + verify — on a
# generated CRM and technical folder, against the raw work done by hand in
# the same run on a copy of the same data:
#   - deleting the same files (xargs rm + find -empty -delete);
#   - deleting the same rows with set-based DELETEs through the sqlite3 CLI;
#   - for verify, the same existence checks: none of the deleted files is
#     still there (xargs ls), none of the deleted rows (a count per table).
# lethe's verify also searches every remaining object for the identifiers of
# the deleted entities (the residual scan); the raw side does not, so its
# time is printed apart, and the ratio is given with and without it.
#
#   benches/sweep.sh [LEADS]        default 1000000 (about 2.5M entities, 1.5M files)
#
# BENCH_COLD=1 (as root) drops the kernel's caches (sync; drop_caches)
# before each side starts, so that both meet the store as a nightly job
# does, out of the caches; without it, whatever the copies left cached.
#
# BENCH_DIR=DIR keeps the generated data in DIR/gen and reuses it: each run
# works on fresh copies (hard links for the files: unlinking a hard link
# costs what unlinking the file costs; lethe's rewrites replace a file, they
# never write into it). Needs cargo, sqlite3, jq, bc, GNU time. Writes only
# under DIR and removes nothing outside it.
set -euo pipefail
LEADS="${1:-1000000}"
cd "$(dirname "$0")/.."
cargo build --release -q
LETHE="${LETHE:-${CARGO_TARGET_DIR:-$PWD/target}/release/lethe}"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-bench.XXXXXX)}"
mkdir -p "$DIR"
echo "bench dir: $DIR  leads: $LEADS  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
G="$DIR/gen"
if [ ! -f "$G/crm.db" ] || [ "$(cat "$G/leads" 2>/dev/null)" != "$LEADS" ]; then
  rm -rf "$G"
  "$LETHE" demo --dir "$G" --leads "$LEADS" --generate-only
  # The benchmark measures mass deletion on purpose.
  sed -i 's/^max_delete_fraction = .*/max_delete_fraction = 1.0/' "$G/lethe.toml"
  echo "$LEADS" > "$G/leads"
fi
# Fresh copies for both sides.
rm -rf "$DIR/lethe" "$DIR/raw-technical" "$DIR/raw-crm.db"
mkdir -p "$DIR/lethe"
cp "$G/lethe.toml" "$G/crm.db" "$DIR/lethe/"
cp -al "$G/technical" "$DIR/lethe/technical"
cp -al "$G/technical" "$DIR/raw-technical"
cp "$G/crm.db" "$DIR/raw-crm.db"
sync
C="$DIR/lethe/lethe.toml"
S="$DIR/lethe/lethe-state.db"
t() { /usr/bin/time -f "%e %M" -o "$DIR/time.$1" "${@:2}" > "$DIR/out.$1"; read -r s kb < "$DIR/time.$1"; echo "$1: ${s}s, peak RSS $((kb / 1024)) MB"; }
secs() { cut -d' ' -f1 "$DIR/time.$1"; }
# cold: both sides start with the kernel's caches dropped (BENCH_COLD=1).
cold() {
  if [ "${BENCH_COLD:-0}" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; echo "(caches dropped)"; fi
}
cold
t index "$LETHE" -c "$C" --format json index
t plan "$LETHE" -c "$C" --format json plan
PLAN=$(sqlite3 "$S" "SELECT id FROM plans ORDER BY seq DESC LIMIT 1")
ENT=$(sqlite3 "$S" "SELECT count(*) FROM plan_entities WHERE plan_id='$PLAN'")
OBJ=$(sqlite3 "$S" "SELECT count(*) FROM plan_objects WHERE plan_id='$PLAN' AND fate <> 'redact'")
RED=$(sqlite3 "$S" "SELECT count(*) FROM plan_objects WHERE plan_id='$PLAN' AND fate = 'redact'")
echo "plan $PLAN: $ENT entities, $OBJ objects to delete, $RED to redact (rewritten by lethe, left to the raw side)"
# The raw side deletes what lethe deletes; the shared exports lethe redacts
# stay (the raw side has no redaction: its time is that of the deletes).
sqlite3 "$S" "SELECT key FROM plan_objects WHERE plan_id='$PLAN' AND fate <> 'redact'" > "$DIR/objects.txt"
# Apply runs verify at its end (existence checks, then the residual scan).
t apply "$LETHE" -c "$C" --format json apply "$PLAN"
cases_s=$(jq '.apply.seconds_cases // .seconds_cases' "$DIR/out.apply")
objects_s=$(jq '.apply.seconds_objects // .seconds_objects' "$DIR/out.apply")
checks_s=$(jq '.verify.seconds_checks' "$DIR/out.apply")
scan_s=$(jq '.verify.seconds_scan' "$DIR/out.apply")
echo "  apply: CRM phase ${cases_s}s, objects ${objects_s}s; verify: existence checks ${checks_s}s, residual scan ${scan_s}s ($(jq '.verify.objects_scanned' "$DIR/out.apply") objects, $(jq '.verify.residual | length' "$DIR/out.apply") residual)"

# Raw: the same files, the same rows, the same existence checks.
cold
now() { date +%s.%N; }
start=$(now)
(cd "$DIR/raw-technical" && xargs -d '\n' rm -f < "$DIR/objects.txt" && find . -mindepth 1 -type d -empty -delete)
files_s=$(echo "$(now) - $start" | bc)
start=$(now)
sqlite3 "$DIR/raw-crm.db" > /dev/null <<SQL
ATTACH '$S' AS s;
PRAGMA secure_delete = ON;
BEGIN;
DELETE FROM contracts WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='contract');
DELETE FROM quotes WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='quote');
DELETE FROM opportunities WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='opportunity');
DELETE FROM leads WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='lead');
COMMIT;
SQL
sql_s=$(echo "$(now) - $start" | bc)
start=$(now)
left_files=$(cd "$DIR/raw-technical" && xargs -d '\n' ls -d -- < "$DIR/objects.txt" 2>/dev/null | wc -l || true)
left_rows=$(sqlite3 "$DIR/raw-crm.db" "ATTACH '$S' AS s;
  SELECT (SELECT count(*) FROM contracts WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='contract'))
       + (SELECT count(*) FROM quotes WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='quote'))
       + (SELECT count(*) FROM opportunities WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='opportunity'))
       + (SELECT count(*) FROM leads WHERE id IN (SELECT CAST(entity_key AS INTEGER) FROM s.plan_entities WHERE plan_id='$PLAN' AND entity_type='lead'));")
check_s=$(echo "$(now) - $start" | bc)
raw=$(echo "$files_s + $sql_s + $check_s" | bc)
echo "raw: file deletion ${files_s}s, SQL delete ${sql_s}s, existence checks ${check_s}s ($left_files files, $left_rows rows left); together ${raw}s"

lethe_all=$(echo "$(secs index) + $(secs plan) + $(secs apply)" | bc)
lethe_noscan=$(echo "$lethe_all - $scan_s" | bc)
ratio() { printf '%.2f' "$(echo "scale=3; $1 / $2" | bc)"; }
echo "apply (with verify) / raw: $(ratio "$(secs apply)" "$raw")x"
echo "sweep (index + plan + apply + verify) / raw: $(ratio "$lethe_all" "$raw")x; without the residual scan: $(ratio "$lethe_noscan" "$raw")x  (target: within 2x)"
echo "CRM phase: $(echo "$ENT / $cases_s" | bc) entities/s (with re-check, journal and audit)"
# Same result on both sides?
for t in leads opportunities quotes contracts; do
  a=$(sqlite3 "$DIR/lethe/crm.db" "SELECT count(*) FROM $t"); b=$(sqlite3 "$DIR/raw-crm.db" "SELECT count(*) FROM $t")
  [ "$a" = "$b" ] || echo "MISMATCH in $t: lethe $a, raw $b"
done
a=$(find "$DIR/lethe/technical" -type f | wc -l); b=$(find "$DIR/raw-technical" -type f | wc -l)
[ "$a" = "$b" ] || echo "MISMATCH in files: lethe $a, raw $b"
echo "done; remove $DIR when finished"

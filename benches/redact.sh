#!/usr/bin/env bash
# Benchmark: lethe's redaction of the shared monthly CSV exports of a sweep
# (exports/leads-YYYY-MM.csv, `;`, BOM, CRLF: rows of deleted and of kept
# leads), against the filter a user would write for the same rows, in one
# run on the same data: awk dropping the rows whose LeadId is to go and
# keeping every other byte. Both outputs are compared byte for byte.
#
#   benches/redact.sh [LEADS]        default 1000000; 100000 for a quick run
#
# What is timed:
# - awk: one `LC_ALL=C awk` per export over a pristine copy, writing to a
#   new file (no fsync), all exports in sequence, three times (the median
#   counts); mawk too if installed and not the awk,
#   csvgrep -i (csvkit) if installed (its output re-quotes, so it is timed,
#   not compared).
# - lethe: the object phase of `lethe apply` of the sweep's plan when that
#   phase holds only the plan's redactions: re-check, spool, the two passes
#   of the engine, the proof by re-extraction, digest, intent, atomic
#   rewrite (temp file, fsync, rename) and the journal step with the new
#   index entry and the audit record, per object. To get there the plan is
#   applied in two runs of `lethe apply`, as an apply stopped and resumed
#   would be: the first with the redactions set aside (journaled `skipped`
#   in `plan_objects`), so it deletes the CRM rows and the plan's other
#   objects; then the redactions are opened again (`planned`, the plan
#   `applying`) and the second run, the one measured, resumes with nothing
#   but them and ends where one uninterrupted apply would. Its
#   `seconds_objects` is the figure; its peak RSS (GNU time) covers the
#   whole process, including the verify that follows every apply, so a
#   `lethe verify` of the same plan is measured alone as well.
#
# Needs: cargo, sqlite3 (with JSON functions), jq, GNU time (/usr/bin/time),
# awk, cmp, bc. Writes into $BENCH_DIR (default: a fresh folder under /tmp)
# and removes nothing outside it.
set -euo pipefail
export LC_NUMERIC=C
LEADS="${1:-1000000}"
cd "$(dirname "$0")/.."
cargo build --release -q
LETHE="${CARGO_TARGET_DIR:-$PWD/target}/release/lethe"
case "$LETHE" in /*) ;; *) LETHE="$PWD/$LETHE" ;; esac
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-redact.XXXXXX)}"
mkdir -p "$DIR"
echo "bench dir: $DIR  leads: $LEADS"

die() { echo "FAILED: $*" >&2; exit 1; }
# t NAME CMD...: runs CMD, its output to out.NAME, "seconds KB" to time.NAME.
t() {
  local rc=0 s kb
  /usr/bin/time -f "%e %M" -o "$DIR/time.$1" "${@:2}" > "$DIR/out.$1" || rc=$?
  tail -n 1 "$DIR/time.$1" > "$DIR/time.$1.tmp" && mv "$DIR/time.$1.tmp" "$DIR/time.$1"
  read -r s kb < "$DIR/time.$1"
  echo "$1: ${s}s, peak RSS $((kb / 1024)) MB$([ "$rc" = 0 ] || echo " (exit $rc)")"
  return "$rc"
}
# apply and verify exit 3 when the store still names deleted entities (the
# first run leaves the exports unredacted on purpose).
t3() { local rc=0; t "$@" || rc=$?; [ "$rc" = 0 ] || [ "$rc" = 3 ] || die "$1 exited $rc (see $DIR/out.$1)"; }

"$LETHE" demo --dir "$DIR/lethe" --leads "$LEADS" --generate-only > /dev/null
C="$DIR/lethe/lethe.toml"
S="$DIR/lethe/lethe-state.db"
T="$DIR/lethe/technical"
# The sweep deletes most of the old leads on purpose.
sed -i 's/^max_delete_fraction = .*/max_delete_fraction = 1.0/' "$C"

t index "$LETHE" -c "$C" --format json index
t plan "$LETHE" -c "$C" --format json plan
PLAN=$(sqlite3 "$S" "SELECT id FROM plans ORDER BY seq DESC LIMIT 1")
sq() { sqlite3 "$S" "$@"; }

# The plan's redactions: files, and the lead ids of the rows they remove
# (each planned record, e.g. `row 7`, is a row link of the index).
sq "SELECT key FROM plan_objects WHERE plan_id='$PLAN' AND fate='redact' ORDER BY key" > "$DIR/redact.txt"
FILES=$(wc -l < "$DIR/redact.txt")
[ "$FILES" -gt 0 ] || die "the plan redacts nothing"
grep -vq '^exports/leads-[0-9-]*\.csv$' "$DIR/redact.txt" && die "the plan redacts more than the CSV exports: $(grep -v '^exports/' "$DIR/redact.txt" | head -3)"
RECORDS=$(sq "SELECT sum(json_array_length(records, '\$.records')) FROM plan_objects WHERE plan_id='$PLAN' AND fate='redact'")
# (The records to find, indexed in a temporary table; the links scanned
# once with it as the inner loop: a join driven by the records probes every
# link of the object per record, which at 1M leads runs for many minutes.)
sq -separator $'\t' "
  CREATE TEMP TABLE want AS
    SELECT po.key AS key, o.id AS oid, r.value AS record, json_extract(po.records, '\$.rule') AS rule
    FROM plan_objects po
    JOIN json_each(po.records, '\$.records') r
    JOIN objects o ON o.key = po.key
    WHERE po.plan_id = '$PLAN' AND po.fate = 'redact';
  CREATE INDEX temp.want_at ON want(oid, record, rule);
  SELECT w.key, l.entity_key
  FROM links l CROSS JOIN want w ON w.oid = l.object_id AND w.record = l.record AND w.rule = l.rule
  ORDER BY w.key, l.entity_key" > "$DIR/remove.tsv"
ROWS=$(wc -l < "$DIR/remove.tsv")
[ "$ROWS" = "$RECORDS" ] || die "the plan removes $RECORDS records, the index names $ROWS of them"
mkdir -p "$DIR/ids" "$DIR/orig" "$DIR/awk"
awk -F'\t' -v d="$DIR/ids" '{ f = $1; sub(/^exports\//, "", f); print $2 > (d "/" f ".ids") }' "$DIR/remove.tsv"
# Pristine inputs for the filters, taken before lethe rewrites anything.
while read -r k; do cp -p "$T/$k" "$DIR/orig/"; done < "$DIR/redact.txt"
BYTES=$(cat "$DIR/orig/"*.csv | wc -c)
echo "plan $PLAN: $FILES exports to redact, $ROWS rows to remove, $BYTES bytes"

# The peer: per export, drop the data rows whose first field is to go; the
# header and every byte of the other rows (CR included) stay.
FILTER='FILENAME == ARGV[1] { gone[$0]; next } FNR > 1 && ($1 in gone) { next } { print }'
now() { date +%s.%N; }
secs() { printf "%.3f" "$(echo "$1" | bc)"; } # secs EXPR
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
run_filter() { # awk-binary out-dir
  local f
  for f in "$DIR/orig/"*.csv; do
    LC_ALL=C "$1" -F';' "$FILTER" "$DIR/ids/$(basename "$f").ids" "$f" > "$2/$(basename "$f")"
  done
}
# timed_filter AWK OUT: three runs over all exports, each time printed;
# sets $med to the median.
timed_filter() {
  local i start all=()
  for i in 1 2 3; do
    start=$(now); run_filter "$1" "$2"; all+=("$(secs "$(now) - $start")")
  done
  med=$(printf '%s\n' "${all[@]}" | sort -n | sed -n 2p)
  echo "$1 ($(readlink -f "$(command -v "$1")")): ${all[*]} s, median ${med}s"
}
sync
timed_filter awk "$DIR/awk"; awk_s=$med
mawk_s=
if command -v mawk > /dev/null && [ "$(readlink -f "$(command -v mawk)")" != "$(readlink -f "$(command -v awk)")" ]; then
  mkdir -p "$DIR/mawk"
  timed_filter mawk "$DIR/mawk"; mawk_s=$med
  for f in "$DIR/awk/"*.csv; do cmp -s "$f" "$DIR/mawk/$(basename "$f")" || die "mawk and awk differ on $(basename "$f")"; done
fi
if command -v csvgrep > /dev/null; then
  mkdir -p "$DIR/csvgrep"
  start=$(now)
  for f in "$DIR/orig/"*.csv; do
    csvgrep -d ';' -e utf-8-sig -c LeadId -i -f "$DIR/ids/$(basename "$f").ids" "$f" > "$DIR/csvgrep/$(basename "$f")"
  done
  echo "csvgrep -i: $(secs "$(now) - $start")s (not byte-compared: csvkit rewrites delimiters and quoting)"
fi

# lethe, run 1: the CRM rows and the plan's deletes, the redactions set aside.
sq "UPDATE plan_objects SET status='skipped', reason='benchmark: redacted by the next run' WHERE plan_id='$PLAN' AND fate='redact'"
t3 crm "$LETHE" -c "$C" --format json apply "$PLAN"
[ "$(jq '.apply.objects_redacted' "$DIR/out.crm")" = 0 ] || die "the first run redacted"
# lethe, run 2: the redactions alone, as the resume of a stopped apply.
sq "BEGIN;
    UPDATE plan_objects SET status='planned', reason=NULL, claimed_by=NULL, attempts=0 WHERE plan_id='$PLAN' AND fate='redact';
    UPDATE plans SET status='applying' WHERE id='$PLAN';
    COMMIT;"
# The state as the measured run finds it, kept so the run can be repeated:
#   cp "$DIR/before-redact/"* "$DIR/lethe/" && cp "$DIR/orig/"*.csv "$T/exports/"
mkdir -p "$DIR/before-redact"
sq "PRAGMA wal_checkpoint(TRUNCATE)" > /dev/null
cp "$S" "$DIR/before-redact/"
sync
t3 redact "$LETHE" -c "$C" --format json apply "$PLAN"
A="$DIR/out.redact"
[ "$(jq '.apply.objects_redacted' "$A")" = "$FILES" ] || die "lethe redacted $(jq '.apply.objects_redacted' "$A") of $FILES exports: $(jq -c '.apply.failures, .apply.skipped_reasons' "$A")"
[ "$(jq '.apply.records_removed' "$A")" = "$ROWS" ] || die "lethe removed $(jq '.apply.records_removed' "$A") of $ROWS rows"
lethe_s=$(printf "%.3f" "$(jq '.apply.seconds_objects' "$A")")
read -r redact_wall redact_kb < "$DIR/time.redact"
left=$(jq '.verify.residual | length' "$A")
[ "$left" = 0 ] || echo "NOTE: after the redactions, verify still finds $left objects naming deleted leads"
t3 verify "$LETHE" -c "$C" --format json verify "$PLAN"
read -r _ verify_kb < "$DIR/time.verify"

# Same bytes?
for k in $(cat "$DIR/redact.txt"); do
  cmp "$T/$k" "$DIR/awk/$(basename "$k")" || die "lethe and awk differ on $k"
done
OUT=$(cat "$DIR/awk/"*.csv | wc -c)
echo "lethe's $FILES redacted exports are byte-identical to awk's"

echo
echo "leads: $LEADS; exports redacted: $FILES; rows removed: $ROWS; bytes: $BYTES in, $OUT out"
echo "awk:   ${awk_s}s${mawk_s:+  (mawk ${mawk_s}s)} (medians of three)"
echo "lethe: ${lethe_s}s (object phase of the redaction-only apply; the process ${redact_wall}s, apply $(printf "%.3f" "$(jq '.apply.seconds' "$A")")s, the rest start and verify)"
echo "ratio lethe / awk: $(ratio "$lethe_s" "$awk_s")${mawk_s:+; lethe / mawk: $(ratio "$lethe_s" "$mawk_s")}"
echo "lethe peak RSS: $((redact_kb / 1024)) MB (whole apply process, with its verify); lethe verify alone: $((verify_kb / 1024)) MB"
echo "| leads | exports | rows removed | MB | awk s | lethe s | lethe / awk | lethe peak RSS |"
echo "| $LEADS | $FILES | $ROWS | $(printf "%.1f" "$(echo "scale=3; $BYTES / 1000000" | bc)") | $awk_s | $lethe_s | $(ratio "$lethe_s" "$awk_s") | $((redact_kb / 1024)) MB |"
echo "done; remove $DIR when finished"

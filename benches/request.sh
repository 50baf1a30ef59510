#!/usr/bin/env bash
# Benchmark: `lethe request erase` for one subject on the demo data, against
# what a person would do by hand, in one run on the same data:
#
#   lethe: `request erase --subject email=ADDRESS` — resolve the subject by
#          SQL on the identifier columns, read its subtrees, judge them with
#          the request policies, give every linked object its fate, search
#          the whole store for objects naming the subject, write the plan.
#          Its JSON says `seconds` (all of it) and `seconds_scan` (the store
#          search); the rest is "to a stored plan".
#   peer:  a hand-written SQL lookup of the subject and its chain
#          (leads → opportunities → quotes → contracts, by the same
#          expression index) with the sqlite3 / psql CLI, plus `rg -l -F -i`
#          of the address over the technical folder.
#
# Both CRMs: SQLite (the demo's) and PostgreSQL (the same tables copied into
# the database lethe_bench_request, dropped and re-created; nothing else is
# touched). Each with `CREATE INDEX … ON leads (lower(trim(email)))`, as
# README advises. Each figure is the best of three.
#
#   benches/request.sh [LEADS]    default 1000000; 100000 for a quick run
#   PGURL=postgres://postgres@127.0.0.1:5432  (trust auth); PG=0 skips it
#
# Needs: cargo, sqlite3, psql, jq, ripgrep (installed when missing).
# Writes into $BENCH_DIR (default: a fresh folder under /tmp).
set -euo pipefail
export LC_NUMERIC=C
LEADS="${1:-1000000}"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
PG="${PG:-1}"
cd "$(dirname "$0")/.."
command -v rg >/dev/null || { apt-get update -qq && apt-get install -y -qq ripgrep >/dev/null; }
cargo build --release -q
LETHE="${CARGO_TARGET_DIR:-$PWD/target}/release/lethe"
case "$LETHE" in /*) ;; *) LETHE="$PWD/$LETHE" ;; esac
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-request.XXXXXX)}"
mkdir -p "$DIR"
echo "bench dir: $DIR  leads: $LEADS"
die() { echo "FAILED: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { printf "%.3f" "$(echo "$1" | bc)"; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
best() { printf '%s\n' "$@" | sort -n | head -n 1; }

[ -f "$DIR/lethe/crm.db" ] || "$LETHE" demo --dir "$DIR/lethe" --leads "$LEADS" --generate-only > /dev/null
C="$DIR/lethe/lethe.toml"
T="$DIR/lethe/technical"
CRM="$DIR/lethe/crm.db"
sqlite3 "$CRM" "CREATE INDEX IF NOT EXISTS leads_email ON leads (lower(trim(email))); ANALYZE;"
start=$(now)
"$LETHE" -c "$C" --format json index > "$DIR/index.json"
echo "index: $(secs "$(now) - $start")s ($(jq .objects_total "$DIR/index.json" 2>/dev/null || echo '?') objects)"
FILES=$(find "$T" -type f | wc -l)
BYTES=$(du -sb "$T" | cut -f1)

# The subject: the lead in the middle of the table (what it links is
# reported by lethe: objects to delete and to redact).
ID=$((LEADS / 2))
EMAIL=$(sqlite3 "$CRM" "SELECT trim(email) FROM leads WHERE id = $ID")
[ -n "$EMAIL" ] || die "lead $ID has no e-mail"
LOWER=$(printf '%s' "$EMAIL" | tr '[:upper:]' '[:lower:]')
echo "subject: lead $ID's e-mail address (not printed); store: $FILES files, $BYTES bytes"

# The peer's SQL: the subject's leads by the index, then their chain.
CHAIN_SQL="
  WITH l AS (SELECT id FROM leads WHERE lower(trim(email)) = '$LOWER'),
       o AS (SELECT id FROM opportunities WHERE lead_id IN (SELECT id FROM l)),
       q AS (SELECT id FROM quotes WHERE opportunity_id IN (SELECT id FROM o)),
       c AS (SELECT id FROM contracts WHERE quote_id IN (SELECT id FROM q))
  SELECT 'lead', id FROM l UNION ALL SELECT 'opportunity', id FROM o
  UNION ALL SELECT 'quote', id FROM q UNION ALL SELECT 'contract', id FROM c;"

# run_lethe CONFIG LABEL: three erasures (each a new request and plan),
# sets l_all, l_plan, l_scan to the best of each.
run_lethe() {
  local i all=() plan=() scan=() o
  for i in 1 2 3; do
    o="$DIR/erase.$2.$i.json"
    "$LETHE" -c "$1" --format json request erase --subject "email=$EMAIL" --reference "BENCH-$2-$i" > "$o" \
      || die "request erase exited $? ($o)"
    all+=("$(jq .seconds "$o")"); scan+=("$(jq .seconds_scan "$o")")
    plan+=("$(jq '.seconds - .seconds_scan' "$o")")
  done
  l_all=$(printf "%.3f" "$(best "${all[@]}")"); l_plan=$(printf "%.3f" "$(best "${plan[@]}")")
  l_scan=$(printf "%.3f" "$(best "${scan[@]}")")
  found=$(jq .entities_found "$o")
  printf "lethe (%s): %ss to a stored plan (best of three), store search %ss, in all %ss; %s entities found, %s objects to delete, %s to redact\n" \
    "$2" "$l_plan" "$l_scan" "$l_all" "$found" "$(jq .plan.objects.delete "$o")" "$(jq .plan.objects.redact "$o")"
}
# run_peer LABEL SQL-CMD...: sets p_sql, p_rg (best of three each).
run_peer() {
  local i s sq=() r=() label=$1; shift
  for i in 1 2 3; do
    s=$(now); "$@" > "$DIR/peer.$label.sql"; sq+=("$(secs "$(now) - $s")")
  done
  for i in 1 2 3; do
    s=$(now); rg -l -F -i "$EMAIL" "$T" > "$DIR/peer.rg" || true; r+=("$(secs "$(now) - $s")")
  done
  p_sql=$(best "${sq[@]}"); p_rg=$(best "${r[@]}")
  echo "peer ($label): SQL lookup of the chain ${p_sql}s ($(wc -l < "$DIR/peer.$label.sql") rows; ${sq[*]}), rg -l ${p_rg}s ($(wc -l < "$DIR/peer.rg") files; ${r[*]})"
}
rows=()
sync
run_peer sqlite sqlite3 "$CRM" "$CHAIN_SQL"
run_lethe "$C" sqlite
[ "$found" = "$(wc -l < "$DIR/peer.sqlite.sql")" ] || echo "NOTE: lethe found $found entities, the SQL $(wc -l < "$DIR/peer.sqlite.sql") rows"
rows+=("| SQLite | $l_plan | $p_sql | $l_scan | $p_rg | $l_all | $(ratio "$l_all" "$(echo "$p_sql + $p_rg" | bc)") |")

if [ "$PG" = 1 ]; then
  DB=lethe_bench_request
  psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  sqlite3 "$CRM" ".schema" | grep -v "^CREATE TABLE sqlite_" | grep -v "^CREATE INDEX leads_email" | psql -q "$PGURL/$DB" > /dev/null
  for t in leads opportunities quotes contracts; do
    sqlite3 -csv "$CRM" "SELECT * FROM $t" | psql -q "$PGURL/$DB" -c "\\copy $t FROM STDIN CSV"
  done
  psql -q "$PGURL/$DB" -c "CREATE INDEX leads_email ON leads (lower(trim(email)))" -c "ANALYZE" > /dev/null
  sed -e "s|^url = \"sqlite://crm.db\"|url = \"$PGURL/$DB\"|" "$C" > "$DIR/lethe/pg.toml"
  # The index is the store's: the same state, the same plan shapes.
  run_peer postgres psql -qtA "$PGURL/$DB" -c "$CHAIN_SQL"
  run_lethe "$DIR/lethe/pg.toml" postgres
  rows+=("| PostgreSQL | $l_plan | $p_sql | $l_scan | $p_rg | $l_all | $(ratio "$l_all" "$(echo "$p_sql + $p_rg" | bc)") |")
fi

echo
echo "leads: $LEADS; store: $FILES files, $(echo "$BYTES / 1000000" | bc) MB"
echo "| CRM | lethe to stored plan s | SQL lookup s | lethe store search s | rg -l s | lethe all s | lethe / (SQL + rg) |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "done; remove $DIR when finished${PG:+ (and DROP DATABASE lethe_bench_request)}"

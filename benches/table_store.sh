#!/usr/bin/env bash
# The payload table store (url = "crm://") on PostgreSQL, in one run:
#   1. a database lethe_bench_table (dropped and re-created: nothing else is
#      touched) with N leads, all due, and N payload rows of about 10 KB of
#      Base64 text each (a JSON document naming its lead), and a copy of the
#      payload table for psql;
#   2. lethe index (list, read, decode, parse every body) vs. psql decoding
#      the same bodies and grepping their lead ids;
#   3. lethe plan + apply; the object phase (lethe's delete of the N payload
#      rows, each judged on its locked row, journaled and audited) vs. one
#      set-based DELETE of the copy's rows through psql.
# Prints the seconds and the ratios (targets: index and delete within 2x).
# Usage: benches/table_store.sh [N]   (default 100000)
#        PGURL=postgres://postgres@127.0.0.1:5432   (the server; trust auth)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=lethe_bench_table
cargo build --release --quiet
LETHE=${CARGO_TARGET_DIR:-$PWD/target}/release/lethe
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

echo "generating $N leads and $N payload rows ..."
psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql -q "$PGURL/$DB" <<SQL
CREATE TABLE leads (id BIGINT PRIMARY KEY, modified_at TIMESTAMPTZ);
CREATE TABLE payloads (id BIGINT PRIMARY KEY, filename TEXT, body TEXT,
                       modified_on TIMESTAMPTZ, version BIGINT);
INSERT INTO leads SELECT i, '2020-01-01' FROM generate_series(1, $N) i;
-- About 7.5 KB of JSON, about 10 KB as Base64 (without line breaks).
INSERT INTO payloads
SELECT i, 'inbound/' || i || '.json',
       replace(encode(convert_to(
         '{"lead": {"id": ' || i || '}, "note": "' || repeat(md5(i::text), 234) || '"}',
         'UTF8'), 'base64'), chr(10), ''),
       '2020-01-02', 1
FROM generate_series(1, $N) i;
CREATE TABLE payloads_copy AS SELECT * FROM payloads;
ALTER TABLE payloads_copy ADD PRIMARY KEY (id);
VACUUM ANALYZE;
SQL

cat >"$work/lethe.toml" <<TOML
[crm]
url = "$PGURL/$DB"
[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"
[technical]
url = "crm://"
[technical.table]
table = "payloads"
key = "id"
body = "body"
encoding = "base64"
name = "filename"
modified = "modified_on"
version = "version"
[[technical.link]]
glob = "**/*.json"
json = "\$.lead.id"
entity = "lead"
[safety]
max_delete_fraction = 1.0
[[policy]]
name = "leads"
root = "lead"
retain = "24 months"
basis = "GDPR Art. 5(1)(e)"
[state]
url = "sqlite://$work/state.db"
[audit]
key = "table-store-bench-audit-key-0001"
TOML

echo "index vs. psql decode + grep ..."
t0=$(now)
"$LETHE" -c "$work/lethe.toml" --format json index >"$work/index.json"
t1=$(now)
found=$(psql -q "$PGURL/$DB" -Atc \
  "\\copy (SELECT convert_from(decode(body, 'base64'), 'UTF8') FROM payloads_copy) TO STDOUT" \
  | grep -o '"lead": {"id": [0-9]*' | wc -l)
t2=$(now)
index_s=$(secs "$t0" "$t1"); grep_s=$(secs "$t1" "$t2")
links=$(python3 -c "import json,sys; print(sum(json.load(open(sys.argv[1]))['links_per_rule']))" "$work/index.json")
[ "$links" = "$N" ] && [ "$found" = "$N" ] || { echo "links $links, grep $found, want $N" >&2; exit 1; }

echo "plan + apply vs. one DELETE ..."
"$LETHE" -c "$work/lethe.toml" --format json plan >/dev/null
"$LETHE" -c "$work/lethe.toml" --format json apply >"$work/apply.json" || true
objects_s=$(python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['apply']; assert a['objects_deleted']==int(sys.argv[2]), a; print(a['seconds_objects'])" "$work/apply.json" "$N")
t3=$(now)
psql -q "$PGURL/$DB" -c "DELETE FROM payloads_copy"
t4=$(now)
delete_s=$(secs "$t3" "$t4")
left=$(psql -q "$PGURL/$DB" -Atc "SELECT count(*) FROM payloads")
[ "$left" = 0 ] || { echo "$left payload rows left" >&2; exit 1; }

printf 'payload rows:            %s (10 KB Base64 each)\n' "$N"
printf 'lethe index:             %.2f s\n' "$index_s"
printf 'psql decode + grep:      %.2f s\n' "$grep_s"
printf 'index ratio:             %.2fx\n' "$(echo "$index_s / $grep_s" | bc -l)"
printf 'lethe apply, objects:    %.2f s\n' "$objects_s"
printf 'one set-based DELETE:    %.2f s\n' "$delete_s"
printf 'delete ratio:            %.2fx\n' "$(echo "$objects_s / $delete_s" | bc -l)"
psql -q "$PGURL/postgres" -c "DROP DATABASE IF EXISTS $DB"

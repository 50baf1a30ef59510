#!/usr/bin/env bash
# Benchmark: `lethe index` on a ~1 GB payload corpus, per format against the
# usual tool extracting the same field from the same files, and over the
# whole corpus against the read limit (cat); in one run on the same files,
# warm cache:
#   JSON: lethe with only the JSON rule over only the JSON files vs. jq;
#   XML:  lethe with only the XML rule over only the XML files vs. xmlstarlet;
#   CSV:  lethe with only the CSV rule over only the CSV exports vs. awk
#         printing the column (and csvcut, when csvkit is installed); and the
#         exports' links stored per second;
#   all:  lethe cold over the whole corpus vs. cat; then `lethe index` again
#         on the unchanged store.
# Each lethe run starts from an empty state store of its own; each per-format
# figure, of lethe and of the other tool alike, is the median of three runs.
#
#   benches/index.sh [MEGABYTES]     default 1000
#   BENCH_DIR=/some/dir reuses a corpus; LETHE_BIN=/path/to/lethe measures
#   another build (an older one, for a before/after).
#
# Needs: cargo, python3, jq, xmlstarlet (Debian packages), GNU time, bc.
set -euo pipefail
MB="${1:-1000}"
cd "$(dirname "$0")/.."
for tool in jq xmlstarlet; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
cargo build --release -q
LETHE="${LETHE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/lethe}"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-index-bench.XXXXXX)}"
mkdir -p "$DIR"
[ -d "$DIR/technical/json" ] || python3 benches/gen_corpus.py "$DIR/technical" "$MB"
# config NAME STORE RULES...: $DIR/NAME.toml over $DIR/STORE with its own
# state store, the given link rules (TOML) and the CRM types they name.
config() {
  local name=$1 store=$2; shift 2
  {
    cat <<TOML
[crm]
url = "sqlite://crm.db"
[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"
[crm.entities.quote]
table = "quotes"
key = "id"
clock = "modified_at"
[technical]
url = "$store"
[state]
url = "sqlite://state-$name.db"
[[policy]]
name = "p"
root = "lead"
retain = "24 months"
basis = "bench"
[audit]
key = "bench-key-0123456789"
TOML
    for rule in "$@"; do printf '[[technical.link]]\n%s\n' "$rule"; done
  } > "$DIR/$name.toml"
  rm -f "$DIR/state-$name.db"*
}
JSON_RULE=$'json = "$.lead.id"\nentity = "lead"'
XML_RULE=$'xml = "/Quotation/ID"\nentity = "quote"'
CSV_RULE=$'csv = "LeadId"\nentity = "lead"'
config all technical $'glob = "json/**/*.json"\n'"$JSON_RULE" $'glob = "xml/**/*.xml"\n'"$XML_RULE" $'glob = "csv/*.csv"\n'"$CSV_RULE"
config json technical/json $'glob = "**/*.json"\n'"$JSON_RULE"
config xml technical/xml $'glob = "**/*.xml"\n'"$XML_RULE"
config csv technical/csv $'glob = "*.csv"\n'"$CSV_RULE"

bytes() { du -sb "$1" | cut -f1; }
ALL=$(bytes "$DIR/technical"); JS=$(bytes "$DIR/technical/json"); XS=$(bytes "$DIR/technical/xml"); CS=$(bytes "$DIR/technical/csv")
secs() { local s; s=$(date +%s.%N); "$@" > /dev/null; printf '%.2f' "$(echo "$(date +%s.%N) - $s" | bc)"; }
rate() { echo "scale=1; $1 / $2 / 1000000" | bc; }
ratio() { printf '%.2f' "$(echo "scale=3; $1 / $2" | bc)"; }
# lethe_run NAME: the seconds of `lethe index` with NAME.toml (on the state
# store as it is: new from `config`, or the last run's).
lethe_run() {
  /usr/bin/time -f "%e %M" -o "$DIR/time.$1" "$LETHE" -c "$DIR/$1.toml" --format json index > "$DIR/out.$1"
  cut -d' ' -f1 "$DIR/time.$1"
}
# lethe_fresh NAME: lethe_run from an empty state store.
lethe_fresh() { rm -f "$DIR/state-$1.db"*; lethe_run "$1"; }
# median3 CMD...: the median seconds of three runs of a timing command (the
# per-format figures, both sides: on these noisy machines one run can be
# half again as slow as the next).
median3() { local a b c; a=$("$@"); b=$("$@"); c=$("$@"); printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -n | sed -n 2p; }

echo "load before: $(uptime | sed 's/.*load average: //')"
find "$DIR/technical" -type f -print0 | xargs -0 cat > /dev/null   # warm the cache
cat_s=$(secs sh -c "find '$DIR/technical' -type f -print0 | xargs -0 cat")
jq_s=$(median3 secs sh -c "find '$DIR/technical/json' -name '*.json' -print0 | xargs -0 jq -r '.lead.id'")
json_s=$(median3 lethe_fresh json)
xs_s=$(median3 secs sh -c "find '$DIR/technical/xml' -name '*.xml' -print0 | xargs -0 xmlstarlet sel -N q=urn:oasis:names:specification:ubl:schema:xsd:Quotation-2 -N cbc=urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2 -t -v /q:Quotation/cbc:ID -n")
xml_s=$(median3 lethe_fresh xml)
# awk: the LeadId column of every row but the header, by its header position.
awk_s=$(median3 secs sh -c "find '$DIR/technical/csv' -name '*.csv' -print0 | xargs -0 awk -F';' 'FNR == 1 { for (i = 1; i <= NF; i++) if (\$i == \"LeadId\") c = i; next } { print \$c }'")
csvcut_s=""
if command -v csvcut > /dev/null; then
  csvcut_s=$(secs sh -c "for f in '$DIR'/technical/csv/*.csv; do csvcut -d ';' -c LeadId \"\$f\"; done")
fi
csv_s=$(median3 lethe_fresh csv)
csv_links=$(jq '.links_per_rule[0]' "$DIR/out.csv")
cold_s=$(lethe_run all)
read -r _ cold_kb < "$DIR/time.all"
warm_s=$(lethe_run all)
echo "load after: $(uptime | sed 's/.*load average: //')"

echo "corpus: $(echo "$ALL / 1000000" | bc) MB ($(echo "$JS / 1000000" | bc) MB json, $(echo "$XS / 1000000" | bc) MB xml, $(echo "$CS / 1000000" | bc) MB csv)"
echo "json:  jq ${jq_s}s $(rate "$JS" "$jq_s") MB/s;  lethe ${json_s}s $(rate "$JS" "$json_s") MB/s;  lethe/jq $(ratio "$jq_s" "$json_s")x"
echo "xml:   xmlstarlet ${xs_s}s $(rate "$XS" "$xs_s") MB/s;  lethe ${xml_s}s $(rate "$XS" "$xml_s") MB/s;  lethe/xmlstarlet $(ratio "$xs_s" "$xml_s")x"
echo "csv:   awk ${awk_s}s $(rate "$CS" "$awk_s") MB/s;${csvcut_s:+  csvcut ${csvcut_s}s $(rate "$CS" "$csvcut_s") MB/s;}  lethe ${csv_s}s $(rate "$CS" "$csv_s") MB/s, $csv_links links, $(echo "$csv_links / $csv_s" | bc) links/s;  lethe/awk $(ratio "$awk_s" "$csv_s")x"
echo "all:   cat ${cat_s}s $(rate "$ALL" "$cat_s") MB/s;  lethe cold ${cold_s}s $(rate "$ALL" "$cold_s") MB/s (peak RSS $((cold_kb / 1024)) MB);  lethe/cat $(ratio "$cat_s" "$cold_s")"
echo "warm:  lethe ${warm_s}s on the unchanged store ($(echo "scale=3; $warm_s / $cold_s" | bc) of cold)"
echo "links per rule (json, xml, csv): $(jq -c '.links_per_rule' "$DIR/out.all")"
echo "remove $DIR when finished"

#!/usr/bin/env bash
# Benchmark: `lethe index` on a ~1 GB payload corpus against the read limit
# (cat) and the usual tools extracting one field per file (jq, xmlstarlet),
# in one run on the same files, warm cache; then `lethe index` again on the
# unchanged store.
#
#   benches/index.sh [MEGABYTES]     default 1000
#
# Needs: cargo, python3, jq, xmlstarlet (Debian packages), GNU time.
set -euo pipefail
MB="${1:-1000}"
cd "$(dirname "$0")/.."
for tool in jq xmlstarlet; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null; }
done
cargo build --release -q
LETHE="$PWD/target/release/lethe"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-index-bench.XXXXXX)}"
mkdir -p "$DIR"
[ -d "$DIR/technical/json" ] || python3 benches/gen_corpus.py "$DIR/technical" "$MB"
cat > "$DIR/lethe.toml" <<TOML
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
url = "technical"
[[technical.link]]
glob = "json/**/*.json"
json = "\$.lead.id"
entity = "lead"
[[technical.link]]
glob = "xml/**/*.xml"
xml = "/Quotation/ID"
entity = "quote"
[[technical.link]]
glob = "csv/*.csv"
csv = "LeadId"
entity = "lead"
[[policy]]
name = "p"
root = "lead"
retain = "24 months"
basis = "bench"
[audit]
key = "bench-key-0123456789"
TOML
rm -f "$DIR"/lethe-state.db*
bytes() { du -sb "$1" | cut -f1; }
ALL=$(bytes "$DIR/technical"); JS=$(bytes "$DIR/technical/json"); XS=$(bytes "$DIR/technical/xml")
secs() { local s; s=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $s" | bc; }
rate() { echo "scale=1; $1 / $2 / 1000000" | bc; }

find "$DIR/technical" -type f -print0 | xargs -0 cat > /dev/null   # warm the cache
cat_s=$(secs sh -c "find '$DIR/technical' -type f -print0 | xargs -0 cat")
jq_s=$(secs sh -c "find '$DIR/technical/json' -name '*.json' -print0 | xargs -0 jq -r '.lead.id'")
xs_s=$(secs sh -c "find '$DIR/technical/xml' -name '*.xml' -print0 | xargs -0 xmlstarlet sel -N q=urn:oasis:names:specification:ubl:schema:xsd:Quotation-2 -N cbc=urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2 -t -v /q:Quotation/cbc:ID -n")
/usr/bin/time -f "%e %M" -o "$DIR/time.cold" "$LETHE" -c "$DIR/lethe.toml" --format json index > "$DIR/out.cold"
read -r cold_s cold_kb < "$DIR/time.cold"
/usr/bin/time -f "%e %M" -o "$DIR/time.warm" "$LETHE" -c "$DIR/lethe.toml" --format json index > "$DIR/out.warm"
read -r warm_s _ < "$DIR/time.warm"

echo "corpus: $(echo "$ALL / 1000000" | bc) MB ($(echo "$JS / 1000000" | bc) MB json, $(echo "$XS / 1000000" | bc) MB xml)"
echo "cat:        ${cat_s}s  $(rate "$ALL" "$cat_s") MB/s"
echo "jq:         ${jq_s}s  $(rate "$JS" "$jq_s") MB/s (json only)"
echo "xmlstarlet: ${xs_s}s  $(rate "$XS" "$xs_s") MB/s (xml only)"
echo "lethe cold: ${cold_s}s  $(rate "$ALL" "$cold_s") MB/s, peak RSS $((cold_kb / 1024)) MB"
echo "lethe warm: ${warm_s}s  (unchanged store; $(echo "scale=3; $warm_s / $cold_s" | bc) of cold)"
echo "ratios: lethe/cat $(echo "scale=2; $cat_s / $cold_s" | bc), lethe/jq $(echo "scale=1; ($ALL / $cold_s) / ($JS / $jq_s)" | bc)x, lethe/xmlstarlet $(echo "scale=1; ($ALL / $cold_s) / ($XS / $xs_s)" | bc)x"
grep -o '"links_per_rule": \[[^]]*\]' "$DIR/out.cold" | tr -d '\n '; echo
echo "remove $DIR when finished"

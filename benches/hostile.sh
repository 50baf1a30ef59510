#!/usr/bin/env bash
# Hostile sizes: `lethe index` over a store holding the shared bad-input
# corpus plus generated giants — a 1 GB JSON array read through
# $.items[*].id, a 500 MB single-line XML of many small elements, a 1 GB
# single-line CSV (stopped by max_line_bytes) — and reports peak RSS, the
# links found and the unreadable objects.
#
#   benches/hostile.sh        (needs ~2.6 GB of disk under $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
LETHE="$PWD/target/release/lethe"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-hostile.XXXXXX)}"
T="$DIR/technical"
mkdir -p "$T/giants"
cp -r ../shared/samples/bad-input/. "$T/"
chmod -R u+w "$T"
python3 - "$T/giants" <<'PY'
import sys, os
d = sys.argv[1]
with open(os.path.join(d, "array.json"), "w") as f:
    f.write('{"items": [')
    i = 0; size = 0
    chunk = []
    while size < 1_000_000_000:
        i += 1
        s = '{"id": %d, "note": "%s"},' % (i, "x" * 10000)
        chunk.append(s); size += len(s)
        if len(chunk) == 10000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk))
    f.write('{"id": 0}]}')
with open(os.path.join(d, "one-line.xml"), "w") as f:
    f.write("<Root>")
    size = 0; i = 0; chunk = []
    while size < 500_000_000:
        i += 1
        s = "<Rec><ID>%d</ID><Text>%s</Text></Rec>" % (i, "y" * 60)
        chunk.append(s); size += len(s)
        if len(chunk) == 10000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk)); f.write("</Root>")
with open(os.path.join(d, "one-line.csv"), "w") as f:
    f.write("id,blob\n1,")
    block = "z" * 1_000_000
    for _ in range(1000):
        f.write(block)
PY
cat > "$DIR/lethe.toml" <<'TOML'
[crm]
url = "sqlite://crm.db"
[crm.entities.lead]
table = "leads"
key = "id"
clock = "modified_at"
[technical]
url = "technical"
[[technical.link]]
glob = "**/*.json"
json = "$.items[*].id"
entity = "lead"
[[technical.link]]
glob = "**/*.xml"
xml = "//ID"
entity = "lead"
[[technical.link]]
glob = "**/*.csv"
csv = "id"
entity = "lead"
[[policy]]
name = "p"
root = "lead"
retain = "1 year"
basis = "bench"
[audit]
key = "bench-key-0123456789"
TOML
rm -f "$DIR"/lethe-state.db*
/usr/bin/time -f "%e %M" -o "$DIR/time" "$LETHE" -c "$DIR/lethe.toml" --format json index > "$DIR/out.json"
read -r s kb < "$DIR/time"
echo "store: $(du -sh "$T" | cut -f1); index ${s}s, peak RSS $((kb / 1024)) MB"
grep -E '"(objects_seen|objects_unreadable|links_per_rule|entries_skipped)"' -A0 "$DIR/out.json" | tr -s ' '
sqlite3 "$DIR/lethe-state.db" "SELECT key, status, error FROM objects WHERE status <> 'ok' ORDER BY key"
echo "remove $DIR when finished"

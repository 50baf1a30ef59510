#!/usr/bin/env bash
# Benchmark: `lethe explain` of one entity on the demo CRM (SQLite) at LEADS
# leads: a lead whose case a contract keeps, a lead in the middle, an
# opportunity and a contract (the case of a lead above it). Each is run
# RUNS times (warm cache) and the median wall time is reported, with the
# peak RSS of the last run. With BEFORE=/path/to/an/older/lethe the older
# binary is measured on the same data in the same run (it loads the whole
# graph: BEFORE_RUNS times on the first entity, once on the others), and
# its output must equal this one's for every entity.
#
#   benches/explain.sh [LEADS] [RUNS]     default 1000000 7
#   BENCH_DIR=/some/dir reuses a generated CRM (generating 1M leads takes
#   about five minutes and 9 GB with its payloads).
#
# Needs: cargo, sqlite3, GNU time.
set -euo pipefail
LEADS="${1:-1000000}"
RUNS="${2:-7}"
BEFORE_RUNS="${BEFORE_RUNS:-3}"
cd "$(dirname "$0")/.."
cargo build --release -q
LETHE="${CARGO_TARGET_DIR:-$PWD/target}/release/lethe"
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-explain-bench.XXXXXX)}"
mkdir -p "$DIR"
[ -f "$DIR/lethe/crm.db" ] || "$LETHE" demo --dir "$DIR/lethe" --leads "$LEADS" --generate-only > /dev/null
CFG="$DIR/lethe/lethe.toml"
DB="$DIR/lethe/crm.db"
AS_OF=2026-06-30

kept_lead=$(sqlite3 "$DB" "SELECT o.lead_id FROM contracts c JOIN quotes q ON q.id = c.quote_id JOIN opportunities o ON o.id = q.opportunity_id ORDER BY c.id LIMIT 1 OFFSET $((LEADS / 10))")
mid_lead=$(sqlite3 "$DB" "SELECT id FROM leads ORDER BY id LIMIT 1 OFFSET $((LEADS / 2))")
opp=$(sqlite3 "$DB" "SELECT id FROM opportunities ORDER BY id LIMIT 1 OFFSET $((LEADS / 3))")
contract=$(sqlite3 "$DB" "SELECT id FROM contracts ORDER BY id LIMIT 1 OFFSET $((LEADS / 5))")
REFS=("lead:$kept_lead" "lead:$mid_lead" "opportunity:$opp" "contract:$contract")

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# measure BIN RUNS REF OUT: prints "median_seconds peak_kb", output in OUT
measure() {
  local bin=$1 runs=$2 ref=$3 out=$4 times=() i s e
  for i in $(seq 1 "$runs"); do
    s=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$DIR/rss" "$bin" -c "$CFG" explain "$ref" --as-of "$AS_OF" > "$out"
    e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc)")
  done
  echo "$(printf '%s\n' "${times[@]}" | median) $(cat "$DIR/rss")"
}

echo "leads: $LEADS  entities: $(for t in leads opportunities quotes contracts; do sqlite3 "$DB" "SELECT count(*) FROM $t"; done | paste -sd+ | bc)  runs: $RUNS (before: $BEFORE_RUNS)"
echo "load: $(uptime | sed 's/.*load average: //')"
n=0
for ref in "${REFS[@]}"; do
  n=$((n + 1))
  read -r after_s after_kb < <(measure "$LETHE" "$RUNS" "$ref" "$DIR/out.after")
  line="$ref: $(printf '%.1f' "$(echo "$after_s * 1000" | bc)") ms (peak RSS $((after_kb / 1024)) MB)"
  if [ -n "${BEFORE:-}" ]; then
    read -r before_s before_kb < <(measure "$BEFORE" "$([ $n = 1 ] && echo "$BEFORE_RUNS" || echo 1)" "$ref" "$DIR/out.before")
    cmp -s "$DIR/out.before" "$DIR/out.after" || { echo "$ref: the outputs differ" >&2; diff "$DIR/out.before" "$DIR/out.after" >&2; exit 1; }
    line="$line; before: $(printf '%.1f' "$before_s") s (peak RSS $((before_kb / 1024)) MB), $(echo "scale=0; $before_s / $after_s" | bc)x, same output"
  fi
  echo "$line"
done
echo "load: $(uptime | sed 's/.*load average: //')"
echo "remove $DIR when finished"

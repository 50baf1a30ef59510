#!/usr/bin/env bash
# Benchmark: the dashboard's first render in Chromium against the same data
# through the API with curl, in one run (issue 19's figure).
#
#   benches/ui.sh [LEADS]      default 1000000; 20000 for a quick run
#
# Builds the demo data, indexes and plans it (the CLI), starts `lethe serve`
# on a loopback port with one admin token, signs in through the login form
# in headless Chromium (driven over WebDriver by chromedriver; plain HTTP
# from benches/ui_timing.py, no client library), then loads the overview
# (/ui/) and the plan's detail (/ui/plans/ID) REPEAT times each (default 7)
# and reads Navigation Timing and Paint Timing: when the HTML had arrived,
# the first contentful paint and the load event, from the navigation's start. The peer:
# `curl` of GET /v1/plans/ID (the plan's JSON, as the issue names it), the
# same number of times, and the pages' HTML by curl with a signed-in session
# (the server's side of each page). Medians are printed, and the ratio of
# page to API call by curl.
#
# Needs: cargo, python3, curl, Debian's chromium and chromium-driver
# (installed when missing). Writes into $BENCH_DIR (default: a fresh folder
# under /tmp); stops the service and chromedriver at the end.
set -euo pipefail
LEADS="${1:-1000000}"
REPEAT="${REPEAT:-7}"
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver > /dev/null || missing+=(chromium-driver)
[ ${#missing[@]} = 0 ] || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" > /dev/null; }
cargo build --release -q
LETHE="${CARGO_TARGET_DIR:-$PWD/target}/release/lethe"
case "$LETHE" in /*) ;; *) LETHE="$PWD/$LETHE" ;; esac
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-ui.XXXXXX)}"
mkdir -p "$DIR"
echo "bench dir: $DIR  leads: $LEADS"

[ -f "$DIR/lethe/crm.db" ] || "$LETHE" demo --dir "$DIR/lethe" --leads "$LEADS" --generate-only > /dev/null
C="$DIR/lethe/lethe.toml"
# One admin token for this folder, made once.
if [ ! -f "$DIR/token" ]; then
  echo "bench-admin-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" > "$DIR/token"
  printf '\n[[serve.token]]\nname = "bench"\nsha256 = "%s"\nscope = "admin"\n' \
    "$(tr -d '\n' < "$DIR/token" | sha256sum | cut -d' ' -f1)" >> "$C"
fi
TOKEN=$(cat "$DIR/token")
sed -i 's/^max_delete_fraction = .*/max_delete_fraction = 1.0/' "$C"
if [ ! -f "$DIR/plan.id" ]; then
  s=$(date +%s.%N); "$LETHE" -c "$C" index > /dev/null; echo "index: $(echo "$(date +%s.%N) - $s" | bc)s"
  s=$(date +%s.%N); "$LETHE" -c "$C" --format json plan > "$DIR/plan.json" || [ $? = 3 ]
  echo "plan: $(echo "$(date +%s.%N) - $s" | bc)s"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$DIR/plan.json" > "$DIR/plan.id"
fi
PLAN=$(cat "$DIR/plan.id")

"$LETHE" -c "$C" serve --listen 127.0.0.1:0 > "$DIR/serve.out" 2> "$DIR/serve.err" &
SERVE=$!
DPORT=$((20000 + RANDOM % 20000))
chromedriver --port="$DPORT" --allowed-ips=127.0.0.1 > "$DIR/chromedriver.log" 2>&1 &
DRIVER=$!
trap 'kill $SERVE $DRIVER 2> /dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$DIR/serve.out" 2> /dev/null && break; sleep 0.2; done
BASE=$(sed -n 's/^lethe serve: listening on //p' "$DIR/serve.out" | head -n 1)
[ -n "$BASE" ] || { echo "lethe serve did not start: $(cat "$DIR/serve.err")" >&2; exit 1; }

api() { # api PATH: REPEAT curl timings of the call, one per line
  local i
  for i in $(seq 1 "$REPEAT"); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "$BASE$1"
  done
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
api_plan=$(api "/v1/plans/$PLAN" | median)
# The pages' HTML by curl too, with a session signed in through the form:
# the server's side of a page against the API call.
curl -s -o /dev/null -c "$DIR/jar" --data-urlencode "token=$TOKEN" "$BASE/ui/login"
page() { # page PATH: REPEAT curl timings of the page's HTML
  local i
  for i in $(seq 1 "$REPEAT"); do
    curl -s -o /dev/null -b "$DIR/jar" -w '%{http_code} %{time_total}\n' "$BASE$1"
  done | awk '$1 != 200 { print "page " $1 > "/dev/stderr"; exit 1 } { print $2 }'
}
ov_curl=$(page "/ui/" | median)
pl_curl=$(page "/ui/plans/$PLAN" | median)
python3 benches/ui_timing.py "http://127.0.0.1:$DPORT" "$BASE" "$TOKEN" "$REPEAT" "/ui/" "/ui/plans/$PLAN" > "$DIR/ui.tsv"
cat "$DIR/ui.tsv"
read -r _ ov_html ov_fcp ov_load < <(grep '^/ui/	' "$DIR/ui.tsv")
read -r _ pl_html pl_fcp pl_load < <(grep '^/ui/plans/' "$DIR/ui.tsv")
ms() { printf "%.1f" "$(echo "$1 * 1000" | bc)"; }
ratio2() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
echo
echo "leads: $LEADS; plan $PLAN; medians of $REPEAT"
echo "| page | page by curl | API call by curl | page / API | in Chromium: HTML arrived | first contentful paint | load event |"
echo "|---|---|---|---|---|---|---|"
echo "| overview /ui/ | $(ms "$ov_curl") ms | GET /v1/plans/ID $(ms "$api_plan") ms | $(ratio2 "$ov_curl" "$api_plan") | ${ov_html} ms | ${ov_fcp} ms | ${ov_load} ms |"
echo "| plan /ui/plans/ID | $(ms "$pl_curl") ms | GET /v1/plans/ID $(ms "$api_plan") ms | $(ratio2 "$pl_curl" "$api_plan") | ${pl_html} ms | ${pl_fcp} ms | ${pl_load} ms |"
echo "done; remove $DIR when finished"

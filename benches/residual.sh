#!/usr/bin/env bash
# Benchmark: lethe's residual scan (src/verify/residual.rs, driven over the
# files by benches/residual.rs) against `rg -F -f` of the same identifier
# values over the same files, in one run, warm cache, at 1k, 10k and 100k
# identifiers on the ~1 GB corpus of benches/index.sh.
#
#   benches/residual.sh [MEGABYTES]     default 1000; 100 for a quick run
#
# Identifiers: half e-mail addresses, half phone numbers. 2% of them are in
# the corpus (the e-mails of some of its JSON leads; LeadIds of its CSV
# exports, 7 to 10 digits, as phone numbers), the others are not. Both tools
# must report the same present identifiers; the script checks it (exit 1
# when they differ). Each figure is the best of REPEAT runs (default 3) of
# the whole process (start, reading the identifiers, listing, scanning);
# with all cores (THREADS, default nproc) and with one.
# Then files dense in candidates, where the scan's cost shows (DENSE=0 skips
# them): 100 MB each of a text table of numbers, a list of e-mail addresses
# and a log, at 10k identifiers, with and without telling the scanner the
# identifiers' lengths (--lengths, Scanner::only_lengths).
# Env: SIZES="1000 10000 100000", REPEAT, THREADS, DENSE, BENCH_DIR (kept
# corpus), RG (the ripgrep binary).
# Needs: cargo, python3, ripgrep (installed when missing), GNU time.
set -euo pipefail
MB="${1:-1000}"
SIZES="${SIZES:-1000 10000 100000}"
REPEAT="${REPEAT:-3}"
THREADS="${THREADS:-$(nproc)}"
DENSE="${DENSE:-1}"
RG="${RG:-rg}"
cd "$(dirname "$0")/.."
command -v "$RG" >/dev/null || { apt-get update -qq && apt-get install -y -qq ripgrep >/dev/null; }
LETHE=${LETHE:-$(cargo bench -q --bench residual --no-run --message-format=json \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "residual" and m.get("executable"):
        print(m["executable"])')}
DIR="${BENCH_DIR:-$(mktemp -d /tmp/lethe-residual-bench.XXXXXX)}"
mkdir -p "$DIR"
[ -d "$DIR/technical/json" ] || python3 benches/gen_corpus.py "$DIR/technical" "$MB"
BYTES=$(du -sb "$DIR/technical" | cut -f1)
FILES=$(find "$DIR/technical" -type f | wc -l)

# The identifiers: N.tsv (kind<TAB>value, for lethe), N.txt (values, for rg),
# N.present (the values in the corpus, sorted).
python3 - "$DIR" $(echo $SIZES 10000 | tr ' ' '\n' | sort -un) <<'PY'
import os, random, re, sys
d, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
tech = os.path.join(d, "technical")
emails, ids = [], []
email = re.compile(r'"Email": "([^"]+)"')
for root, _, names in sorted(os.walk(os.path.join(tech, "json"))):
    for n in sorted(names)[:4]:
        with open(os.path.join(root, n)) as fh:
            m = email.search(fh.read(4096))
            if m:
                emails.append(m.group(1))
for n in sorted(os.listdir(os.path.join(tech, "csv"))):
    with open(os.path.join(tech, "csv", n)) as fh:
        next(fh)
        for i, row in enumerate(fh):
            if i % 97 == 0:
                lead = row.split(";", 1)[0]
                if len(lead) >= 7:
                    ids.append(lead)
rng = random.Random(17)
emails, ids = sorted(set(emails)), sorted(set(ids))
first = "anna ben clara david elif farid greta jonas lena max nina omar paul rosa sven tara".split()
last = "mueller schmidt fischer weber meyer wagner becker hoffmann koch richter".split()
domains = "mail.de web.de gmx.net firma.example posteo.de outlook.com".split()
for size in sizes:
    present = size // 50
    pe = rng.sample(emails, min(present // 2, len(emails)))
    pp = rng.sample(ids, min(present - len(pe), len(ids)))
    rows = [("email", e) for e in pe] + [("phone", p) for p in pp]
    absent = size - len(rows)
    for i in range(absent):
        if i % 2 == 0:
            rows.append(("email", "%s.%s%d@%s" % (rng.choice(first), rng.choice(last), i, rng.choice(domains))))
        else:
            # 12 digits: no digit run of the corpus is that long.
            rows.append(("phone", "+49 1%02d %07d" % (rng.randint(50, 79), rng.randint(0, 9999999))))
    rng.shuffle(rows)
    with open(os.path.join(d, "%d.tsv" % size), "w") as fh:
        fh.writelines("%s\t%s\n" % r for r in rows)
    with open(os.path.join(d, "%d.txt" % size), "w") as fh:
        fh.writelines("%s\n" % v for _, v in rows)
    with open(os.path.join(d, "%d.present" % size), "w") as fh:
        fh.writelines("%s\n" % v for v in sorted(pe + pp))
PY

find "$DIR/technical" -type f -print0 | xargs -0 cat > /dev/null   # warm the cache
# best WALL USER+SYS of REPEAT runs of a command (stdout to $DIR/out)
best() {
  local w=999999 c=0 i r
  for ((i = 0; i < REPEAT; i++)); do
    # rg exits 1 when it finds nothing; time then adds a line before its own.
    /usr/bin/time -f "%e %U %S" -o "$DIR/time" "$@" > "$DIR/out" || true
    read -r r u s < <(tail -1 "$DIR/time")
    if (( $(echo "$r < $w" | bc) )); then w=$r; c=$(echo "$u + $s" | bc); fi
  done
  echo "$w $c"
}
gbs() { if (( $(echo "$1 > 0" | bc) )); then echo "scale=2; $BYTES / $1 / 1000000000" | bc; else echo -; fi; }
status=0
echo "corpus: $((BYTES / 1000000)) MB, $FILES files ($DIR/technical)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $("$RG" --version 2>/dev/null | head -1); $(date -u +%Y-%m-%d)"
printf '%-7s %-22s %8s %8s %7s %10s %6s\n' ids tool wall_s cpu_s GB/s GB/s/core found
for n in $SIZES; do
  declare -A wall=()
  for threads in "$THREADS" 1; do
    read -r w c < <(best "$RG" -F -o --no-filename --no-line-number -j "$threads" -f "$DIR/$n.txt" "$DIR/technical")
    sort -u "$DIR/out" > "$DIR/$n.rg"
    printf '%-7s %-22s %8s %8s %7s %10s %6s\n' "$n" "rg -F -f -j$threads" "$w" "$c" "$(gbs "$w")" "$(gbs "$c")" "$(wc -l < "$DIR/$n.rg")"
    wall[rg$threads]=$w
    read -r w c < <(best "$LETHE" "$DIR/$n.tsv" "$DIR/technical" --threads "$threads" --found "$DIR/$n.lethe")
    printf '%-7s %-22s %8s %8s %7s %10s %6s   %s\n' "$n" "lethe --threads $threads" "$w" "$c" "$(gbs "$w")" "$(gbs "$c")" "$(wc -l < "$DIR/$n.lethe")" \
      "$(tr ' ' '\n' < "$DIR/out" | grep -E '^(wall_s|candidates|hashed)=' | tr '\n' ' ')"
    wall[lethe$threads]=$w
  done
  echo "        ratio rg/lethe (wall): $(echo "scale=2; ${wall[rg$THREADS]} / ${wall[lethe$THREADS]}" | bc) with $THREADS threads, $(echo "scale=2; ${wall[rg1]} / ${wall[lethe1]}" | bc) with 1"
  for tool in rg lethe; do
    if ! cmp -s "$DIR/$n.present" "$DIR/$n.$tool"; then
      echo "        MISMATCH: $tool found $(wc -l < "$DIR/$n.$tool") of the $(wc -l < "$DIR/$n.present") present (diff $DIR/$n.present $DIR/$n.$tool)"
      status=1
    fi
  done
done
if [ "$DENSE" = 1 ]; then
  python3 - "$DIR/dense" <<'PY'
import os, random, sys
d = sys.argv[1]
rng = random.Random(5)
def write(name, line):
    os.makedirs(os.path.join(d, name), exist_ok=True)
    with open(os.path.join(d, name, name + ".txt"), "w") as fh:
        n = 0
        while n < 100_000_000:
            s = line(n)
            fh.write(s)
            n += len(s)
write("numbers", lambda n: " ".join("%d" % rng.randint(0, 99999) for _ in range(12)) + "\n")
write("emails", lambda n: '%d;"%s.%s%d@%s";"%s"\n' % (n, rng.choice(["anna", "ben", "clara"]),
      rng.choice(["weber", "koch"]), n, rng.choice(["mail.de", "gmx.net"]), "x" * rng.randint(5, 40)))
write("log", lambda n: "2024-03-%02d %02d:%02d:%02d.%03d INFO [worker-%d] request id=%d took %d ms status=200 bytes=%d\n" % (
      rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999),
      rng.randint(1, 16), rng.randint(1, 10**9), rng.randint(1, 5000), rng.randint(100, 100000)))
PY
  echo "dense files, 100 MB each, 10000 identifiers, one thread:"
  printf '%-8s %-22s %8s %8s %10s %s\n' file tool wall_s cpu_s GB/s/core "candidates hashed"
  for f in numbers emails log; do
    BYTES=$(du -sb "$DIR/dense/$f" | cut -f1)
    cat "$DIR/dense/$f"/* > /dev/null
    read -r w c < <(best "$RG" -F -c -j 1 -f "$DIR/10000.txt" "$DIR/dense/$f")
    printf '%-8s %-22s %8s %8s %10s\n' "$f" "rg -F -f -j1" "$w" "$c" "$(gbs "$c")"
    for opt in "" --lengths; do
      read -r w c < <(best "$LETHE" "$DIR/10000.tsv" "$DIR/dense/$f" $opt)
      printf '%-8s %-22s %8s %8s %10s %s\n' "$f" "lethe $opt" "$w" "$c" "$(gbs "$c")" \
        "$(tr ' ' '\n' < "$DIR/out" | grep -E '^(candidates|hashed)=' | tr '\n' ' ')"
    done
  done
fi
echo "remove $DIR when finished"
exit $status

#!/usr/bin/env bash
# Object deletes against real servers on loopback, in one run on the same
# objects: lethe apply (batched: S3 DeleteObjects, Azure Blob Batch),
# `rclone delete --files-from` (Debian's rclone), and a small Node script
# deleting one object per request (the AWS and Azure SDKs for JavaScript).
# Servers: s3s-fs (crates.io) and Azurite (npm), started here on loopback
# ports of their own. Prints the time of each and the ratios.
# Usage: benches/cloud.sh [LEADS]   (default 41000: about 20,000 objects to delete)
#        STORES="s3"       only these stores (default "s3 az")
#        SINGLE_DELETES=N  lethe deletes one object per request, N at a time
#                          (technical.batch_deletes = false), instead of batches
#        PEERS_FIRST=1     rclone and the script delete before lethe (Azurite
#                          slows with the blobs it holds: the first pays most)
#        LATENCY_MS=N      the three deleting sides reach the servers through
#                          benches/latency_proxy.py, N ms per round trip (a
#                          remote endpoint instead of loopback); uploads,
#                          index and plan go direct
set -euo pipefail
cd "$(dirname "$0")/.."
LEADS=${1:-41000}
for tool in rclone s3s-fs node sqlite3; do
    command -v $tool >/dev/null || { echo "$tool missing (see the header)" >&2; exit 1; }
done
NPM_DIR="${LETHE_BENCH_NPM_DIR:-$HOME/.cache/lethe-bench-npm}"
if [ ! -d "$NPM_DIR/node_modules/@aws-sdk/client-s3" ] || [ ! -x "$NPM_DIR/node_modules/.bin/azurite-blob" ]; then
    mkdir -p "$NPM_DIR"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund azurite @azure/storage-blob @aws-sdk/client-s3 >/dev/null 2>&1)
fi
cargo build --release --quiet
LETHE=$PWD/target/release/lethe
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

S3_PORT=18115 AZ_PORT=10110
# Where the deleting sides connect: the servers, or proxies in front of them.
S3_FAR=$S3_PORT AZ_FAR=$AZ_PORT
if [ -n "${LATENCY_MS:-}" ]; then
    S3_FAR=18116 AZ_FAR=10111
    python3 benches/latency_proxy.py $S3_FAR $S3_PORT "$LATENCY_MS" &
    pids+=($!)
    python3 benches/latency_proxy.py $AZ_FAR $AZ_PORT "$LATENCY_MS" &
    pids+=($!)
fi
mkdir -p "$work/s3/bench" "$work/az"
s3s-fs --host 127.0.0.1 --port $S3_PORT --access-key bench-key --secret-key bench-secret "$work/s3" >/dev/null 2>&1 &
pids+=($!)
"$NPM_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort $AZ_PORT --location "$work/az" --silent --skipApiVersionCheck >/dev/null 2>&1 &
pids+=($!)
sleep 2
AZ_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export BENCH_S3_ENDPOINT=http://127.0.0.1:$S3_PORT BENCH_S3_KEY=bench-key BENCH_S3_SECRET=bench-secret
export BENCH_AZ_CONNECTION="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZ_KEY;BlobEndpoint=http://127.0.0.1:$AZ_PORT/devstoreaccount1;"
(cd "$NPM_DIR" && node -e "
require('@azure/storage-blob').BlobServiceClient.fromConnectionString(process.env.BENCH_AZ_CONNECTION)
  .getContainerClient('bench').createIfNotExists().then(() => process.exit(0), e => { console.error(e.message); process.exit(1); });")
# A custom CA bundle in the environment breaks rclone's S3 client (and is
# not needed on loopback).
unset AWS_CA_BUNDLE
# rclone remotes from the environment.
export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other RCLONE_CONFIG_S3_ENDPOINT=$BENCH_S3_ENDPOINT \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID=bench-key RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=bench-secret RCLONE_CONFIG_S3_REGION=us-east-1
# Debian's rclone 1.60 cannot reach an emulator by endpoint (its emulator
# mode is broken); a container SAS URL works.
RCLONE_CONFIG_AZ_SAS_URL=$(cd "$NPM_DIR" && node -e "
const {BlobServiceClient, ContainerSASPermissions} = require('@azure/storage-blob');
BlobServiceClient.fromConnectionString(process.env.BENCH_AZ_CONNECTION).getContainerClient('bench')
  .generateSasUrl({permissions: ContainerSASPermissions.parse('racwdl'), expiresOn: new Date(Date.now() + 86400e3)})
  .then(u => console.log(u));")
export RCLONE_CONFIG_AZ_TYPE=azureblob RCLONE_CONFIG_AZ_SAS_URL
# rclone stops at the first failed request instead of retrying for minutes.
export RCLONE_LOW_LEVEL_RETRIES=1 RCLONE_RETRIES=1

echo "generating $LEADS leads ..."
"$LETHE" demo --dir "$work/demo" --leads "$LEADS" --generate-only >/dev/null
nfiles=$(find "$work/demo/technical" -type f | wc -l)

# put STORE PREFIX FOLDER [KEYS]: the folder's files (or those listed) under
# bench/PREFIX/. s3s-fs keeps objects as plain files, so for S3 they are
# copied into its folder (uploads through rclone run at ~50/s against it);
# Azurite keeps its own database, so there rclone uploads them.
put() {
    local store=$1 prefix=$2 from=$3 list=${4:-}
    if [ "$store" = s3 ]; then
        mkdir -p "$work/s3/bench/$prefix"
        if [ -n "$list" ]; then
            (cd "$from" && xargs -d '\n' cp --parents -t "$work/s3/bench/$prefix" <"$list")
        else
            cp -r "$from/." "$work/s3/bench/$prefix/"
        fi
    elif [ -n "$list" ]; then
        sed "s|^|$prefix/|" "$list" >"$work/put.txt"
        mkdir -p "$work/stage"; ln -sfn "$from" "$work/stage/$prefix"
        rclone copy --copy-links --transfers 32 --checkers 32 --files-from "$work/put.txt" "$work/stage" az:bench -q
    else
        (cd "$from" && find . -type f | sed "s|^\./|$prefix/|") >"$work/put.txt"
        mkdir -p "$work/stage"; ln -sfn "$from" "$work/stage/$prefix"
        rclone copy --copy-links --transfers 32 --checkers 32 --files-from "$work/put.txt" "$work/stage" az:bench -q
    fi
}

row() { printf '%-6s %-22s %10s s  %8s objects/s\n' "$@"; }
results=()
for store in ${STORES:-s3 az}; do
    echo "== $store: uploading $nfiles objects for lethe ..."
    put "$store" lethe "$work/demo/technical"
    case $store in
        s3) url="s3://bench/lethe"
            envs=(AWS_ENDPOINT_URL=$BENCH_S3_ENDPOINT AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true) ;;
        az) url="az://bench/lethe"
            envs=(AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$AZ_PORT) ;;
    esac
    rm -rf "$work/run"; mkdir -p "$work/run"
    cp "$work/demo/crm.db" "$work/run/crm.db"
    sed -e "s|^url = \"technical\"|url = \"$url\"|" "$work/demo/lethe.toml" >"$work/run/lethe.toml"
    printf '\n[apply]\nbatch_objects = 5000\n' >>"$work/run/lethe.toml"
    # SINGLE_DELETES=N: one request per object, N at a time, instead of
    # batch requests (technical.batch_deletes = false).
    if [ -n "${SINGLE_DELETES:-}" ]; then
        printf 'parallel_deletes = %s\n' "$SINGLE_DELETES" >>"$work/run/lethe.toml"
        sed -i "s|^url = \"$url\"|url = \"$url\"\nbatch_deletes = false|" "$work/run/lethe.toml"
        grep -q '^batch_deletes = false' "$work/run/lethe.toml"
    fi
    env "${envs[@]}" "$LETHE" -c "$work/run/lethe.toml" index >/dev/null
    env "${envs[@]}" "$LETHE" -c "$work/run/lethe.toml" plan >/dev/null
    sqlite3 "$work/run/lethe-state.db" "SELECT key FROM plan_objects WHERE plan_id = (SELECT id FROM plans ORDER BY seq DESC LIMIT 1) ORDER BY key" >"$work/keys.txt"
    n=$(wc -l <"$work/keys.txt")
    echo "== $store: uploading the $n planned objects for the peers ..."
    put "$store" rclone "$work/demo/technical" "$work/keys.txt"
    put "$store" script "$work/demo/technical" "$work/keys.txt"

    # The deletes: through the proxies where LATENCY_MS is set.
    far_envs=("${envs[@]/:$S3_PORT/:$S3_FAR}")
    far_envs=("${far_envs[@]/:$AZ_PORT/:$AZ_FAR}")
    export BENCH_S3_ENDPOINT=http://127.0.0.1:$S3_FAR RCLONE_CONFIG_S3_ENDPOINT=http://127.0.0.1:$S3_FAR
    export BENCH_AZ_CONNECTION=${BENCH_AZ_CONNECTION/:$AZ_PORT\//:$AZ_FAR/} RCLONE_CONFIG_AZ_SAS_URL=${RCLONE_CONFIG_AZ_SAS_URL/:$AZ_PORT\//:$AZ_FAR/}
    run_lethe() {
        report=$(env "${far_envs[@]}" "$LETHE" -c "$work/run/lethe.toml" --format json apply)
        lethe_s=$(echo "$report" | python3 -c 'import json,sys; r=json.load(sys.stdin)["apply"]; assert r["objects_failed"]==0, r; print(round(r["seconds_objects"],3)); print(r["objects_deleted"]+r["objects_already_gone"], file=sys.stderr)' 2>"$work/deleted")
        deleted=$(cat "$work/deleted")
    }
    run_peers() {
        start=$(date +%s.%N)
        # Rooted at the bucket: s3s-fs answers rclone's HEAD of a "folder" with 500.
        sed 's|^|rclone/|' "$work/keys.txt" >"$work/rclone-keys.txt"
        rclone delete --checkers 32 --files-from "$work/rclone-keys.txt" "$store:bench" -q
        rclone_s=$(python3 -c "import time; print(round(time.time() - $start, 3))")
        script_s=$(NODE_PATH="$NPM_DIR/node_modules" node benches/oneby.js $store script "$work/keys.txt")
    }
    # Azurite slows as it holds more blobs, so whoever deletes first pays
    # for the largest database: lethe by default, the peers with PEERS_FIRST=1.
    if [ -n "${PEERS_FIRST:-}" ]; then run_peers; run_lethe; else run_lethe; run_peers; fi
    export BENCH_S3_ENDPOINT=http://127.0.0.1:$S3_PORT RCLONE_CONFIG_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
    export BENCH_AZ_CONNECTION=${BENCH_AZ_CONNECTION/:$AZ_FAR\//:$AZ_PORT/} RCLONE_CONFIG_AZ_SAS_URL=${RCLONE_CONFIG_AZ_SAS_URL/:$AZ_FAR\//:$AZ_PORT/}
    # All three sides deleted the same set.
    echo "   lethe ${lethe_s}s, rclone ${rclone_s}s, one-by-one ${script_s}s for $n objects; checking what is left ..."
    # s3s-fs keeps objects as files (and lists large folders slowly).
    left() {
        if [ "$store" = s3 ]; then
            find "$work/s3/bench/$1" -type f 2>/dev/null | wc -l
        else
            rclone lsf -R --files-only --include "$1/**" "$store:bench" | wc -l
        fi
    }
    left_rclone=$(left rclone) left_script=$(left script) left_lethe=$(left lethe)
    [ "$left_rclone" = 0 ] && [ "$left_script" = 0 ] && [ "$deleted" = "$n" ] \
        && [ "$left_lethe" = $((nfiles - n)) ] || { echo "mismatch: $deleted/$n, left $left_lethe/$left_rclone/$left_script" >&2; exit 1; }
    results+=("$store $n $lethe_s $rclone_s $script_s")
done

echo
echo "deleting the same objects on loopback servers${LATENCY_MS:+, $LATENCY_MS ms round trips through a proxy} (lethe: apply's object phase, with re-check, journal and audit)"
for r in "${results[@]}"; do
    read -r store n l rc sc <<<"$r"
    python3 - "$store" "$n" "$l" "$rc" "$sc" <<'PY'
import sys
store, n = sys.argv[1], int(sys.argv[2])
l, rc, sc = map(float, sys.argv[3:6])
name = {"s3": "S3 (s3s-fs)", "az": "Azure (Azurite)"}[store]
print(f"{name}: {n} objects")
for what, s in (("lethe apply", l), ("rclone delete", rc), ("one-by-one script", sc)):
    print(f"  {what:<18} {s:9.2f} s  {n/s:9.0f} objects/s")
print(f"  lethe vs rclone: {rc/l:.2f}x faster (target >= 1)   lethe vs one-by-one: {sc/l:.1f}x faster (target >= 10)")
PY
done

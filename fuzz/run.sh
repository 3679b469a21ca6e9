#!/bin/sh
# Runs fuzz targets (built by ./build.sh) one after the other, each for
# SECONDS (default 600) on a working copy of its committed corpus, then
# merges what it found, minimised, back into corpus/<target>/ (inputs cut
# to MERGE_MAX_LEN bytes, default 300, to keep the repository small).
# Usage: ./run.sh [SECONDS] [TARGET...]   (default: every target)
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-"path_frames modify grpc_framing nkn_messages nkn_node config"}
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
work=${FUZZ_WORK:-/tmp/resi-fuzz}
for t in $targets; do
    mkdir -p "$work/$t" "artifacts/$t"
    cp -n corpus/$t/* "$work/$t/" 2>/dev/null || true
    echo "== $t: ${secs}s"
    "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "$work/$t" > "$work/$t.log" 2>&1 || { echo "$t: CRASH, see $work/$t.log and artifacts/$t/"; continue; }
    grep -E "^#[0-9]+ +DONE|^Done" "$work/$t.log" || true
    # Keep a minimal corpus: only inputs that add coverage.
    mkdir -p "$work/$t.min"
    "$bin/$t" -merge=1 -max_len="${MERGE_MAX_LEN:-300}" "$work/$t.min" corpus/$t "$work/$t" > "$work/$t.merge.log" 2>&1
    rm -f corpus/$t/*
    cp "$work/$t.min"/* corpus/$t/
    rm -rf "$work/$t.min"
    echo "$t: corpus $(ls corpus/$t | wc -l) files, $(cat corpus/$t/* | wc -c) bytes"
done

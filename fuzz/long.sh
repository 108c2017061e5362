#!/usr/bin/env bash
# Runs the fuzz targets one after the other (one core), each for SECS seconds, over
# fuzz/corpus/<target> (which grows), with -timeout=1: an input taking more than a second is a
# finding. Prints each target's final libFuzzer stats into fuzz/logs/<target>.log and a summary
# line (executions, seconds, cov, ft, corpus) for docs/security.md.
#
# Usage: fuzz/long.sh [SECS=600] [TARGET...]      (build and seed first: fuzz/smoke.sh does both)
set -uo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${1:-600}"
shift || true
cd "$FUZZ_DIR"
if (($#)); then targets=("$@"); else mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list); fi
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    rc=0
    "target/x86_64-unknown-linux-gnu/release/$t" "corpus/$t" -max_total_time="$SECS" \
        -timeout=1 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        >"logs/$t.log" 2>&1 || rc=$?
    runs="$(grep -o '^Done [0-9]* runs in [0-9]* second' "logs/$t.log" | awk '{print $2, $5}')"
    last="$(grep -E '#[0-9]+.*(cov|ft):' "logs/$t.log" | tail -n 1)"
    echo "$t exit=$rc runs/secs=${runs:-none} ${last:-}"
    ((rc == 0)) || status=1
done
exit "$status"

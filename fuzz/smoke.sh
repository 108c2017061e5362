#!/usr/bin/env bash
# Smoke run of every fuzz target: builds the targets (cargo fuzz build), builds the seed corpora
# and fixtures (fuzz/seed.sh), then runs each target for a few seconds over its seeds. Fails on
# any crash, panic, timeout or out-of-memory, and when anything needed to run is missing: it
# never passes without having run every target.
#
# Usage: fuzz/smoke.sh
# Environment: FUZZ_SMOKE_SECS (seconds per target, default 5), FUZZ_SMOKE_TIMEOUT (seconds one
# input may take, default 5: a loaded CI machine must not fail it; the long runs use 1),
# CARGO (cargo binary). cargo-fuzz must be on PATH (tests/run.sh installs it when missing).
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${FUZZ_SMOKE_SECS:-5}"
TIMEOUT="${FUZZ_SMOKE_TIMEOUT:-5}"
CARGO="${CARGO:-cargo}"
TRIPLE="x86_64-unknown-linux-gnu"

say() { printf '[fuzz/smoke.sh] %s\n' "$*"; }
die() { printf '[fuzz/smoke.sh] ERROR: %s\n' "$*" >&2; exit 1; }

"$CARGO" fuzz --version >/dev/null 2>&1 \
    || die "cargo-fuzz is not installed (cargo install --locked cargo-fuzz)"

cd "$FUZZ_DIR"
# libFuzzer's instrumentation needs nightly rustc flags: the one stable toolchain is told to
# accept them, for this build only. No sanitizer: see fuzz/README.md.
# cargo fuzz builds into CARGO_TARGET_DIR when it is set, fuzz/target otherwise.
fuzz_target_dir="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"
say "cargo fuzz build -s none ($fuzz_target_dir)"
RUSTC_BOOTSTRAP=1 "$CARGO" fuzz build -s none || die "cargo fuzz build failed"

say "fuzz/seed.sh"
bash "$FUZZ_DIR/seed.sh" || die "fuzz/seed.sh failed"

mapfile -t targets < <(RUSTC_BOOTSTRAP=1 "$CARGO" fuzz list)
((${#targets[@]} > 0)) || die "cargo fuzz list found no targets"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    bin="$fuzz_target_dir/$TRIPLE/release/$t"
    seeds="$FUZZ_DIR/corpus/$t"
    [[ -x "$bin" ]] || die "$bin was not built"
    [[ -d "$seeds" ]] && [[ -n "$(ls -A "$seeds")" ]] || die "no seeds in $seeds"
    mkdir -p "$work/$t" "$FUZZ_DIR/artifacts/$t"
    log="$work/$t.log"
    say "$t: ${SECS}s over $(ls "$seeds" | wc -l) seeds"
    rc=0
    # New inputs go to a scratch corpus (first directory); the seeds are only read.
    "$bin" "$work/$t" "$seeds" -max_total_time="$SECS" -timeout="$TIMEOUT" \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$FUZZ_DIR/artifacts/$t/" >"$log" 2>&1 || rc=$?
    if ((rc != 0)) || ! grep -q '^Done [0-9]* runs' "$log"; then
        tail -n 40 "$log" >&2
        say "FAIL $t (exit $rc; artifacts in fuzz/artifacts/$t/)"
        failed+=("$t")
    else
        say "PASS $t: $(grep '^Done' "$log") $(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)"
    fi
done
((${#failed[@]} == 0)) || die "fuzz targets failed: ${failed[*]}"
say "all ${#targets[@]} targets ran clean"

#!/usr/bin/env bash
# Builds the fuzzers' seed corpora (fuzz/corpus/<target>/) and the fixtures the targets verify
# against (fuzz/target/seed-state/) with examples/fuzz_seeds.rs: seeds from the real vectors in
# ../shared/vectors (read in place, never copied into the project: see its PROVENANCE.md) and
# from requests the project's own rig code makes (CSRs with simulated secure-element
# attestation, OCSP requests, operator API bodies).
#
# Usage: fuzz/seed.sh            (ATTESTCA_VECTORS_DIR overrides ../shared/vectors; CARGO the cargo)
# Re-running replaces the seeds and the fixtures (the simulated vendor gets new keys); inputs
# libFuzzer added to fuzz/corpus/<target>/ are kept.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
VECTORS="${ATTESTCA_VECTORS_DIR:-$ROOT/../shared/vectors}"

if [[ ! -d "$VECTORS" ]]; then
    echo "fuzz/seed.sh: ERROR: no test vectors at $VECTORS (set ATTESTCA_VECTORS_DIR)" >&2
    exit 1
fi
cd "$ROOT"
"${CARGO:-cargo}" run --quiet --example fuzz_seeds -- "$VECTORS" "$FUZZ_DIR"

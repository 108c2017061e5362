#!/usr/bin/env bash
# Runs attestca's whole test suite: `cargo test` plus the shell end-to-end tests
# in tests/shell/, against real components (SoftHSM, PostgreSQL, pkilint, schemathesis).
#
# It prepares everything those tests need, installing what is missing when it
# can (root + apt-get), because CI and new machines start without our tools (also
# docker-compose and systemd-analyze, which tests/shell/deploy_files.sh finds on PATH):
#   ATTESTCA_TEST_PKILINT         path of pkilint's lint_pkix_cert (its venv's python, beside
#                                 it, also has Python `cryptography`: crates/attestca-server/tests/it/strict_names.rs)
#   ATTESTCA_TEST_PROMTOOL        path of Prometheus' promtool (deployment files)
#   ATTESTCA_TEST_SCHEMATHESIS    path of schemathesis' `st` (tests/shell/openapi_schemathesis.sh)
#   ATTESTCA_TEST_OPENAPI_SPEC_VALIDATOR  path of openapi-spec-validator (the OpenAPI tests)
#   ATTESTCA_TEST_PKCS11_MODULE   path of SoftHSM's PKCS#11 module
#   ATTESTCA_TEST_DATABASE_URL    admin URL of a PostgreSQL server (CREATE DATABASE allowed)
#   ATTESTCA_TEST_PG_BIN          PostgreSQL server binaries (initdb, pg_ctl), for tests that stop
#                                 and start a server of their own (crates/attestca-server/tests/it/faults.rs)
#   ATTESTCA_TEST_REQUIRE_ALL=1   tests fail instead of skipping when something is missing
#   ATTESTCA_VECTORS_DIR          ../shared/vectors, when present
# and, last, the smoke run of every fuzz target (fuzz/smoke.sh: cargo-fuzz, installed into
# target/test-tools when missing; a few seconds per target plus the fuzz build).
#
# Usage: tests/run.sh [extra arguments for `cargo test`]
# Environment knobs:
#   CARGO                             cargo binary to use (default: cargo)
#   DATABASE_URL                      use this PostgreSQL instead of finding/starting one
#   ATTESTCA_TEST_FORCE_THROWAWAY_PG=1  ignore DATABASE_URL and 127.0.0.1:5432 and start
#                                     a throwaway server (exercises that path)
#   ATTESTCA_TEST_SETUP_ONLY=1        prepare the environment, print it, check the
#                                     database, and stop before cargo (no build); the
#                                     arguments, if any, are then run as a command in
#                                     that environment, e.g.
#                                     ATTESTCA_TEST_SETUP_ONLY=1 tests/run.sh bash tests/shell/x.sh
#   ATTESTCA_SHELL_TEST_TIMEOUT       seconds allowed to each tests/shell script (default 900)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

TOOLS_DIR="$REPO_ROOT/target/test-tools"
APT_UPDATED=0
PG_TMP=""        # data/socket dir of a throwaway PostgreSQL we started, if any
PG_BIN=""        # directory of that server's binaries

say() { printf '[run.sh] %s\n' "$*"; }
die() { printf '[run.sh] ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ "$(id -u)" -eq 0 ]]; }
can_apt() { is_root && have apt-get; }

# ---------------------------------------------------------------- clean-up
# A throwaway PostgreSQL must never outlive this script, whatever way it ends.
cleanup() {
    local rc=$?
    if [[ -n "$PG_TMP" ]]; then
        if [[ -f "$PG_TMP/data/postmaster.pid" ]]; then
            as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
# Turn signals into a normal exit so that the EXIT trap runs.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- packages
apt_update_once() {
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
}

# apt_install PKG...: install Debian packages, or tell the user which ones to
# install when we cannot (not root, or not Debian). `apt-get update` runs at
# most once, and only when something is actually missing.
apt_install() {
    if ! can_apt; then
        die "missing tools; please install the Debian package(s): $* (as root: apt-get install $*)"
    fi
    apt_update_once
    say "installing Debian package(s): $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# Tools every run needs, whatever PostgreSQL we end up using.
ensure_base_packages() {
    local missing=()
    have softhsm2-util || missing+=(softhsm2 opensc)
    # opensc alone, when SoftHSM is there but pkcs11-tool is not
    if have softhsm2-util && ! have pkcs11-tool; then missing+=(opensc); fi
    have curl || missing+=(curl)
    have openssl || missing+=(openssl)
    have python3 || missing+=(python3 python3-venv)
    # The deployment files' checkers: Compose v1 validates without a Docker engine.
    have docker-compose || missing+=(docker-compose)
    have systemd-analyze || missing+=(systemd)
    # The rig's TPM mode links tpm2-tss (found by pkg-config); the TPM tests run swtpm, whose
    # swtpm_setup makes EK certificates under a local CA.
    have pkg-config || missing+=(pkg-config)
    pkg-config --exists tss2-esys tss2-tctildr 2>/dev/null || missing+=(libtss2-dev)
    have swtpm || missing+=(swtpm)
    have swtpm_setup || missing+=(swtpm-tools)
    if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
    have "${CARGO:-cargo}" || [[ -n "${ATTESTCA_TEST_SETUP_ONLY:-}" ]] \
        || die "cargo not found (install Rust with rustup; Debian's cargo may be too old)"
}

# ---------------------------------------------------------------- Python tools
# fresh_venv DIR: a new, empty venv at DIR (replacing whatever was there).
fresh_venv() {
    rm -rf "$1"
    mkdir -p "$TOOLS_DIR"
    if ! python3 -m venv "$1"; then
        # Debian ships venv/ensurepip separately from python3.
        rm -rf "$1"
        can_apt || die "python3 -m venv failed; please install the Debian package python3-venv"
        apt_install python3-venv
        python3 -m venv "$1" || die "python3 -m venv still fails after installing python3-venv"
    fi
}

# ---------------------------------------------------------------- pkilint
# A private venv, cached under target/ so that later runs skip the download. pkilint depends
# on Python `cryptography`, which crates/attestca-server/tests/it/strict_names.rs uses as a strict certificate parser;
# with `requests` it also runs the Python example of docs/relying-parties.md (tests/it/relying_party.rs).
ensure_pkilint() {
    local venv="$TOOLS_DIR/venv"
    local lint="$venv/bin/lint_pkix_cert"
    # Reuse the cache only if its interpreter still works (the python it was
    # made from may have been removed or upgraded since).
    if [[ -x "$lint" ]] && "$venv/bin/python" -c 'import pkilint, cryptography, requests' >/dev/null 2>&1; then
        say "pkilint: cached in $venv"
    else
        fresh_venv "$venv"
        say "pkilint: pip install into $venv"
        "$venv/bin/pip" install --quiet pkilint requests || { rm -rf "$venv"; die "pip install pkilint failed"; }
        [[ -x "$lint" ]] || die "pkilint installed but $lint is missing"
        "$venv/bin/python" -c 'import cryptography' \
            || die "pkilint installed but its venv has no cryptography"
    fi
    export ATTESTCA_TEST_PKILINT="$lint"
}

# ---------------------------------------------------------------- OpenAPI tools
# schemathesis and openapi-spec-validator, in a venv of their own beside pkilint's (their
# dependencies stay out of each other's way), cached under target/ the same way.
# schemathesis 4 is pinned by major version: its command-line flags changed between majors.
ensure_openapi_tools() {
    local venv="$TOOLS_DIR/openapi-venv"
    local st="$venv/bin/st" validator="$venv/bin/openapi-spec-validator"
    if [[ -x "$st" && -x "$validator" ]] \
        && "$venv/bin/python" -c 'import schemathesis, openapi_spec_validator' >/dev/null 2>&1; then
        say "schemathesis, openapi-spec-validator: cached in $venv"
    else
        fresh_venv "$venv"
        say "schemathesis, openapi-spec-validator: pip install into $venv"
        "$venv/bin/pip" install --quiet 'schemathesis>=4.32,<5' 'openapi-spec-validator>=0.7' \
            || { rm -rf "$venv"; die "pip install schemathesis openapi-spec-validator failed"; }
        [[ -x "$st" && -x "$validator" ]] || die "installed, but $st or $validator is missing"
    fi
    export ATTESTCA_TEST_SCHEMATHESIS="$st"
    export ATTESTCA_TEST_OPENAPI_SPEC_VALIDATOR="$validator"
}

# ---------------------------------------------------------------- promtool
# Checks the Prometheus configuration and rules in deploy/prometheus. Debian ships promtool
# only in the prometheus package, whose installation would also start a Prometheus server:
# the .deb is downloaded (no root needed once the package lists exist), and only promtool is
# kept, cached under target/ like pkilint.
ensure_promtool() {
    local dir="$TOOLS_DIR/prometheus"
    local tool="$dir/promtool"
    if have promtool; then
        ATTESTCA_TEST_PROMTOOL="$(command -v promtool)"
        say "promtool: $ATTESTCA_TEST_PROMTOOL"
    elif [[ -x "$tool" ]] && "$tool" --version >/dev/null 2>&1; then
        ATTESTCA_TEST_PROMTOOL="$tool"
        say "promtool: cached in $dir"
    else
        have apt-get && have dpkg-deb \
            || die "promtool not found; please install the Debian package prometheus (or put promtool on PATH)"
        rm -rf "$dir"
        mkdir -p "$dir/deb"
        say "promtool: apt-get download prometheus, unpacked into $dir"
        if ! (cd "$dir/deb" && apt-get download prometheus) >"$dir/download.log" 2>&1; then
            # Empty package lists (a fresh container): refresh them, which needs root.
            can_apt || { cat "$dir/download.log" >&2; die "apt-get download prometheus failed; as root: apt-get update, or install prometheus"; }
            apt_update_once
            (cd "$dir/deb" && apt-get download prometheus) >"$dir/download.log" 2>&1 \
                || { cat "$dir/download.log" >&2; die "apt-get download prometheus failed"; }
        fi
        dpkg-deb -x "$dir"/deb/prometheus_*.deb "$dir/deb/root" || die "dpkg-deb -x failed"
        mv "$dir/deb/root/usr/bin/promtool" "$tool" || die "no usr/bin/promtool in the prometheus package"
        rm -rf "$dir/deb" "$dir/download.log"
        "$tool" --version >/dev/null 2>&1 || die "$tool does not run"
        ATTESTCA_TEST_PROMTOOL="$tool"
    fi
    export ATTESTCA_TEST_PROMTOOL
}

# ---------------------------------------------------------------- cargo-fuzz
# fuzz/smoke.sh builds the fuzz targets with cargo-fuzz: from PATH, else installed from
# crates.io into target/test-tools (cached like the tools above).
ensure_cargo_fuzz() {
    local root="$TOOLS_DIR/cargo-fuzz"
    if [[ -x "$root/bin/cargo-fuzz" ]] && "$root/bin/cargo-fuzz" --version >/dev/null 2>&1; then
        say "cargo-fuzz: cached in $root"
    elif have cargo-fuzz; then
        say "cargo-fuzz: $(command -v cargo-fuzz)"
        return 0
    else
        say "cargo-fuzz: cargo install --locked cargo-fuzz into $root"
        "${CARGO:-cargo}" install --locked --root "$root" cargo-fuzz \
            || die "cargo install --locked cargo-fuzz failed"
        [[ -x "$root/bin/cargo-fuzz" ]] || die "cargo-fuzz installed but $root/bin/cargo-fuzz is missing"
    fi
    export PATH="$root/bin:$PATH"
}

# ---------------------------------------------------------------- SoftHSM
find_softhsm_module() {
    local candidate
    for candidate in /usr/lib/softhsm/libsofthsm2.so \
                     /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
                     /usr/lib/*/softhsm/libsofthsm2.so; do
        if [[ -f "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

ensure_softhsm() {
    local module
    module="$(find_softhsm_module)" \
        || die "libsofthsm2.so not found although softhsm2-util is installed; reinstall the Debian package softhsm2"
    # Tests make their own token directories (SOFTHSM2_CONF per test): no token here.
    export ATTESTCA_TEST_PKCS11_MODULE="$module"
    say "SoftHSM module: $module"
}

# ---------------------------------------------------------------- PostgreSQL
# The newest versioned Debian bin dir wins over PATH: /usr/bin/pg_ctl and
# friends may be Debian's pg_wrapper, and /usr/local/bin may hold stray links.
find_pg_bin_dir() {
    local dir candidates=(/usr/lib/postgresql/*/bin)
    dir="$(printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1)"
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    if have initdb && have pg_ctl; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

# pg_client TOOL: path of a PostgreSQL client tool (psql, pg_isready), if any.
pg_client() {
    local dir
    if have "$1"; then command -v "$1"; return 0; fi
    dir="$(find_pg_bin_dir 2>/dev/null || true)"
    if [[ -n "$dir" && -x "$dir/$1" ]]; then printf '%s\n' "$dir/$1"; return 0; fi
    return 1
}

# Is a PostgreSQL server answering on 127.0.0.1:5432?
local_pg_answers() {
    local tool
    if tool="$(pg_client pg_isready)"; then
        "$tool" -q -h 127.0.0.1 -p 5432 -t 5
    elif tool="$(pg_client psql)"; then
        "$tool" -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1
    else
        # No client at all: an open port is the best evidence we can get.
        (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# as_pg_owner CMD...: initdb and postgres refuse to run as root, so as root we
# run them as the `postgres` system user (created by Debian's postgresql).
as_pg_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_throwaway_pg() {
    local port=55432 log
    PG_BIN="$(find_pg_bin_dir || true)"
    if [[ -z "$PG_BIN" ]]; then
        apt_install postgresql
        PG_BIN="$(find_pg_bin_dir)" || die "postgresql installed but no initdb found"
    fi
    if is_root && ! id postgres >/dev/null 2>&1; then
        die "running as root but there is no 'postgres' user to run initdb as (install the Debian package postgresql)"
    fi
    # Under /tmp, not $TMPDIR: the postgres user must reach it, and the socket
    # path must stay short (Unix socket paths are limited to ~107 bytes).
    PG_TMP="$(mktemp -d /tmp/attestca-pg.XXXXXX)"
    if is_root; then chown postgres: "$PG_TMP"; fi
    log="$PG_TMP/pg.log"

    say "initdb in $PG_TMP/data ($PG_BIN)"
    as_pg_owner "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres -A trust --no-sync -E UTF8 \
        >"$PG_TMP/initdb.log" 2>&1 || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }

    while port_in_use "$port"; do
        port=$((port + 1))
        ((port < 55532)) || die "no free port in 55432-55531 for PostgreSQL"
    done

    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$log" \
        -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off" -w start >/dev/null \
        || { tail -n 30 "$log" >&2 || true; die "pg_ctl start failed"; }
    ATTESTCA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# The server binaries (initdb, pg_ctl) for tests that run a PostgreSQL of their own, which
# they stop and start (crates/attestca-server/tests/it/faults.rs): installed when missing, whatever server the rest of
# the suite uses.
ensure_pg_server_binaries() {
    local dir
    dir="$(find_pg_bin_dir || true)"
    if [[ -z "$dir" ]]; then
        apt_install postgresql
        dir="$(find_pg_bin_dir)" || die "postgresql installed but no initdb found"
    fi
    if is_root && ! id postgres >/dev/null 2>&1; then
        die "running as root but there is no 'postgres' user to run initdb as (install the Debian package postgresql)"
    fi
    export ATTESTCA_TEST_PG_BIN="$dir"
    say "PostgreSQL server binaries: $dir"
}

# Sanity check when psql is at hand: the URL works and may CREATE DATABASE.
check_database_url() {
    local psql ok
    psql="$(pg_client psql)" || { say "psql not found; not checking the database URL"; return 0; }
    ok="$("$psql" "$ATTESTCA_TEST_DATABASE_URL" -Atc \
        'select rolsuper or rolcreatedb from pg_roles where rolname = current_user')" \
        || die "cannot connect to $ATTESTCA_TEST_DATABASE_URL"
    [[ "$ok" == "t" ]] || die "the role in $ATTESTCA_TEST_DATABASE_URL may not CREATE DATABASE"
}

choose_database() {
    if [[ -n "${ATTESTCA_TEST_FORCE_THROWAWAY_PG:-}" ]]; then
        say "PostgreSQL: ATTESTCA_TEST_FORCE_THROWAWAY_PG set, ignoring DATABASE_URL and port 5432"
        start_throwaway_pg
        say "PostgreSQL: started a throwaway server: $ATTESTCA_TEST_DATABASE_URL"
    elif [[ -n "${DATABASE_URL:-}" ]]; then
        ATTESTCA_TEST_DATABASE_URL="$DATABASE_URL"
        say "PostgreSQL: using DATABASE_URL"
    elif local_pg_answers; then
        ATTESTCA_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
        say "PostgreSQL: using the server on 127.0.0.1:5432"
    else
        start_throwaway_pg
        say "PostgreSQL: nothing on 127.0.0.1:5432, started a throwaway server: $ATTESTCA_TEST_DATABASE_URL"
    fi
    export ATTESTCA_TEST_DATABASE_URL
    check_database_url
}

# ---------------------------------------------------------------- the rest
export_misc() {
    # Rust tests fail rather than skip when one of the components above is missing.
    export ATTESTCA_TEST_REQUIRE_ALL=1
    # A real TPM for the TPM tests (swtpm_setup makes its EK certificate under a local CA).
    if have swtpm && have swtpm_setup; then export ATTESTCA_TEST_SWTPM="$(command -v swtpm)"; fi
    # The real attestation data (Microchip, YubiKey, TPM) is read in place, never copied into
    # the project: ATTESTCA_VECTORS_DIR if set, else ../shared/vectors beside the checkout.
    if [[ -z "${ATTESTCA_VECTORS_DIR:-}" && -d "$REPO_ROOT/../shared/vectors" ]]; then
        ATTESTCA_VECTORS_DIR="$(cd "$REPO_ROOT/../shared/vectors" && pwd)"
    fi
    if [[ -z "${ATTESTCA_VECTORS_DIR:-}" || ! -d "$ATTESTCA_VECTORS_DIR" ]]; then
        say "WARNING: no test vectors (set ATTESTCA_VECTORS_DIR or place shared/vectors beside the"
        say "checkout); the tests that read real attestation data will fail, as they must in CI"
    else
        export ATTESTCA_VECTORS_DIR
    fi
}

print_environment() {
    local var
    for var in ATTESTCA_TEST_PKILINT ATTESTCA_TEST_PROMTOOL ATTESTCA_TEST_SCHEMATHESIS \
               ATTESTCA_TEST_OPENAPI_SPEC_VALIDATOR ATTESTCA_TEST_PKCS11_MODULE \
               ATTESTCA_TEST_DATABASE_URL ATTESTCA_TEST_PG_BIN ATTESTCA_TEST_REQUIRE_ALL ATTESTCA_VECTORS_DIR \
               ATTESTCA_TEST_SWTPM; do
        say "$var=${!var:-<unset>}"
    done
}

build_binaries() {
    local cargo="${CARGO:-cargo}"
    say "$cargo build --bins"
    # The shell tests need these binaries: without them there is nothing more to run.
    "$cargo" build --bins || die "cargo build --bins failed"
}

run_cargo_tests() {
    local cargo="${CARGO:-cargo}"
    say "$cargo test --all-targets $*"
    "$cargo" test --all-targets "$@"
}

run_shell_tests() {
    local timeout_s="${ATTESTCA_SHELL_TEST_TIMEOUT:-900}" t name rc
    local passed=0 failed=0 failed_names=()
    # Where `cargo test` just built them (CARGO_TARGET_DIR moves cargo's output).
    local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
    export ATTESTCA_BIN="$bin/attestca"
    export ATTESTCA_RIG_BIN="$bin/attestca-rig"
    shopt -s nullglob
    for t in tests/shell/*.sh; do
        name="$(basename "$t")"
        say "shell test $name"
        rc=0
        # timeout: a hung server must not eat CI's whole time budget.
        timeout --kill-after=30 "$timeout_s" bash "$t" || rc=$?
        if ((rc == 0)); then
            say "PASS $name"
            passed=$((passed + 1))
        else
            say "FAIL $name (exit $rc)"
            failed=$((failed + 1))
            failed_names+=("$name")
        fi
    done
    shopt -u nullglob
    ((failed == 0)) || say "failed shell tests: ${failed_names[*]}"
    echo "shell: $passed passed, $failed failed"
    ((failed == 0))
}

# Every fuzz target built and run for a few seconds over its seeds (fuzz/README.md).
run_fuzz_smoke() {
    say "fuzz smoke: fuzz/smoke.sh"
    bash fuzz/smoke.sh
}

main() {
    local cargo_status=0 shell_status=0 fuzz_status=0
    ensure_base_packages
    ensure_pkilint
    ensure_openapi_tools
    ensure_promtool
    ensure_softhsm
    ensure_cargo_fuzz
    choose_database
    ensure_pg_server_binaries
    export_misc
    print_environment
    if [[ -n "${ATTESTCA_TEST_SETUP_ONLY:-}" ]]; then
        say "ATTESTCA_TEST_SETUP_ONLY set: stopping before cargo"
        if (($#)); then
            say "running: $*"
            "$@"
        fi
        return
    fi
    build_binaries
    # Go on to the shell tests even when a Rust test failed: one run shows all failures.
    run_cargo_tests "$@" || cargo_status=$?
    run_shell_tests || shell_status=$?
    run_fuzz_smoke || fuzz_status=$?
    if ((cargo_status != 0)); then say "cargo test failed (exit $cargo_status)"; fi
    if ((fuzz_status != 0)); then say "fuzz smoke failed (exit $fuzz_status)"; fi
    ((cargo_status == 0 && shell_status == 0 && fuzz_status == 0))
}

main "$@"

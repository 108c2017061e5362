# Shared by the benches/load scripts (sourced): a PostgreSQL + SoftHSM server in the
# background, and throughput windows against it with CPU accounted per process.
#
# The caller sets root (the checkout) and out (the output directory, created here).
# Environment: DURATION (throughput windows, default 15 s), CONCURRENCY (default 32),
# SESSIONS (PKCS#11 sessions of every server, default 16).

duration=${DURATION:-15}
concurrency=${CONCURRENCY:-32}
sessions=${SESSIONS:-16}
bin=${CARGO_TARGET_DIR:-$root/target}/release
mkdir -p "$out"
out=$(cd "$out" && pwd)

server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

wait_for() { # URL
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "${0##*/}: $1 never answered" >&2
    exit 1
}

# The CA's process: the child of the script that ran it (pg-softhsm.sh execs the server).
start_pg() { # NAME, then environment assignments for the server
    local name=$1
    shift
    env "$@" ATTESTCA_SIGNER__SESSIONS="$sessions" \
        "$root/benches/load/pg-softhsm.sh" "$out/$name" >"$out/$name.server.log" 2>&1 &
    server_pid=$!
    wait_for http://127.0.0.1:${HTTP_PORT:-28080}/metrics
}

# Stops the running server and starts BIN (another build, for an A/B comparison on the same
# database) on the install NAME that start_pg prepared.
restart_pg() { # NAME BIN
    stop_server
    SOFTHSM2_CONF=$out/$1/softhsm/softhsm2.conf ATTESTCA_SIGNER_PIN=123456 \
        ATTESTCA_SIGNER__SESSIONS="$sessions" \
        "$2" serve --config "$out/$1/attestca.toml" >>"$out/$1.server.log" 2>&1 &
    server_pid=$!
    wait_for http://127.0.0.1:${HTTP_PORT:-28080}/metrics
}

flags() { cat "$out/$1/flags"; }

throughput() { # SERVER [WINDOW]: a window against the running server, written to WINDOW.json
    local window=${2:-$1}
    # shellcheck disable=SC2046
    "$bin/attestca-rig" load throughput $(flags "$1") --concurrency "$concurrency" \
        --duration "$duration" --account "ca=$server_pid" --account postgres=comm:postgres \
        --metrics "http://127.0.0.1:${HTTP_PORT:-28080}/metrics" \
        --json "$out/$window.json" >"$out/$window.txt" 2>&1
    tail -4 "$out/$window.txt"
}


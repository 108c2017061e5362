# shellcheck shell=bash
# Sourced by the shell tests that run `attestca serve --dev` (tests/run.sh runs only
# tests/shell/*.sh, so nothing here runs by itself): free loopback ports, start with a wait
# for /healthz, graceful stop, the log's tail.
# Expects ATTESTCA_BIN and LOG (the server log); sets SERVER_PID, EST_PORT and HTTP_PORT.
SERVER_PID="${SERVER_PID:-}"
EST_PORT="${EST_PORT:-}" HTTP_PORT="${HTTP_PORT:-}"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [TAKEN...]: a port nothing listens on, below Linux's ephemeral range (32768+) so
# that no client connection's source port takes it meanwhile (still racy: start_dev_server
# retries on "Address already in use").
free_port() {
    local p i taken
    for ((i = 0; i < 500; i++)); do
        p=$((20000 + RANDOM % 12000))
        for taken in "$@"; do [[ "$p" == "$taken" ]] && continue 2; done
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    return 1
}

log_tail() { echo "--- last lines of $LOG"; tail -n 40 "$LOG" 2>/dev/null || true; echo "---"; }

# stop_server: SIGTERM, 15 s for a graceful stop, then SIGKILL.
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# start_dev_server DATA_DIR: `serve --dev` on fresh ports with its data in DATA_DIR; waits up
# to 60 s for /healthz. Must run in the test's own shell (not a subshell): SERVER_PID and the
# ports outlive it.
start_dev_server() {
    local attempt
    for attempt in 1 2 3; do
        start_dev_server_once "$1" && return 0
        grep -q "Address already in use" "$LOG" 2>/dev/null || return 1
        echo "# port taken meanwhile (attempt $attempt); retrying on other ports"
        : >"$LOG"
    done
    return 1
}

start_dev_server_once() {
    local data=$1 deadline rc
    EST_PORT="$(free_port)" || { echo "no free TCP port found"; return 1; }
    HTTP_PORT="$(free_port "$EST_PORT")" || { echo "no free TCP port found"; return 1; }
    echo "=== $(date -u +%FT%TZ) starting on est=$EST_PORT http=$HTTP_PORT" >>"$LOG"
    "$ATTESTCA_BIN" serve --dev --data-dir "$data" \
        --est-addr "127.0.0.1:$EST_PORT" --http-addr "127.0.0.1:$HTTP_PORT" >>"$LOG" 2>&1 &
    SERVER_PID=$!
    deadline=$((SECONDS + 60))
    until curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            rc=0
            wait "$SERVER_PID" || rc=$?
            echo "server exited (status $rc) before /healthz answered"
            SERVER_PID=""
            log_tail
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "/healthz did not answer 200 within 60 s"
            log_tail
            return 1
        fi
        sleep 0.5
    done
}

# install_cleanup: on exit (and INT/TERM) stop the server and remove the test's temp dir W,
# or keep it with ATTESTCA_KEEP_TMP=1 for a post-mortem; the exit status is kept.
install_cleanup() {
    trap cleanup_dev_test EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup_dev_test() {
    local rc=$?
    stop_server
    if [[ -n "${ATTESTCA_KEEP_TMP:-}" ]]; then
        echo "# kept $W (server log: $LOG)"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}

#!/usr/bin/env bash
# kill -9 of the CA under load, repeated: every certificate a rig RECEIVED must be in the
# database with its enrollment event, and a restart on the same database and token must need no
# repair.
#
#   benches/kill9.sh [OUT]            # OUT default: target/kill9/<UTC timestamp>
#
# One install (benches/load/pg-softhsm.sh: a fresh PostgreSQL database and SoftHSM token),
# then TRIALS times:
#   1. start `attestca serve` on that database and token; wait for /readyz 200 (READY_SECS);
#   2. run a factory line (`attestca-rig load factory --log`: the manufacturing log records
#      each board's certificate serial once the board has it);
#   3. once the first board is logged, wait a random 0..KILL_WINDOW_MS and SIGKILL the CA;
#   4. when the line has finished (boards after the kill fail), check in PostgreSQL that every
#      serial in the log has its `certificates` row and an `enrollment_events` row with
#      outcome 'issued'.
# At the end: one more start to /readyz, a clean stop, the summary. Exit status 1 if any
# received certificate is missing a record, a serial was received twice, or a restart failed.
#
# Environment (defaults in brackets):
#   TRIALS          [100]
#   STATIONS, TAKT  the line: stations and seconds between boards [32, 0.1: 320 boards/s]
#   KEYGEN_MS       simulated key generation, MS or MIN..MAX [5..50]
#   LOAD_SECS       seconds of arrivals per trial [3]
#   KILL_WINDOW_MS  the kill lands uniformly in 0..this after the first board is logged [2500]
#   READY_SECS      how long a restart may take to answer /readyz 200 [60]
#   MAX_SECS        stop starting trials after this many seconds (0: no limit) [0]
#   SEED            for the kill moments [the PID]
#   EST_PORT / HTTP_PORT  [28643 / 28280]
#   KEEP_DB=1       keep the throwaway database
#   ATTESTCA_BENCH_DATABASE_URL, ATTESTCA_BENCH_PKCS11_MODULE, EXTRA_CONFIG: as pg-softhsm.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
trials=${TRIALS:-100}
stations=${STATIONS:-32}
takt=${TAKT:-0.1}
keygen=${KEYGEN_MS:-5..50}
load_secs=${LOAD_SECS:-3}
kill_window_ms=${KILL_WINDOW_MS:-2500}
ready_secs=${READY_SECS:-60}
max_secs=${MAX_SECS:-0}
seed=${SEED:-$$}
export EST_PORT=${EST_PORT:-28643}
export HTTP_PORT=${HTTP_PORT:-28280}
export NO_COLOR=1  # plain log lines, for counting WARN / ERROR
out=${1:-$root/target/kill9/$(date -u +%Y%m%dT%H%M%SZ)}
work=$out/install
bin=${CARGO_TARGET_DIR:-$root/target}/release
admin_url=${ATTESTCA_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
RANDOM=$seed

for tool in psql softhsm2-util curl; do
    command -v "$tool" >/dev/null || { echo "kill9: $tool not found" >&2; exit 2; }
done
if [[ ! -x $bin/attestca || ! -x $bin/attestca-rig ]]; then
    (cd "$root" && cargo build --release --bins)
fi
for port in "$EST_PORT" "$HTTP_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "kill9: port $port is in use (set EST_PORT / HTTP_PORT)" >&2
        exit 2
    fi
done
mkdir -p "$out"

ca_pid='' rig_pid='' db_url=''
stop_ca() { # stop_ca SIGNAL
    [[ -n $ca_pid ]] || return 0
    kill "-$1" "$ca_pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$ca_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ca_pid" 2>/dev/null || true
    wait "$ca_pid" 2>/dev/null || true
    ca_pid=''
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -n $rig_pid ]] && kill "$rig_pid" 2>/dev/null && wait "$rig_pid" 2>/dev/null
    stop_ca TERM
    if [[ -n $db_url && ${KEEP_DB:-0} != 1 ]]; then
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS ${db_url##*/}" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() { # wait_ready LOG: 0 when /readyz answers 200 within READY_SECS
    local deadline=$((SECONDS + ready_secs))
    while ((SECONDS < deadline)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz") == 200 ]] && return 0
        kill -0 "$ca_pid" 2>/dev/null || { echo "kill9: the CA exited:" >&2; tail -5 "$1" >&2; return 1; }
        sleep 0.05
    done
    echo "kill9: /readyz not 200 after ${ready_secs} s:" >&2
    tail -5 "$1" >&2
    return 1
}

# The install (the first server, started by pg-softhsm.sh, is stopped cleanly once ready).
"$root/benches/load/pg-softhsm.sh" "$work" >"$out/setup.txt" 2>"$out/server-setup.log" &
ca_pid=$!
for _ in $(seq 600); do
    [[ -s $work/flags ]] && break
    kill -0 "$ca_pid" 2>/dev/null || { echo "kill9: set-up failed:" >&2; cat "$out/server-setup.log" >&2; exit 1; }
    sleep 0.1
done
db_url=$(sed -n 's/^database: *//p' "$out/setup.txt")
wait_ready "$out/server-setup.log"
stop_ca TERM
read -r -a conn <"$work/flags"
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf ATTESTCA_SIGNER_PIN=123456

sql() { psql -X -q -At "$db_url" "$@"; }
# check SERIALS_FILE: prints "missing_certificate missing_event" for the serials in the file
check() {
    sql -v ON_ERROR_STOP=1 <<EOF
CREATE TEMP TABLE received (serial TEXT NOT NULL);
\copy received FROM '$1'
SELECT
  (SELECT count(DISTINCT r.serial) FROM received r WHERE NOT EXISTS (SELECT 1 FROM certificates c WHERE c.serial = r.serial)),
  (SELECT count(DISTINCT r.serial) FROM received r WHERE NOT EXISTS (
     SELECT 1 FROM enrollment_events e WHERE e.serial = r.serial AND e.outcome = 'issued'));
EOF
}

echo "kill9: $trials trials, $stations stations × ${takt} s takt for ${load_secs} s each, kill 0..${kill_window_ms} ms after the first board; seed $seed; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
results=$out/trials.csv
echo "trial,ready_ms,kill_after_ms,boards_logged,received,missing_certificate,missing_event,certificates_in_db,ca_warn,ca_error,readyz_503_lines" >"$results"
: >"$out/received-all.txt"
started_at=$SECONDS
done_trials=0 failed_restarts=0 total_received=0 total_missing_cert=0 total_missing_event=0
for trial in $(seq "$trials"); do
    if ((max_secs > 0 && SECONDS - started_at >= max_secs)); then
        echo "kill9: MAX_SECS=$max_secs reached after $done_trials trials" >&2
        break
    fi
    log=$out/server-$trial.log boards=$out/boards-$trial.jsonl
    t_start=$(date +%s%N)
    "$bin/attestca" serve --config "$work/attestca.toml" >"$log" 2>&1 &
    ca_pid=$!
    if ! wait_ready "$log"; then
        failed_restarts=$((failed_restarts + 1))
        echo "trial $trial: RESTART FAILED (see $log)" >&2
        stop_ca TERM
        break
    fi
    ready_ms=$((($(date +%s%N) - t_start) / 1000000))
    : >"$boards"
    "$bin/attestca-rig" load factory "${conn[@]}" --stations "$stations" --takt "$takt" \
        --duration "$load_secs" --keygen-ms "$keygen" --drain 10 --log "$boards" \
        >"$out/rig-$trial.txt" 2>&1 &
    rig_pid=$!
    # Under load: the first board is logged; then a random moment.
    for _ in $(seq 400); do
        [[ -s $boards ]] && break
        kill -0 "$rig_pid" 2>/dev/null || break
        sleep 0.025
    done
    kill_after_ms=$(((RANDOM * 32768 + RANDOM) % (kill_window_ms + 1)))
    sleep "$(printf '%d.%03d' $((kill_after_ms / 1000)) $((kill_after_ms % 1000)))"
    kill -KILL "$ca_pid"
    wait "$ca_pid" 2>/dev/null || true
    ca_pid=''
    wait "$rig_pid" 2>/dev/null || true
    rig_pid=''

    grep -o '"certificate_serial":"[0-9a-f]*"' "$boards" | cut -d'"' -f4 >"$out/received-$trial.txt" || true
    received=$(wc -l <"$out/received-$trial.txt")
    logged=$(wc -l <"$boards")
    counts=$(check "$out/received-$trial.txt") || { echo "kill9: the check in PostgreSQL failed" >&2; exit 1; }
    IFS='|' read -r miss_cert miss_event <<<"$counts"
    [[ $miss_cert =~ ^[0-9]+$ && $miss_event =~ ^[0-9]+$ ]] || { echo "kill9: unexpected check output: $counts" >&2; exit 1; }
    in_db=$(sql -c 'SELECT count(*) FROM certificates')
    # Our own /readyz polls during the start-up are answered 503 and logged (WARN and ERROR);
    # counted apart from the rest.
    readyz=$(grep -F 'path=/readyz' "$log" | grep -cE ' (WARN|ERROR) ' || true)
    warn=$(grep -vF 'path=/readyz' "$log" | grep -c ' WARN ' || true)
    error=$(grep -vF 'path=/readyz' "$log" | grep -c ' ERROR ' || true)
    cat "$out/received-$trial.txt" >>"$out/received-all.txt"
    echo "$trial,$ready_ms,$kill_after_ms,$logged,$received,$miss_cert,$miss_event,$in_db,$warn,$error,$readyz" >>"$results"
    printf 'trial %3d: ready in %5d ms, killed %4d ms into the load, %4d boards logged, %4d certificates received, missing: %d certificate rows, %d issued events\n' \
        "$trial" "$ready_ms" "$kill_after_ms" "$logged" "$received" "$miss_cert" "$miss_event" >&2
    done_trials=$((done_trials + 1))
    total_received=$((total_received + received))
    total_missing_cert=$((total_missing_cert + miss_cert))
    total_missing_event=$((total_missing_event + miss_event))
done

# A last restart: ready, then a clean stop.
final_ok=no
if ((failed_restarts == 0)); then
    "$bin/attestca" serve --config "$work/attestca.toml" >"$out/server-final.log" 2>&1 &
    ca_pid=$!
    if wait_ready "$out/server-final.log"; then final_ok=yes; else failed_restarts=$((failed_restarts + 1)); fi
    stop_ca TERM
fi

unique=$(sort -u "$out/received-all.txt" | wc -l)
duplicates=$((total_received - unique))
in_db=$(sql -c 'SELECT count(*) FROM certificates')
issued_events=$(sql -c "SELECT count(*) FROM enrollment_events WHERE outcome = 'issued'")
{
    echo "kill9 summary ($out):"
    echo "  trials: $done_trials of $trials, in $((SECONDS - started_at)) s; restarts that failed: $failed_restarts; last restart ready and stopped cleanly: $final_ok"
    echo "  certificates received by the rigs: $total_received ($unique distinct, $duplicates received twice)"
    echo "  missing in PostgreSQL: $total_missing_cert certificate rows, $total_missing_event 'issued' enrollment events"
    echo "  in PostgreSQL: $in_db certificates, $issued_events 'issued' events; $((issued_events - unique)) issued and committed but never received (killed between the commit and the response reaching the rig)"
    awk -F, 'NR > 1 { r += $2; if ($2 > m) m = $2; n++ } END { if (n) printf "  restart to /readyz 200: mean %.0f ms, max %d ms\n", r / n, m }' "$results"
    awk -F, 'NR > 1 { w += $9; e += $10; r += $11 } END { printf "  CA log lines over all trials: %d WARN, %d ERROR (besides %d lines for the 503s of our /readyz polls during start-up)\n", w, e, r }' "$results"
} | tee "$out/summary.txt"
if ((total_missing_cert > 0 || total_missing_event > 0 || duplicates > 0 || failed_restarts > 0 || done_trials == 0)); then
    echo "kill9: FAILED" >&2
    exit 1
fi
echo "kill9: OK"

#!/usr/bin/env bash
# Soak: the CA on PostgreSQL + SoftHSM (benches/load/pg-softhsm.sh) under a factory line for a
# long time, sampling the CA process every SAMPLE_SECS: resident memory, open files, threads,
# CPU time, and from /metrics the certificates issued and the OCSP responses cached. Writes a
# CSV, an SVG chart (benches/soak_chart.py, Python standard library only) and a summary.
#
#   benches/soak.sh [OUT]            # OUT default: target/soak/<UTC timestamp>
#
# Environment (defaults in brackets):
#   SOAK_SECS     seconds during which boards arrive [1800]
#   STATIONS      stations of the line [20]
#   TAKT          seconds between boards on a station [2]
#   KEYGEN_MS     simulated secure-element key generation, MS or MIN..MAX [50..500]
#   SAMPLE_SECS   sampling period [10]
#   IDLE_SECS     sampling before the line starts and after it stops [30]
#   EST_PORT / HTTP_PORT  the CA's listeners [28543 / 28180]
#   KEEP_DB=1     keep the throwaway database (default: dropped at the end)
#   ATTESTCA_BENCH_DATABASE_URL, ATTESTCA_BENCH_PKCS11_MODULE, EXTRA_CONFIG, ATTESTCA_BIN:
#                 passed to benches/load/pg-softhsm.sh
#
# 20 stations at a 2 s takt is 10 boards/s, 36,000 boards an hour: the personalisation step
# of a large plant (several SMT lines, each with a few programming fixtures), above what one
# line needs and well below the CA's measured capacity (docs/performance.md), so the run
# shows memory and handles over time, not saturation. Method and figures: docs/performance.md
# ("Soak").
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
soak_secs=${SOAK_SECS:-1800}
stations=${STATIONS:-20}
takt=${TAKT:-2}
keygen=${KEYGEN_MS:-50..500}
sample_secs=${SAMPLE_SECS:-10}
idle_secs=${IDLE_SECS:-30}
export EST_PORT=${EST_PORT:-28543}
export HTTP_PORT=${HTTP_PORT:-28180}
export NO_COLOR=1  # plain log lines, for counting WARN / ERROR
out=${1:-$root/target/soak/$(date -u +%Y%m%dT%H%M%SZ)}
work=$out/install
bin=${CARGO_TARGET_DIR:-$root/target}/release
metrics_url=http://127.0.0.1:$HTTP_PORT/metrics
admin_url=${ATTESTCA_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

for tool in psql softhsm2-util python3 curl; do
    command -v "$tool" >/dev/null || { echo "soak: $tool not found" >&2; exit 2; }
done
if [[ ! -x $bin/attestca || ! -x $bin/attestca-rig ]]; then
    (cd "$root" && cargo build --release --bins)
fi
for port in "$EST_PORT" "$HTTP_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "soak: port $port is in use (set EST_PORT / HTTP_PORT)" >&2
        exit 2
    fi
done
mkdir -p "$out"

ca_pid='' rig_pid='' db_url=''
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -n $rig_pid ]] && kill "$rig_pid" 2>/dev/null && wait "$rig_pid" 2>/dev/null
    if [[ -n $ca_pid ]] && kill -0 "$ca_pid" 2>/dev/null; then
        kill -TERM "$ca_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$ca_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ca_pid" 2>/dev/null || true
        wait "$ca_pid" 2>/dev/null || true
    fi
    if [[ -n $db_url && ${KEEP_DB:-0} != 1 ]]; then
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS ${db_url##*/}" >/dev/null 2>&1 || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The install and the server: pg-softhsm.sh execs the server, so its PID is the CA's.
"$root/benches/load/pg-softhsm.sh" "$work" >"$out/setup.txt" 2>"$out/ca.log" &
ca_pid=$!
for _ in $(seq 600); do
    [[ -s $work/flags ]] && break
    kill -0 "$ca_pid" 2>/dev/null || { echo "soak: set-up failed:" >&2; cat "$out/ca.log" >&2; exit 1; }
    sleep 0.1
done
db_url=$(sed -n 's/^database: *//p' "$out/setup.txt")
ready=0
for _ in $(seq 600); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz") == 200 ]]; then
        ready=1
        break
    fi
    kill -0 "$ca_pid" 2>/dev/null || break
    sleep 0.1
done
[[ $ready == 1 ]] || { echo "soak: the CA did not become ready:" >&2; tail "$out/ca.log" >&2; exit 1; }
[[ $(readlink "/proc/$ca_pid/exe") == */attestca ]] || { echo "soak: PID $ca_pid is not the CA" >&2; exit 1; }
read -r -a conn <"$work/flags"

metric() { # metric NAME: the sum of NAME's samples (all label sets), or empty
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) printf "%d", s }' "$2"
}
ticks=$(getconf CLK_TCK)
t0=$(date +%s.%N)
csv=$out/samples.csv
echo "t_s,phase,rss_kb,hwm_kb,fds,threads,cpu_s,certificates_issued,ocsp_cached,nonces_outstanding,db_connections,rig_rss_kb,load1" >"$csv"
sample() { # sample PHASE
    local status fds rss hwm threads cpu scrape issued cached nonces dbc rig_rss=''
    status=$(cat "/proc/$ca_pid/status") || return 1
    rss=$(awk '/^VmRSS:/ {print $2}' <<<"$status")
    hwm=$(awk '/^VmHWM:/ {print $2}' <<<"$status")
    threads=$(awk '/^Threads:/ {print $2}' <<<"$status")
    fds=$(ls "/proc/$ca_pid/fd" | wc -l)
    cpu=$(awk -v hz="$ticks" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$ca_pid/stat")
    scrape=$out/.metrics
    curl -s --max-time 5 "$metrics_url" >"$scrape" || : >"$scrape"
    issued=$(metric attestca_certificates_issued_total "$scrape")
    cached=$(metric attestca_ocsp_cached_responses "$scrape")
    nonces=$(metric attestca_nonces_outstanding "$scrape")
    dbc=$(metric attestca_db_connections "$scrape")
    if [[ -n $rig_pid ]] && [[ -r /proc/$rig_pid/status ]]; then
        rig_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$rig_pid/status" 2>/dev/null || true)
    fi
    printf '%.1f,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' \
        "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')" "$1" "$rss" "$hwm" "$fds" "$threads" "$cpu" \
        "${issued:-}" "${cached:-}" "${nonces:-}" "${dbc:-}" "$rig_rss" \
        "$(cut -d' ' -f1 /proc/loadavg)" >>"$csv"
}

echo "soak: CA pid $ca_pid, $stations stations × ${takt} s takt for ${soak_secs} s; samples every ${sample_secs} s into $csv" >&2
echo "soak: machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(git -C "$root" rev-parse --short HEAD)" >&2

# Idle before the line starts.
for _ in $(seq $((idle_secs / sample_secs))); do sample idle-before; sleep "$sample_secs"; done

"$bin/attestca-rig" load factory "${conn[@]}" --stations "$stations" --takt "$takt" \
    --duration "$soak_secs" --keygen-ms "$keygen" --metrics "$metrics_url" \
    --json "$out/factory.json" --svg "$out/factory.svg" --log "$out/boards.jsonl" \
    >"$out/factory.txt" 2>"$out/factory.stderr" &
rig_pid=$!
next=$(date +%s)
while kill -0 "$rig_pid" 2>/dev/null; do
    sample load
    next=$((next + sample_secs))
    while (( $(date +%s) < next )) && kill -0 "$rig_pid" 2>/dev/null; do sleep 1; done
done
rig_status=0
wait "$rig_pid" || rig_status=$?
rig_pid=''
kill -0 "$ca_pid" 2>/dev/null || { echo "soak: the CA died during the run" >&2; tail "$out/ca.log" >&2; exit 1; }

# Idle after: do handles and threads go back?
for _ in $(seq $((idle_secs / sample_secs))); do sleep "$sample_secs"; sample idle-after; done

cat "$out/factory.txt"
# WARN / ERROR lines, less the 503s of our own /readyz polls while the CA was starting.
levels=$(grep -vF 'path=/readyz' "$out/ca.log" | grep -oE '^[^ ]+ +(ERROR|WARN)' | awk '{print $2}' | sort | uniq -c | tr '\n' ' ' || true)
echo "CA log: ${levels:-no WARN or ERROR lines} besides start-up /readyz 503s ($out/ca.log)"
python3 "$root/benches/soak_chart.py" "$csv" "$out/soak.svg" \
    --title "attestca soak: $stations stations × ${takt} s takt, ${soak_secs} s, PostgreSQL + SoftHSM, $(nproc) shared cores" \
    | tee "$out/summary.txt"
echo "files: $out (samples.csv, soak.svg, factory.json, boards.jsonl, ca.log)"
exit "$rig_status"

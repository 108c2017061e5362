#!/usr/bin/env bash
# The issuance log at a million entries (docs/transparency.md, "Cost"): what the log adds to
# each enrollment, how long the CA takes to integrate a million-entry backlog, and how long
# `attestca log verify` takes to audit the whole log. One server (PostgreSQL + SoftHSM,
# benches/load/pg-softhsm.sh, log on):
#
#  1. one throughput window (the template certificate, logged by the CA), the log verified
#     and its checkpoint saved;
#  2. benches/log/fill-log.sql stores ENTRIES certificates (with their claims and events),
#     then queues one log entry per certificate in one transaction, encoded in SQL as
#     docs/transparency.md specifies (checked first against every entry the CA logged);
#  3. the running CA's integrator works the backlog off (16,384 entries a round); the time
#     from the entries' commit to the last one integrated is the integration time;
#  4. `attestca log verify --key-file <data_dir>/pki/log.vkey --since <step 1's checkpoint>`:
#     every entry fetched and re-hashed, every hash tile and the root recomputed, the
#     consistency with the earlier checkpoint (wall time, CPU, peak RSS with /usr/bin/time),
#     then the same with --config (the database cross-check: the fill gives each logged
#     certificate its own serial, so it is meaningful);
#  5. WINDOWS interleaved pairs of throughput windows on the filled database, the log on
#     (the default) and off (ATTESTCA_TRANSPARENCY__ENABLED=false), on then off in odd
#     pairs and off then on in even ones, the CA restarted for each window and measured once
#     its OCSP cache is warm (/readyz): CPU per enrollment of the CA and of PostgreSQL, and
#     throughput.
#
# Writes OUT/million.json and OUT/summary.txt (printed).
#
#   benches/log/million.sh [OUT]
#
# Environment: ENTRIES (default 1000000; a million takes about two minutes to fill, one to
# integrate and ~3 GB of disk), WINDOWS (default 3), DURATION (default 15 s), CONCURRENCY
# (default 32), SESSIONS (default 16), KEEP_DATABASE (1: keep the filled database; by
# default it is dropped at the end), and what benches/load/pg-softhsm.sh reads. The whole
# run at a million entries and 4 pairs takes about 15 minutes.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/log-million-$(date -u +%Y%m%dT%H%M%SZ)}
entries=${ENTRIES:-1000000}
windows=${WINDOWS:-3}
# shellcheck source=benches/load/lib.sh
source "$root/benches/load/lib.sh"

for tool in curl psql python3 softhsm2-util; do
    command -v "$tool" >/dev/null || { echo "million.sh: $tool is missing" >&2; exit 2; }
done
(cd "$root" && cargo build --release --bins)
# The measured binaries, copied: a rebuild in the shared target directory during the run
# (another checkout's work) must not swap the server between two windows.
mkdir -p "$out/bin"
cp "$bin/attestca" "$bin/attestca-rig" "$out/bin/"
bin=$out/bin
revision=$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)
echo "$revision" >"$out/revision"

http=http://127.0.0.1:${HTTP_PORT:-28080}
start_pg server ATTESTCA_BIN="$bin/attestca"
db_url=$(sed -n 's/^database: *//p' "$out/server.server.log")
config=$out/server/attestca.toml
ca_name=$(sed -n '/^\[ca\]/,/^\[/s/^name = "\(.*\)"/\1/p' "$config")
log_url=$http/log/$ca_name/
vkey=$out/server/data/pki/log.vkey
sql() { psql -qAt "$db_url" -c "$1"; }
now() { date +%s.%N; }
metric() { curl -sf "$http/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
# CPU seconds (user + system) of the CA process so far.
ca_cpu() { awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) / t }' "/proc/$server_pid/stat"; }
wait_ready() { # the CA answers /readyz: database, signer, and the OCSP cache warm
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$http/readyz" && return 0
        sleep 0.5
    done
    echo "million.sh: $http/readyz never answered 200" >&2
    exit 1
}
wait_integrated() { # nothing pending
    for _ in $(seq 1 600); do
        [[ $(sql "SELECT count(*) FROM log_pending") == 0 ]] && return 0
        sleep 0.5
    done
    echo "million.sh: log_pending never emptied" >&2
    exit 1
}
verify() { # NAME, then flags: `attestca log verify` timed into NAME.jsonl / NAME.time / NAME.rc
    local name=$1 rc=0 cpu0
    shift
    cpu0=$(ca_cpu)
    local timer=()
    [[ -x /usr/bin/time ]] && timer=(/usr/bin/time -v -o "$out/$name.time")
    "${timer[@]}" "$bin/attestca" log verify --url "$log_url" "$@" >"$out/$name.jsonl" 2>"$out/$name.err" || rc=$?
    echo "$rc" >"$out/$name.rc"
    python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$cpu0" "$(ca_cpu)" \
        >"$out/$name.server-cpu"
    echo "log verify ($name): exit $rc"
    cat "$out/$name.jsonl"
}

echo "== template window (log on)"
wait_ready
throughput server template
wait_integrated
verify verify-before --key-file "$vkey" --save "$out/before.checkpoint"

echo "== filling with $entries certificates"
fill_started=$(now)
psql -q "$db_url" -v stage=certificates -v n="$entries" -f "$root/benches/log/fill-log.sql" | tee "$out/fill.txt"
psql -q "$db_url" -c CHECKPOINT
fill_done=$(now)

echo "== queueing their $entries log entries"
size_before=$(metric attestca_log_size)
cpu_before=$(ca_cpu)
psql -q "$db_url" -v stage=log -f "$root/benches/log/fill-log.sql" 2>&1 | tee -a "$out/fill.txt"
queued_at=$(now)
queued=$(sed -n 's/^queued \([0-9]*\) entries.*/\1/p' "$out/fill.txt")
target=$((size_before + queued))

echo "== integrating: $size_before -> $target"
echo "seconds,log_size,pending,ca_cpu_seconds" >"$out/integration.csv"
while :; do
    size=$(metric attestca_log_size)
    echo "$(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$queued_at" "$(now)"),$size,$(metric attestca_log_pending_entries),$(ca_cpu)" \
        >>"$out/integration.csv"
    [[ ${size:-0} -ge $target ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "million.sh: the CA exited while integrating" >&2
        exit 1
    fi
    sleep 1
done
integrated_at=$(now)
cpu_after=$(ca_cpu)
wait_integrated
tail -1 "$out/integration.csv"
psql -q "$db_url" -c "VACUUM ANALYZE log_pending" -c "VACUUM ANALYZE log_leaves" \
    -c "VACUUM ANALYZE log_tiles" -c CHECKPOINT
sql "SELECT pg_database_size(current_database()), pg_total_relation_size('log_tiles'), \
     pg_total_relation_size('log_leaves'), pg_total_relation_size('certificates')" \
    | tr '|' ' ' >"$out/sizes.txt"

echo "== log verify at $target entries"
verify verify --key-file "$vkey" --since "$out/before.checkpoint"
verify verify-config --config "$config" --since "$out/before.checkpoint"

echo "== $windows pairs of windows, log on / off, at $target entries"
for i in $(seq 1 "$windows"); do
    order=(on off)
    ((i % 2 == 0)) && order=(off on) # ABBA: a drift over the run weighs on both alike
    for mode in "${order[@]}"; do
        if [[ $mode == on ]]; then
            restart_pg server "$bin/attestca"
        else
            ATTESTCA_TRANSPARENCY__ENABLED=false restart_pg server "$bin/attestca"
        fi
        wait_ready
        sleep 5
        leaves0=$(sql "SELECT (SELECT count(*) FROM log_leaves) + (SELECT count(*) FROM log_pending)")
        wal0=$(sql "SELECT pg_current_wal_lsn()")
        echo "== window $i, log $mode"
        throughput server "$mode-$i"
        # WAL written over the window (the whole PostgreSQL server's: other databases too).
        sql "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')" >"$out/$mode-$i.wal"
        sleep 2
        leaves1=$(sql "SELECT (SELECT count(*) FROM log_leaves) + (SELECT count(*) FROM log_pending)")
        echo $((leaves1 - leaves0)) >"$out/$mode-$i.logged"
    done
done
stop_server
# A million-entry database is ~3.3 GB: dropped unless KEEP_DATABASE=1 (to look at it after).
if [[ ${KEEP_DATABASE:-0} != 1 ]]; then
    db_name=${db_url##*/}
    psql -q "${db_url%/*}/postgres" -c "DROP DATABASE IF EXISTS \"$db_name\"" \
        && echo "dropped database $db_name (KEEP_DATABASE=1 keeps it)"
fi

python3 - "$out" "$windows" "$entries" "$queued" "$target" "$fill_started" "$fill_done" \
    "$queued_at" "$integrated_at" "$cpu_before" "$cpu_after" <<'PY'
import json, re, statistics, sys, time
from pathlib import Path

out = Path(sys.argv[1])
windows, entries, queued, target = (int(a) for a in sys.argv[2:6])
fill_started, fill_done, queued_at, integrated_at, cpu_before, cpu_after = (
    float(a) for a in sys.argv[6:12])

def verification(name):
    checks = [json.loads(l) for l in (out / f"{name}.jsonl").read_text().splitlines() if l.strip()]
    result = {"exit_status": int((out / f"{name}.rc").read_text()), "checks": checks,
              "server_cpu_seconds": round(float((out / f"{name}.server-cpu").read_text()), 2)}
    timed = out / f"{name}.time"
    if timed.exists():
        t = timed.read_text()
        def field(label):
            m = re.search(re.escape(label) + r": (.*)", t)
            return m.group(1).strip() if m else None
        wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
        seconds = 0.0
        for part in wall.split(":"):
            seconds = seconds * 60 + float(part)
        result.update({
            "wall_seconds": round(seconds, 2),
            "user_seconds": float(field("User time (seconds)")),
            "system_seconds": float(field("System time (seconds)")),
            "max_rss_mib": round(int(field("Maximum resident set size (kbytes)")) / 1024, 1),
        })
    return result

rows = []
for i in range(1, windows + 1):
    for mode in ("on", "off"):
        r = json.loads((out / f"{mode}-{i}.json").read_text())
        p = r.get("processes", {})
        ca = p.get("ca", {}).get("ms_per_operation")
        pg = p.get("postgres", {}).get("ms_per_operation")
        machine = (r.get("machine") or {}).get("busy_ms_per_operation")
        client = r.get("client", {}).get("cpu_seconds", 0) * 1000 / max(r.get("completed") or 1, 1)
        rows.append({
            "window": i, "log": mode, "completed": r.get("completed"), "failed": r.get("failed"),
            "per_second": r.get("per_second"), "ca_ms": ca, "postgres_ms": pg,
            "total_ms": ca + pg, "p99_ms": r.get("latency_ms", {}).get("p99"),
            "machine_busy_share": (r.get("machine") or {}).get("busy_share"),
            # The machine's busy CPU per enrollment not accounted to the CA, PostgreSQL or the
            # load generator: the kernel's I/O work, and whatever else ran.
            "other_ms": machine - ca - pg - client if machine is not None else None,
            "wal_bytes": round(float((out / f"{mode}-{i}.wal").read_text()) / max(r.get("completed") or 1, 1)),
            "logged": int((out / f"{mode}-{i}.logged").read_text()),
        })

def mean(mode, key):
    return statistics.fmean(w[key] for w in rows if w["log"] == mode)

summary = {k: {m: mean(m, k) for m in ("on", "off")}
           for k in ("ca_ms", "postgres_ms", "total_ms", "per_second", "wal_bytes")}
added = {k: (summary[k]["on"] / summary[k]["off"] - 1) * 100 for k in summary}
pairs = []
for i in range(1, windows + 1):
    on, off = (next(w for w in rows if w["window"] == i and w["log"] == m) for m in ("on", "off"))
    pairs.append({k: round((on[k] / off[k] - 1) * 100, 1)
                  for k in ("ca_ms", "postgres_ms", "total_ms", "per_second", "wal_bytes")})
sizes = (out / "sizes.txt").read_text().split()
integration = integrated_at - queued_at
result = {
    "date": time.strftime("%Y-%m-%d", time.gmtime()),
    "revision": (out / "revision").read_text().strip(),
    "entries_filled": entries, "entries_queued": queued, "log_size": target,
    "fill_certificates_seconds": round(fill_done - fill_started, 1),
    "queue_entries_seconds": round(queued_at - fill_done, 1),
    "integration": {"seconds": round(integration, 1),
                    "entries_per_second": round(queued / integration),
                    "ca_cpu_seconds": round(cpu_after - cpu_before, 1)},
    "database_bytes": int(sizes[0]), "log_tiles_bytes": int(sizes[1]),
    "log_leaves_bytes": int(sizes[2]), "certificates_bytes": int(sizes[3]),
    "verify": verification("verify"),
    "verify_config": verification("verify-config"),
    "verify_before": verification("verify-before"),
    "windows": rows,
    "mean": summary, "log_adds_percent": added, "log_adds_percent_by_pair": pairs,
}
(out / "million.json").write_text(json.dumps(result, indent=2))

v, vc = result["verify"], result["verify_config"]
lines = [
    f"issuance log at {target:,} entries ({queued:,} filled), {result['date']}, "
    f"build {result['revision']}",
    f"fill: certificates {result['fill_certificates_seconds']} s, log entries queued in "
    f"{result['queue_entries_seconds']} s; database {int(sizes[0]) / 2**30:.2f} GiB "
    f"(log_tiles {int(sizes[1]) / 2**30:.2f} GiB)",
    f"integration of the backlog: {result['integration']['seconds']} s "
    f"({result['integration']['entries_per_second']:,} entries/s, CA CPU "
    f"{result['integration']['ca_cpu_seconds']} s)",
]
for name, r in (("log verify", v), ("log verify --config", vc)):
    lines.append(f"{name}: exit {r['exit_status']}, {r.get('wall_seconds')} s wall "
                 f"({r.get('user_seconds')} s user, {r.get('system_seconds')} s system), "
                 f"peak RSS {r.get('max_rss_mib')} MiB, CA CPU serving {r['server_cpu_seconds']} s")
for w in rows:
    lines.append(f"window {w['window']} log {w['log']:3}: {w['per_second']:.0f} /s, "
                 f"CA {w['ca_ms']:.3f} ms + PostgreSQL {w['postgres_ms']:.3f} ms = "
                 f"{w['total_ms']:.3f} ms per enrollment (other {w['other_ms'] or 0:.3f} ms), "
                 f"WAL {w['wal_bytes']:,} B, p99 {w['p99_ms']:.0f} ms ({w['logged']} logged)")
for k, label in (("ca_ms", "CA"), ("postgres_ms", "PostgreSQL"), ("total_ms", "total"),
                 ("per_second", "throughput"), ("wal_bytes", "WAL per enrollment")):
    unit = {"per_second": "/s", "wal_bytes": " B"}.get(k, " ms")
    lines.append(f"mean {label}: on {summary[k]['on']:.3f}{unit}, off {summary[k]['off']:.3f}{unit}: "
                 f"{added[k]:+.1f} % (pairs: {', '.join(f'{p[k]:+.1f}' for p in pairs)})")
text = "\n".join(lines) + "\n"
(out / "summary.txt").write_text(text)
print(text, end="")
PY

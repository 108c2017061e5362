#!/usr/bin/env bash
# Throughput and CPU per enrollment with ROWS certificates stored vs an empty database
# (docs/performance.md, "10 million stored certificates"). One server (PostgreSQL + SoftHSM,
# benches/load/pg-softhsm.sh): WINDOWS throughput windows on the empty database, then
# benches/load/stored-certificates.sql fills it with ROWS certificates (each with its event
# and its issue-once claim), VACUUM ANALYZE and a CHECKPOINT, then WINDOWS windows again.
# Writes OUT/stored-rows.json and prints one line per window.
#
#   benches/load/stored-rows.sh [OUT]
#
# With COMPARE=path/to/another/attestca, every window is a pair: this build, then the other,
# restarted on the same database (an interleaved A/B comparison, empty and stored).
#
# Environment: ROWS (default 10000000; the fill takes tens of minutes and ~2.3 GB of disk per
# million rows), WINDOWS (default 3), DURATION (default 15 s), CONCURRENCY (default 32),
# SESSIONS (default 16), and what benches/load/pg-softhsm.sh reads.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/stored-rows-$(date -u +%Y%m%dT%H%M%SZ)}
rows=${ROWS:-10000000}
windows=${WINDOWS:-3}
# shellcheck source=benches/load/lib.sh
source "$root/benches/load/lib.sh"

for tool in curl psql python3 softhsm2-util; do
    command -v "$tool" >/dev/null || { echo "stored-rows.sh: $tool is missing" >&2; exit 2; }
done
(cd "$root" && cargo build --release --bins)

start_pg server
db_url=$(sed -n 's/^database: *//p' "$out/server.server.log")
size() { psql -qAt "$db_url" -c "SELECT pg_database_size(current_database())"; }

builds=(a)
[[ -n ${COMPARE:-} ]] && builds+=(b)
windows_of() { # PHASE
    for i in $(seq 1 "$windows"); do
        for build in "${builds[@]}"; do
            if [[ ${#builds[@]} -gt 1 ]]; then
                if [[ $build == a ]]; then restart_pg server "$bin/attestca"; else restart_pg server "$COMPARE"; fi
            fi
            echo "== $1 database, window $i, build $build"
            throughput server "$1-$i-$build"
            sleep 5
        done
    done
}
windows_of empty
echo "== filling with $rows certificates"
fill_started=$(date +%s)
psql -q "$db_url" -v n="$rows" -f "$root/benches/load/stored-certificates.sql" | tee "$out/fill.txt"
psql -q "$db_url" -c CHECKPOINT
echo "fill: $(($(date +%s) - fill_started)) s, database $(size) bytes" | tee -a "$out/fill.txt"
windows_of stored
stop_server

python3 - "$out" "$windows" "$rows" "${builds[@]}" <<'PY'
import json, sys
from pathlib import Path
out, windows, rows, builds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
result = {"rows": rows, "windows": []}
for kind in ("empty", "stored"):
    for i in range(1, windows + 1):
        for build in builds:
            r = json.loads((out / f"{kind}-{i}-{build}.json").read_text())
            p = r.get("processes", {})
            w = {
                "database": kind, "window": i, "build": build,
                "per_second": r.get("per_second"),
                "ca_ms": p.get("ca", {}).get("ms_per_operation"),
                "postgres_ms": p.get("postgres", {}).get("ms_per_operation"),
            }
            result["windows"].append(w)
            print(f"{kind:6} {i} {build}: {w['per_second']:.0f} /s, CA {w['ca_ms']:.3f} ms, "
                  f"PostgreSQL {w['postgres_ms']:.3f} ms")
(out / "stored-rows.json").write_text(json.dumps(result, indent=2))
PY

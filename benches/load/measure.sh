#!/usr/bin/env bash
# The whole performance measurement in one command (docs/performance.md):
#
#   benches/load/measure.sh [OUT_DIR]        (default target/measure-<date>)
#
# 1. crypto reference rates on this machine (`openssl speed`: P-256 sign and verify, one core)
#    and what an attested enrollment's crypto costs at those rates;
# 2. PostgreSQL + SoftHSM (benches/load/pg-softhsm.sh): a closed-loop throughput window with
#    CPU accounted per process (CA, PostgreSQL, load generator, the whole machine);
# 3. the same with 2 ms of simulated HSM latency per signature (signer.simulated_latency_ms);
# 4. factory mode on a fresh server: 100 stations, 2 s takt, CA-side latency from the CA's
#    histogram;
# 5. OCSP from the pre-signed cache with wrk (one certificate of the factory run, GET,
#    keep-alive);
# 6. the embedded default (`serve --dev`: SQLite and a software key), throughput window.
#
# Writes OUT_DIR/results.json (every report, as the load generator wrote it, plus the crypto
# reference) and OUT_DIR/results.md (the table of docs/performance.md). Needs: a release build
# (made if missing), PostgreSQL (ATTESTCA_BENCH_DATABASE_URL, default the server on
# 127.0.0.1:5432), softhsm2-util, openssl, wrk, curl, psql, python3.
#
# Environment: DURATION (throughput windows, default 15 s), CONCURRENCY (default 32),
# SESSIONS (PKCS#11 sessions for every PostgreSQL run, default 16), and what
# benches/load/pg-softhsm.sh reads.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/measure-$(date -u +%Y%m%dT%H%M%SZ)}
# shellcheck source=benches/load/lib.sh
source "$root/benches/load/lib.sh"

for tool in openssl wrk curl psql python3 softhsm2-util; do
    command -v "$tool" >/dev/null || { echo "measure.sh: $tool is missing" >&2; exit 2; }
done
(cd "$root" && cargo build --release --bins)

echo "== 1. crypto reference (openssl speed, one core)"
openssl speed -seconds 3 ecdsap256 2>/dev/null | tee "$out/openssl-speed.txt" | tail -2

echo "== 2. throughput: PostgreSQL + SoftHSM"
start_pg pg
throughput pg
stop_server

# On a fresh server: after a throughput window, its backlog (deferred OCSP pre-signing,
# PostgreSQL vacuuming the window's rows) lengthens the tail of the next minute.
echo "== 4. factory: 100 stations x 2 s (fresh server)"
start_pg factory
# shellcheck disable=SC2046
"$bin/attestca-rig" load factory $(flags factory) --stations 100 --takt 2 --duration 20 \
    --keygen-ms 50..500 --account "ca=$server_pid" --account postgres=comm:postgres \
    --metrics "http://127.0.0.1:${HTTP_PORT:-28080}/metrics" \
    --json "$out/factory.json" >"$out/factory.txt" 2>&1
tail -6 "$out/factory.txt"

echo "== 5. OCSP from the pre-signed cache (wrk)"
db_url=$(sed -n 's/^database: *//p' "$out/factory.server.log")
psql -qAt "$db_url" -c "SELECT encode(der, 'base64') FROM certificates WHERE profile = 'default' ORDER BY issued_at LIMIT 1" \
    | base64 -d >"$out/leaf.der"
openssl x509 -inform DER -in "$out/leaf.der" -out "$out/leaf.pem"
openssl x509 -in "$out/factory/data/pki/ca-chain.pem" -out "$out/issuer.pem"
openssl ocsp -issuer "$out/issuer.pem" -cert "$out/leaf.pem" -no_nonce -reqout "$out/ocsp-req.der" >/dev/null
ocsp_path=/ocsp/$(base64 -w0 "$out/ocsp-req.der" | python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.stdin.read(), safe=""))')
ocsp_url=http://127.0.0.1:${HTTP_PORT:-28080}$ocsp_path
# The response must be there before it is measured from the cache (a sweep or an idle poll).
for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:${HTTP_PORT:-28080}/metrics" | grep -q 'attestca_ocsp_cached_responses [1-9]' && break
    sleep 0.2
done
curl -sf -o "$out/ocsp-resp.der" "$ocsp_url"
openssl ocsp -respin "$out/ocsp-resp.der" -resp_text -noverify | grep -q "Cert Status: good"
wrk -t2 -c64 -d10s --latency "$ocsp_url" | tee "$out/ocsp-wrk.txt" | grep -E "Requests/sec|99%|Non-2xx" || true
stop_server

echo "== 3. throughput with 2 ms of simulated HSM latency per signature"
start_pg pg-latency ATTESTCA_SIGNER__SIMULATED_LATENCY_MS=2
throughput pg-latency
stop_server

echo "== 6. throughput: serve --dev (SQLite, software key)"
rm -rf "$out/dev"
"$bin/attestca" serve --dev --data-dir "$out/dev" >"$out/dev.server.log" 2>&1 &
server_pid=$!
wait_for http://127.0.0.1:8080/metrics
"$bin/attestca-rig" load throughput --server https://127.0.0.1:8443 \
    --trust "$out/dev/pki/ca-chain.pem" --rig-cert "$out/dev/pki/rig.crt" \
    --rig-key "$out/dev/pki/rig.key" --concurrency "$concurrency" --duration "$duration" \
    --account "ca=$server_pid" --json "$out/dev.json" >"$out/dev.txt" 2>&1
tail -4 "$out/dev.txt"
stop_server

python3 "$root/benches/load/report.py" "$out"
echo "results: $out/results.json $out/results.md"

#!/usr/bin/env bash
# The CA under load as a factory would run it: `attestca serve` on PostgreSQL and a SoftHSM
# token, attestation required (the simulated secure-element vendor), OCSP pre-signing on.
# Prepares a throwaway install in WORK (default target/load-pg-softhsm), starts the release
# server in the foreground, and prints the `attestca-rig load` connection flags.
#
#   benches/load/pg-softhsm.sh [WORK]
#
# Environment:
#   ATTESTCA_BENCH_DATABASE_URL  admin URL of a PostgreSQL server (default
#                                postgres://postgres@127.0.0.1:5432/postgres); a fresh
#                                database attestca_load_<n> is created on it
#   ATTESTCA_BENCH_PKCS11_MODULE SoftHSM module (default /usr/lib/softhsm/libsofthsm2.so)
#   EST_PORT / HTTP_PORT         listeners (default 28443 / 28080)
#   EXTRA_CONFIG                 TOML lines appended to the configuration
#   ATTESTCA_BIN                 the server binary (default target/release/attestca), e.g. an
#                                older build for a before/after comparison
#
# The method and the figures it produced are in docs/performance.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$root/target/load-pg-softhsm}
admin_url=${ATTESTCA_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
module=${ATTESTCA_BENCH_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
est_port=${EST_PORT:-28443}
http_port=${HTTP_PORT:-28080}
bin=${CARGO_TARGET_DIR:-$root/target}/release

if [[ ! -x $bin/attestca || ! -x $bin/attestca-rig ]]; then
    (cd "$root" && cargo build --release --bins)
fi

rm -rf "$work"
mkdir -p "$work/softhsm/tokens" "$work/data"
cat >"$work/softhsm/softhsm2.conf" <<EOF
directories.tokendir = $work/softhsm/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
softhsm2-util --init-token --free --label attestca-load --so-pin 12345678 --pin 123456 >/dev/null

db=attestca_load_$(date +%s)
psql -q "$admin_url" -c "CREATE DATABASE $db" >/dev/null
db_url=${admin_url%/*}/$db

"$bin/attestca-rig" vendor --out "$work/data/vendor" >/dev/null

cat >"$work/attestca.toml" <<EOF
[server]
est_addr = "127.0.0.1:$est_port"
http_addr = "127.0.0.1:$http_port"
data_dir = "$work/data"
log_format = "text"
max_concurrent_enrollments = 256

[tls]
certificate_file = "tls/server.crt"
key_file = "tls/server.key"

[database]
url = "$db_url"
max_connections = 16

[signer]
backend = "pkcs11"
algorithm = "ecdsa-p256"
module = "$module"
token_label = "attestca-load"
key_label = "attestca-issuing-ca"
sessions = 4

[ca]
chain_file = "pki/ca-chain.pem"
name = "issuing-ca"
subject = "CN=Load Test Issuing CA,O=attestca"
root_subject = "CN=Load Test Root CA,O=attestca"
root_key_file = "pki/test-root.key"
root_crl_file = "pki/root-ca.crl"
root_crl_name = "root-ca"

[rigs]
trust_anchor_files = ["pki/rig-ca.crt"]

[operators]
trust_anchor_files = ["pki/operator-ca.crt"]

[revocation]
ocsp_enabled = true

[[attestation.vendors]]
name = "simulated-se"
roots = ["$work/data/vendor/vendor-root.crt"]
formats = ["x509-chain"]
reader = "simulated-se"
hardware_type = "1.3.6.1.4.1.32473.7030.5.99"

[profiles.default]
validity_days = 3650
key_algorithms = ["p256"]
cn_pattern = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
extended_key_usage = ["client-auth"]
crl_urls = ["http://127.0.0.1:$http_port/crl/issuing-ca.crl"]
ocsp_urls = ["http://127.0.0.1:$http_port/ocsp"]
rigs = ["*"]
attestation_required = true
attestation_vendors = ["simulated-se"]
attestation_formats = ["x509-chain"]
${EXTRA_CONFIG:-}
EOF

export ATTESTCA_SIGNER_PIN=123456
"$bin/attestca" init --config "$work/attestca.toml" --test-root \
    --tls-names localhost,127.0.0.1 --rig-cert load-rig --operator-cert load-operator >/dev/null

pki=$work/data/pki
cat <<EOF
database:  $db_url
metrics:   http://127.0.0.1:$http_port/metrics
flags:     --server https://127.0.0.1:$est_port --trust $pki/ca-chain.pem --rig-cert $pki/rig.crt --rig-key $pki/rig.key --vendor $work/data/vendor
EOF
echo "--server https://127.0.0.1:$est_port --trust $pki/ca-chain.pem --rig-cert $pki/rig.crt --rig-key $pki/rig.key --vendor $work/data/vendor" >"$work/flags"
exec "${ATTESTCA_BIN:-$bin/attestca}" serve --config "$work/attestca.toml"

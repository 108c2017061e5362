#!/bin/sh
# One-shot initialiser of the compose deployment (the softhsm-init service of docker-compose.yml,
# installed in the image as /usr/local/lib/attestca/init-ca). Safe to run on every
# `docker compose up`: it only creates what is missing.
#
#  1. The SoftHSM token (label signer.token_label, "attestca"), if no token has that label:
#     softhsm2-util --init-token --free, with the user PIN from $ATTESTCA_SIGNER__PIN_FILE and
#     the security-officer PIN from $SOFTHSM_SO_PIN_FILE.
#  2. The CA, if ca.chain_file does not exist, depending on ATTESTCA_INIT_MODE:
#     test-root     (default, for evaluation) `attestca init --test-root`: a self-signed root
#                   whose key is a software file in the data volume, the issuing key generated
#                   inside the token, a TLS server certificate for $ATTESTCA_INIT_TLS_NAMES, a
#                   rig CA + rig certificate (rig-line-1) and an operator CA + operator
#                   certificate (operator-1). Not a production PKI: the root key is online.
#     offline-root  (production) only the token; the CA is made by hand with
#                   `attestca init --csr-out` and `attestca import-ca` (docs/operations.md).
#                   Until then this exits 1, so that the attestca service does not start.
#
# The paths default to those of the image; tests/shell/deploy_files.sh points them elsewhere.
set -eu

config="${ATTESTCA_CONFIG:-/etc/attestca/attestca.toml}"
attestca="${ATTESTCA:-attestca}"
softhsm_util="${SOFTHSM2_UTIL:-softhsm2-util}"
mode="${ATTESTCA_INIT_MODE:-test-root}"
label="${ATTESTCA_SIGNER__TOKEN_LABEL:-attestca}"
pin_file="${ATTESTCA_SIGNER__PIN_FILE:?set ATTESTCA_SIGNER__PIN_FILE to the file holding the token user PIN}"
so_pin_file="${SOFTHSM_SO_PIN_FILE:-/run/secrets/softhsm-so-pin}"
data_dir="${ATTESTCA_SERVER__DATA_DIR:-/var/lib/attestca}"
chain="${ATTESTCA_CA__CHAIN_FILE:-pki/ca-chain.pem}"      # as in deploy/attestca.example.toml
case "$chain" in /*) ;; *) chain="$data_dir/$chain" ;; esac
tls_names="${ATTESTCA_INIT_TLS_NAMES:-localhost,127.0.0.1,attestca}"

log() { printf 'init-ca: %s\n' "$*"; }
die() { printf 'init-ca: ERROR: %s\n' "$*" >&2; exit 1; }

case "$mode" in
    test-root | offline-root) ;;
    *) die "ATTESTCA_INIT_MODE must be test-root or offline-root, not '$mode'" ;;
esac

# Is there a token labelled $label? (softhsm2-util pads labels with blanks.)
token_exists() {
    "$softhsm_util" --show-slots | awk -v want="$label" '
        $1 == "Label:" { sub(/^[ \t]*Label:[ \t]*/, ""); sub(/[ \t]+$/, ""); if ($0 == want) found = 1 }
        END { exit !found }'
}

# ---- 1. the token
if token_exists; then
    log "token '$label' exists"
    new_token=0
else
    [ -r "$pin_file" ] || die "cannot read the user PIN file $pin_file"
    [ -r "$so_pin_file" ] || die "cannot read the SO PIN file $so_pin_file"
    # softhsm2-util takes the PINs only as arguments; this one-shot container is their only
    # reader. attestca itself reads the PIN from the file.
    "$softhsm_util" --init-token --free --label "$label" \
        --pin "$(cat "$pin_file")" --so-pin "$(cat "$so_pin_file")" >/dev/null
    token_exists || die "softhsm2-util did not create token '$label'"
    log "created token '$label'"
    new_token=1
fi

# ---- 2. the CA
if [ -e "$chain" ]; then
    log "CA exists ($chain); nothing to do"
    exit 0
fi
if [ "$mode" = offline-root ]; then
    die "no CA yet ($chain). Create it with the offline root (docs/operations.md, 'The production CA'):
  docker compose run --rm --entrypoint attestca softhsm-init init --config $config --csr-out $data_dir/issuing-ca.csr
  ... sign issuing-ca.csr with the offline root, copy issuing-ca.crt and root-ca.pem into the data volume ...
  docker compose run --rm --entrypoint attestca softhsm-init import-ca --config $config --cert $data_dir/issuing-ca.crt --chain $data_dir/root-ca.pem"
fi
if [ "$new_token" -eq 0 ]; then
    # A token without a CA chain: an earlier run stopped between generating the key and
    # writing the chain. Generating a second key under the same label would make the CA key
    # ambiguous, so stop and let a human decide.
    die "token '$label' exists but $chain does not: an earlier initialisation stopped half-way.
For an evaluation install, start from scratch: docker compose down --volumes && docker compose up"
fi
log "creating a TEST CA (self-signed root with a software key; issuing key in token '$label')"
"$attestca" init --config "$config" --test-root --tls-names "$tls_names" \
    --rig-cert rig-line-1 --operator-cert operator-1
log "done: chain in $chain; rig and operator credentials in $(dirname "$chain")"

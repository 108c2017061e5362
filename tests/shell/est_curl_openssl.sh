#!/usr/bin/env bash
# EST end-to-end test of the real server binary, driven only by tools nobody on
# this project wrote: curl, openssl and coreutils (plus pkilint). It checks the
# wire format of RFC 7030/8951 (content types, base64, status codes), that what
# is issued verifies with OpenSSL, the rig binary's contract, and that a restart
# reuses the dev PKI.
#
# Needs: ATTESTCA_BIN (the `attestca` server) and ATTESTCA_RIG_BIN (`attestca-rig`);
# optional: ATTESTCA_TEST_PKILINT (lint_pkix_cert), ATTESTCA_TEST_REQUIRE_ALL=1
# (then a missing pkilint fails instead of being skipped), ATTESTCA_KEEP_TMP=1
# (keep the temp dir, with the server log, for a post-mortem).
# Output: one `ok - STEP` / `not ok - STEP` line per check, evidence under failures.
set -euo pipefail

: "${ATTESTCA_BIN:?set ATTESTCA_BIN to the attestca server binary}"
: "${ATTESTCA_RIG_BIN:?set ATTESTCA_RIG_BIN to the attestca-rig binary}"
for tool in curl openssl base64 awk cmp timeout; do
    command -v "$tool" >/dev/null 2>&1 || { echo "Bail out! $tool not found"; exit 1; }
done

W="$(mktemp -d "${TMPDIR:-/tmp}/attestca-est.XXXXXX")"
DATA="$W/data"          # the server's --data-dir
PKI="$DATA/pki"
MTLS=(--cert "$PKI/rig.crt" --key "$PKI/rig.key")   # curl's TLS client credentials
LOG="$W/server.log"
SERVER_PID=""
EST_PORT="" HTTP_PORT="" EST=""
PASSED=0 FAILED=0 SKIPPED=0
FAILED_STEPS=()
mkdir -p "$W/steps"

# ---------------------------------------------------------------- server
# port_in_use, free_port, log_tail, stop_server, start_dev_server, install_cleanup
source "$(dirname "${BASH_SOURCE[0]}")/lib/dev_server.sh"

install_cleanup

# start_server: on fresh ports, same data dir; waits up to 60 s for /healthz.
start_server() {
    start_dev_server "$DATA" || return 1
    EST="https://127.0.0.1:$EST_PORT/.well-known/est"
    local f
    for f in ca-chain.pem rig.crt rig.key rig-basic.txt; do
        [[ -s "$PKI/$f" ]] || { echo "$PKI/$f missing after start-up"; ls -lR "$DATA"; return 1; }
    done
}

# ---------------------------------------------------------------- steps
# run_step, fail, skip
source "$(dirname "${BASH_SOURCE[0]}")/lib/steps.sh"

# ---------------------------------------------------------------- HTTP helpers
# req NAME CURL-ARGS...: one request; $W/NAME.h gets the headers, $W/NAME.b the
# body, $W/NAME.err curl's complaints; STATUS and CURL_RC are set.
req() {
    local name=$1
    shift
    CURL_RC=0
    STATUS="$(curl -sS --http1.1 --max-time 30 --cacert "$PKI/ca-chain.pem" \
        -D "$W/$name.h" -o "$W/$name.b" -w '%{http_code}' "$@" 2>"$W/$name.err")" || CURL_RC=$?
}

# header NAME FILE: values of header NAME (any case) in the last response of
# FILE, one per line; earlier blocks such as "100 Continue" are ignored.
header() {
    awk -v want="$1" '
        { sub(/\r$/, "") }
        /^HTTP\// { n = 0; next }
        {
            i = index($0, ":")
            if (i > 0 && tolower(substr($0, 1, i - 1)) == tolower(want)) {
                v = substr($0, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
                vals[++n] = v
            }
        }
        END { for (j = 1; j <= n; j++) print vals[j] }' "$2"
}

# Content-Type lower-cased without blanks or quotes, for comparisons.
content_type() { header Content-Type "$W/$1.h" | tail -n 1 | tr -d ' \t"' | tr '[:upper:]' '[:lower:]'; }

show_response() {
    echo "status: $STATUS (curl exit $CURL_RC)"
    if [[ -s "$W/$1.err" ]]; then sed 's/^/curl: /' "$W/$1.err"; fi
    echo "headers:"; tr -d '\r' <"$W/$1.h" 2>/dev/null | sed 's/^/  /'
    echo "body (first 300 bytes):"; head -c 300 "$W/$1.b" 2>/dev/null | cat -v; echo
}

expect_status() { # expect_status CODE NAME
    [[ "$STATUS" == "$1" ]] || { echo "expected HTTP $1"; show_response "$2"; exit 1; }
}

expect_ctype_prefix() { # expect_ctype_prefix PREFIX NAME
    local ct
    ct="$(content_type "$2")"
    [[ "$ct" == "$1"* ]] || { echo "expected Content-Type $1..., got '$ct'"; show_response "$2"; exit 1; }
}

# An error must be explained to a human: text/plain and a non-empty body.
expect_refusal() { # expect_refusal CODE NAME
    expect_status "$1" "$2"
    expect_ctype_prefix text/plain "$2"
    [[ -s "$W/$2.b" ]] || { echo "empty error body"; show_response "$2"; exit 1; }
    echo "body: $(head -c 200 "$W/$2.b")"
}

count_certs() { grep -c -- '-----BEGIN CERTIFICATE-----' "$1" || true; }

# fingerprints PEM: sorted SHA-256 fingerprints of every certificate in PEM.
fingerprints() {
    local line cert=""
    while IFS= read -r line; do
        case "$line" in
            *"-----BEGIN CERTIFICATE-----"*) cert="$line"$'\n' ;;
            *"-----END CERTIFICATE-----"*)
                printf '%s%s\n' "$cert" "$line" | openssl x509 -noout -fingerprint -sha256
                cert="" ;;
            *) if [[ -n "$cert" ]]; then cert+="$line"$'\n'; fi ;;
        esac
    done <"$1" | sort
}

expect_verifies() { # expect_verifies CERT.pem
    local out
    out="$(openssl verify -CAfile "$PKI/ca-chain.pem" "$1" 2>&1)" || fail "openssl verify failed: $out"
    [[ "$out" == *": OK" ]] || fail "openssl verify: $out"
    echo "$out"
}

expect_same_pubkey() { # expect_same_pubkey CERT.pem KEY.pem
    local a b
    a="$(openssl x509 -in "$1" -noout -pubkey)"
    b="$(openssl pkey -in "$2" -pubout)"
    [[ "$a" == "$b" ]] || fail "public key of $1 differs from that of $2"
}

# new_csr NAME CN: P-256 key NAME.key and DER CSR NAME.der, made by OpenSSL.
new_csr() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$W/$1.key" -outform DER -out "$W/$1.der" 2>/dev/null
}

basic_user() { tr -d '\r\n' <"$PKI/rig-basic.txt"; }

# The dev server's default profile requires key attestation, which a CSR made by
# openssl cannot carry; its "lab" profile takes any CSR. Plain-CSR steps use lab.
LAB="lab"

# enroll NAME CSR.b64 CREDENTIAL-ARGS...: POST a plain CSR to the lab profile.
enroll() {
    local name=$1 body=$2
    shift 2
    req "$name" -H 'Content-Type: application/pkcs10' -H 'Expect:' \
        --data-binary "@$body" "$@" "$EST/$LAB/simpleenroll"
}

# The attested flow: attestca-rig's simulated secure element makes the key and the
# evidence (bound to a nonce it fetched as this rig); curl posts the CSR.
t_attested_enroll() {
    local out="$W/attested"
    mkdir -p "$out"
    timeout 120 "$ATTESTCA_RIG_BIN" csr --vendor "$DATA/vendor" \
        --server "https://127.0.0.1:$EST_PORT" --trust "$PKI/ca-chain.pem" \
        --rig-cert "$PKI/rig.crt" --rig-key "$PKI/rig.key" --out "$out" --cn attested-1
    base64 "$out/device.csr" >"$out/csr.b64"
    req attested -H 'Content-Type: application/pkcs10' -H 'Expect:' \
        --data-binary "@$out/csr.b64" "${MTLS[@]}" "$EST/simpleenroll"
    unpack_enrollment attested "$W/attested.pem"
    expect_verifies "$W/attested.pem"
    openssl x509 -in "$W/attested.pem" -noout -ext subjectAltName | grep -q 'othername: 1.3.6.1.5.5.7.8.4' \
        || fail "no hardwareModuleName in the SAN: $(openssl x509 -in "$W/attested.pem" -noout -ext subjectAltName)"
    # The same file again from the same rig: a retry, the same certificate.
    req attested-again -H 'Content-Type: application/pkcs10' -H 'Expect:' \
        --data-binary "@$out/csr.b64" "${MTLS[@]}" "$EST/simpleenroll"
    unpack_enrollment attested-again "$W/attested-again.pem"
    cmp <(openssl x509 -in "$W/attested.pem" -outform DER) <(openssl x509 -in "$W/attested-again.pem" -outform DER) \
        || fail "the retry returned another certificate"
    # The same file from the other rig account: the nonce was not issued to it.
    req attested-other -H 'Content-Type: application/pkcs10' -H 'Expect:' \
        --data-binary "@$out/csr.b64" --user "$(basic_user)" "$EST/simpleenroll"
    expect_status 403 attested-other
    grep -q '^attestation.nonce_foreign' "$W/attested-other.b" || fail "reason: $(cat "$W/attested-other.b")"
    if [[ -n "${ATTESTCA_TEST_PKILINT:-}" ]]; then
        "$ATTESTCA_TEST_PKILINT" lint -s WARNING "$W/attested.pem" || fail "pkilint findings on the attested certificate"
    fi
}

# Renewal over mutual TLS with curl: the device presents its certificate and key, and posts
# a CSR of the same subject (RFC 7030 4.2.2).
t_reenroll_curl() {
    [[ -s "$W/device.pem" ]] || fail "no device certificate from the mTLS enrollment step"
    openssl req -new -key "$W/dev1.key" -subj /CN=curl-device-1 -outform DER -out "$W/renew.der" 2>/dev/null
    base64 "$W/renew.der" >"$W/renew.b64"
    req renew -H 'Content-Type: application/pkcs10' -H 'Expect:' --data-binary "@$W/renew.b64" \
        --cert "$W/device.pem" --key "$W/dev1.key" "$EST/$LAB/simplereenroll"
    unpack_enrollment renew "$W/renewed.pem"
    expect_verifies "$W/renewed.pem"
    [[ "$(openssl x509 -in "$W/renewed.pem" -noout -serial)" != "$(openssl x509 -in "$W/device.pem" -noout -serial)" ]] \
        || fail "the renewal returned the old certificate"
    # Without the device certificate there is nobody to renew.
    req renew-anon -H 'Content-Type: application/pkcs10' -H 'Expect:' --data-binary "@$W/renew.b64" \
        "$EST/$LAB/simplereenroll"
    expect_status 401 renew-anon
    # Another subject is refused.
    openssl req -new -key "$W/dev1.key" -subj /CN=someone-else -outform DER -out "$W/renew2.der" 2>/dev/null
    base64 "$W/renew2.der" >"$W/renew2.b64"
    req renew-other -H 'Content-Type: application/pkcs10' -H 'Expect:' --data-binary "@$W/renew2.b64" \
        --cert "$W/device.pem" --key "$W/dev1.key" "$EST/$LAB/simplereenroll"
    expect_status 400 renew-other
    grep -q '^reenroll.subject_changed' "$W/renew-other.b" || fail "reason: $(cat "$W/renew-other.b")"
}

# The CRL at the distribution point named in issued certificates: openssl accepts a good leaf
# against it; after `attestca revoke`, a new CRL (higher number) lists the serial within
# seconds and openssl refuses the leaf (error 23); pkilint finds nothing in either CRL.
t_crl() {
    local cdp serial before after i
    [[ -s "$W/device2.pem" ]] || fail "no device certificate from the Basic enrollment step"
    cdp="$(openssl x509 -in "$W/device2.pem" -noout -ext crlDistributionPoints | awk '/URI:/ {sub(/.*URI:/, ""); print; exit}')"
    [[ "$cdp" == "http://127.0.0.1:$HTTP_PORT/crl/"*.crl ]] || fail "distribution point: $cdp"
    curl -sS -D "$W/crl1.h" -o "$W/crl1.der" "$cdp"
    grep -qi '^content-type: application/pkix-crl' "$W/crl1.h" || fail "content type: $(cat "$W/crl1.h")"
    grep -qi '^etag:' "$W/crl1.h" && grep -qi '^cache-control: max-age=' "$W/crl1.h" || fail "caching headers missing"
    openssl verify -CAfile "$PKI/ca-chain.pem" -crl_check -CRLfile "$W/crl1.der" "$W/device2.pem" >/dev/null \
        || fail "a good certificate failed -crl_check"
    # The whole chain: the root's CRL (covering the issuing CA) is served beside it.
    curl -sS -f -o "$W/root.crl" "http://127.0.0.1:$HTTP_PORT/crl/root-ca.crl" || fail "no root CRL"
    openssl verify -CAfile "$PKI/ca-chain.pem" -crl_check_all -CRLfile "$W/crl1.der" -CRLfile "$W/root.crl" \
        "$W/device2.pem" >/dev/null || fail "a good certificate failed -crl_check_all"
    if [[ -n "${ATTESTCA_TEST_PKILINT:-}" ]]; then
        "$(dirname "$ATTESTCA_TEST_PKILINT")/lint_crl" lint -t CRL -p PKIX -s WARNING "$W/crl1.der" || fail "pkilint: CRL findings"
        "$(dirname "$ATTESTCA_TEST_PKILINT")/lint_crl" lint -t CRL -p PKIX -s WARNING "$W/root.crl" || fail "pkilint: root CRL findings"
    fi
    before="$(openssl crl -inform DER -in "$W/crl1.der" -noout -crlnumber | cut -d= -f2)"
    serial="$(openssl x509 -in "$W/device2.pem" -noout -serial | cut -d= -f2)"
    "$ATTESTCA_BIN" revoke --dev --data-dir "$DATA" --serial "$serial" --reason keyCompromise
    for i in $(seq 1 20); do
        curl -sS -o "$W/crl2.der" "$cdp"
        after="$(openssl crl -inform DER -in "$W/crl2.der" -noout -crlnumber | cut -d= -f2)"
        [[ "$after" != "$before" ]] && break
        sleep 0.5
    done
    ((after > before)) || fail "the CRL number did not grow after a revocation ($before -> $after)"
    openssl crl -inform DER -in "$W/crl2.der" -noout -text | grep -qi "Serial Number: $serial" || fail "serial not listed"
    local rc=0 out
    out="$(openssl verify -CAfile "$PKI/ca-chain.pem" -crl_check -CRLfile "$W/crl2.der" "$W/device2.pem" 2>&1)" || rc=$?
    ((rc != 0)) && [[ "$out" == *"error 23"* ]] || fail "a revoked certificate passed -crl_check: $out"
    rc=0
    out="$(openssl verify -CAfile "$PKI/ca-chain.pem" -crl_check_all -CRLfile "$W/crl2.der" -CRLfile "$W/root.crl" \
        "$W/device2.pem" 2>&1)" || rc=$?
    ((rc != 0)) && [[ "$out" == *"error 23"* ]] || fail "a revoked certificate passed -crl_check_all: $out"
    if [[ -n "${ATTESTCA_TEST_PKILINT:-}" ]]; then
        "$(dirname "$ATTESTCA_TEST_PKILINT")/lint_crl" lint -t CRL -p PKIX -s WARNING "$W/crl2.der" || fail "pkilint: CRL findings"
    fi
}

# The operator API with curl: the dev operator certificate reads and revokes (JSON); the rig
# certificate is refused with a JSON error.
t_operator_api() {
    local serial
    [[ -s "$W/device.pem" ]] || fail "no device certificate from the mTLS enrollment step"
    serial="$(openssl x509 -in "$W/device.pem" -noout -serial | cut -d= -f2)"
    local OPER=(--cert "$PKI/operator.crt" --key "$PKI/operator.key")
    req op-get "${OPER[@]}" "https://127.0.0.1:$EST_PORT/api/v1/certificates/$serial"
    expect_status 200 op-get
    grep -qi '^content-type: application/json' "$W/op-get.h" || fail "not JSON: $(cat "$W/op-get.h")"
    grep -q '"status":"active"' "$W/op-get.b" || fail "body: $(cat "$W/op-get.b")"
    req op-rig "${MTLS[@]}" "https://127.0.0.1:$EST_PORT/api/v1/certificates/$serial"
    expect_status 403 op-rig
    grep -q '"code":"auth.forbidden"' "$W/op-rig.b" || fail "body: $(cat "$W/op-rig.b")"
    req op-revoke "${OPER[@]}" -H 'Content-Type: application/json' --data '{"reason":"superseded"}' \
        "https://127.0.0.1:$EST_PORT/api/v1/certificates/$serial/revoke"
    expect_status 200 op-revoke
    grep -q '"status":"revoked"' "$W/op-revoke.b" || fail "body: $(cat "$W/op-revoke.b")"
    req op-audit "${OPER[@]}" "https://127.0.0.1:$EST_PORT/api/v1/audit-events?limit=1"
    grep -q '"operator":"cert:operator-dev-01"' "$W/op-audit.b" || fail "audit: $(cat "$W/op-audit.b")"
}

t_default_requires_attestation() {
    new_csr plain-default plain-default-1
    base64 "$W/plain-default.der" >"$W/plain-default.b64"
    req plain-default -H 'Content-Type: application/pkcs10' -H 'Expect:' \
        --data-binary "@$W/plain-default.b64" "${MTLS[@]}" "$EST/simpleenroll"
    expect_status 403 plain-default
    grep -q '^attestation.required' "$W/plain-default.b" || fail "no attestation.required reason: $(cat "$W/plain-default.b")"
}

# unpack_enrollment NAME OUT.pem: the one certificate of an enrollment response.
unpack_enrollment() {
    local ct n
    expect_status 200 "$1"
    ct="$(content_type "$1")"
    [[ "$ct" == "application/pkcs7-mime;smime-type=certs-only" ]] \
        || { echo "expected Content-Type application/pkcs7-mime; smime-type=certs-only, got '$ct'"; show_response "$1"; exit 1; }
    base64 -d <"$W/$1.b" | openssl pkcs7 -inform DER -print_certs -out "$W/$1.certs.pem"
    n="$(count_certs "$W/$1.certs.pem")"
    [[ "$n" == 1 ]] || fail "expected exactly 1 certificate in the response, got $n"
    # Plain PEM without print_certs' subject=/issuer= lines, which pkilint rejects
    # ("Substrate is not DER-encoded").
    openssl x509 -in "$W/$1.certs.pem" -out "$2"
}

# ---------------------------------------------------------------- the checks
t_cacerts() {
    local len actual n cte
    req cacerts "$EST/cacerts"        # no client credentials at all
    expect_status 200 cacerts
    expect_ctype_prefix application/pkcs7-mime cacerts
    # (Captured before grep -q: an early grep exit must not fail the pipe.)
    cte="$(header Content-Transfer-Encoding "$W/cacerts.h")"
    grep -qix base64 <<<"$cte" \
        || { echo "no Content-Transfer-Encoding: base64"; show_response cacerts; exit 1; }
    len="$(header Content-Length "$W/cacerts.h" | tail -n 1)"
    [[ -n "$len" ]] || { echo "no Content-Length"; show_response cacerts; exit 1; }
    actual="$(wc -c <"$W/cacerts.b")"
    [[ "$len" == "$((actual))" ]] || fail "Content-Length $len but $((actual)) body bytes"
    base64 -d <"$W/cacerts.b" | openssl pkcs7 -inform DER -print_certs -out "$W/cacerts.pem"
    n="$(count_certs "$W/cacerts.pem")"
    [[ "$n" == 2 ]] || { cat "$W/cacerts.pem"; fail "expected 2 certificates, got $n"; }
}

t_cacerts_matches_chain() {
    [[ -s "$W/cacerts.pem" ]] || fail "no cacerts.pem from the cacerts step"
    [[ "$(fingerprints "$W/cacerts.pem")" == "$(fingerprints "$PKI/ca-chain.pem")" ]] || {
        echo "cacerts:"; fingerprints "$W/cacerts.pem"
        echo "ca-chain.pem:"; fingerprints "$PKI/ca-chain.pem"
        exit 1
    }
}

t_csrattrs() {
    # With credentials: RFC 7030 lets a server ask for authentication here.
    req csrattrs "${MTLS[@]}" "$EST/csrattrs"
    expect_status 200 csrattrs
    expect_ctype_prefix application/csrattrs csrattrs
    base64 -d <"$W/csrattrs.b" >"$W/csrattrs.der"
    openssl asn1parse -inform DER -in "$W/csrattrs.der"
}

t_enroll_mtls() {
    new_csr dev1 curl-device-1
    base64 "$W/dev1.der" >"$W/dev1.b64"                 # wrapped at 76 columns
    enroll enroll1 "$W/dev1.b64" "${MTLS[@]}"
    unpack_enrollment enroll1 "$W/device.pem"
    expect_verifies "$W/device.pem"
    expect_same_pubkey "$W/device.pem" "$W/dev1.key"
    openssl x509 -in "$W/device.pem" -noout -serial -subject
}

t_enroll_retry() {
    [[ -s "$W/device.pem" ]] || fail "no device.pem from the first enrollment"
    enroll enroll1again "$W/dev1.b64" "${MTLS[@]}"
    unpack_enrollment enroll1again "$W/device-again.pem"
    local s1 s2 f1 f2
    s1="$(openssl x509 -in "$W/device.pem" -noout -serial)"
    s2="$(openssl x509 -in "$W/device-again.pem" -noout -serial)"
    [[ "$s1" == "$s2" ]] || fail "a retry got a new certificate: $s1 then $s2"
    f1="$(openssl x509 -in "$W/device.pem" -noout -fingerprint -sha256)"
    f2="$(openssl x509 -in "$W/device-again.pem" -noout -fingerprint -sha256)"
    [[ "$f1" == "$f2" ]] || fail "same serial ($s1) but different certificates: $f1 vs $f2"
    echo "$s1"
}

t_enroll_basic() {
    new_csr dev2 curl-device-2
    base64 -w0 "$W/dev2.der" >"$W/dev2.b64"             # one line, no newline
    enroll enroll2 "$W/dev2.b64" --user "$(basic_user)"
    unpack_enrollment enroll2 "$W/device2.pem"
    expect_verifies "$W/device2.pem"
    expect_same_pubkey "$W/device2.pem" "$W/dev2.key"
}

t_pkilint() {
    if [[ -z "${ATTESTCA_TEST_PKILINT:-}" ]]; then
        [[ -z "${ATTESTCA_TEST_REQUIRE_ALL:-}" ]] || fail "ATTESTCA_TEST_PKILINT unset while ATTESTCA_TEST_REQUIRE_ALL is set"
        skip "pkilint not available (set ATTESTCA_TEST_PKILINT)"
    fi
    local cert
    # The issuing CA and the root as well as the device certificates (split the chain file).
    awk -v dir="$W" '/BEGIN CERTIFICATE/{n++} {print > (dir "/chain-part" n ".pem")}' "$PKI/ca-chain.pem"
    for cert in "$W/device.pem" "$W/device2.pem" "$W/chain-part1.pem" "$W/chain-part2.pem"; do
        [[ -s "$cert" ]] || fail "$cert missing (enrollment failed)"
        echo "lint $cert"
        "$ATTESTCA_TEST_PKILINT" lint -s WARNING "$cert" || fail "pkilint reported findings for $cert (exit $?)"
    done
}

t_refuse_anonymous() {
    local challenge
    enroll anon "$W/dev1.b64"
    expect_refusal 401 anon
    challenge="$(header WWW-Authenticate "$W/anon.h")"
    grep -Eqi '^basic[[:space:]]+realm=' <<<"$challenge" \
        || { echo "no WWW-Authenticate: Basic realm=... challenge"; show_response anon; exit 1; }
}

t_refuse_wrong_password() {
    local user
    user="$(basic_user)"
    enroll badpw "$W/dev1.b64" --user "${user%%:*}:not-${user#*:}"
    expect_refusal 401 badpw
}

t_refuse_content_type() {
    req ctype -H 'Content-Type: text/plain' -H 'Expect:' --data-binary "@$W/dev1.b64" "${MTLS[@]}" "$EST/simpleenroll"
    expect_refusal 415 ctype
}

t_refuse_not_base64() {
    printf 'not base64 at all!!' >"$W/junk.txt"
    enroll junk "$W/junk.txt" "${MTLS[@]}"
    expect_refusal 400 junk
}

t_refuse_random_der() {
    head -c 300 /dev/urandom | base64 >"$W/random.b64"
    enroll random "$W/random.b64" "${MTLS[@]}"
    expect_refusal 400 random
}

t_refuse_huge() {
    head -c 1048576 /dev/zero | tr '\0' 'A' >"$W/huge.b64"     # valid base64, 1 MiB
    # Let the server refuse before the body is sent (Expect: 100-continue), so a
    # server that closes early cannot turn its 413 into a connection reset.
    req huge -H 'Content-Type: application/pkcs10' -H 'Expect: 100-continue' \
        --data-binary "@$W/huge.b64" "${MTLS[@]}" "$EST/simpleenroll"
    expect_refusal 413 huge
}

t_refuse_unknown_label() {
    req nolabel "https://127.0.0.1:$EST_PORT/.well-known/est/no-such-label/cacerts"
    expect_refusal 404 nolabel
}


t_rig_csr() {
    local out="$W/rig-csr" first text subject
    mkdir -p "$out"
    timeout 60 "$ATTESTCA_RIG_BIN" csr --out "$out" --cn rig-csr-1
    [[ -s "$out/device.key" && -s "$out/device.csr" ]] || { ls -l "$out"; fail "device.key or device.csr missing"; }
    openssl req -inform DER -in "$out/device.csr" -verify -noout
    first="$(head -n 1 "$out/device.key")"
    [[ "$first" == "-----BEGIN PRIVATE KEY-----" ]] || fail "device.key is not PEM PKCS#8: $first"
    text="$(openssl pkey -in "$out/device.key" -noout -text)"
    grep -Eq 'NIST CURVE: P-256|prime256v1' <<<"$text" || fail "device.key is not a P-256 key: $text"
    [[ "$(openssl req -inform DER -in "$out/device.csr" -noout -pubkey)" == "$(openssl pkey -in "$out/device.key" -pubout)" ]] \
        || fail "the CSR's public key is not device.key's"
    subject="$(openssl req -inform DER -in "$out/device.csr" -noout -subject)"
    [[ "$subject" == *rig-csr-1* ]] || fail "CN rig-csr-1 not in the CSR subject: $subject"
}

t_rig_enroll() {
    local out="$W/rig-enroll"
    mkdir -p "$out"
    timeout 120 "$ATTESTCA_RIG_BIN" enroll \
        --server "https://127.0.0.1:$EST_PORT" --trust "$PKI/ca-chain.pem" \
        --rig-cert "$PKI/rig.crt" --rig-key "$PKI/rig.key" --out "$out" --cn rig-device-1
    [[ -s "$out/device.crt" && -s "$out/device.key" ]] || { ls -l "$out"; fail "device.crt or device.key missing"; }
    expect_verifies "$out/device.crt"
    expect_same_pubkey "$out/device.crt" "$out/device.key"
}

t_rig_enroll_basic() {
    local out="$W/rig-enroll-basic"
    mkdir -p "$out"
    timeout 120 "$ATTESTCA_RIG_BIN" enroll \
        --server "https://127.0.0.1:$EST_PORT" --trust "$PKI/ca-chain.pem" \
        --basic-file "$PKI/rig-basic.txt" --out "$out" --cn rig-device-2
    expect_verifies "$out/device.crt"
}

# Both TLS versions the brief asks for negotiate, each with the rig's client certificate.
t_tls_versions() {
    local version flags code
    for version in 1.2 1.3; do
        flags=(--tlsv"$version" --tls-max "$version")
        code="$(curl -sS --http1.1 --max-time 30 "${flags[@]}" --cacert "$PKI/ca-chain.pem" \
            --cert "$PKI/rig.crt" --key "$PKI/rig.key" -o /dev/null -w '%{http_code}' \
            "https://127.0.0.1:$EST_PORT/.well-known/est/cacerts")"
        [[ "$code" == 200 ]] || fail "TLS $version: HTTP $code"
        echo "TLS $version: HTTP $code"
    done
    if openssl s_client -connect "127.0.0.1:$EST_PORT" -tls1_1 </dev/null >/dev/null 2>&1; then
        fail "TLS 1.1 was accepted"
    fi
}

# Interface contract: attestca-rig reenroll renews with the device's own certificate, and
# rekeys with --rekey (attested by the device's simulated secure element with --vendor).
t_rig_reenroll() {
    local dev="$W/rig-enroll" new="$W/rig-renewed" rekeyed="$W/rig-rekeyed"
    [[ -s "$dev/device.crt" ]] || fail "no device from the rig enroll step"
    timeout 120 "$ATTESTCA_RIG_BIN" reenroll --server "https://127.0.0.1:$EST_PORT" \
        --trust "$PKI/ca-chain.pem" --cert "$dev/device.crt" --key "$dev/device.key" --out "$new"
    expect_verifies "$new/device.crt"
    [[ ! -e "$new/device.key" ]] || fail "a renewal without --rekey wrote a new key"
    timeout 120 "$ATTESTCA_RIG_BIN" reenroll --server "https://127.0.0.1:$EST_PORT" \
        --trust "$PKI/ca-chain.pem" --cert "$new/device.crt" --key "$dev/device.key" --out "$rekeyed" \
        --rekey --vendor "$DATA/vendor"
    expect_verifies "$rekeyed/device.crt"
    expect_same_pubkey "$rekeyed/device.crt" "$rekeyed/device.key"
    openssl x509 -in "$rekeyed/device.crt" -noout -ext subjectAltName | grep -q 'othername: 1.3.6.1.5.5.7.8.4' \
        || fail "the rekeyed certificate lost the hardwareModuleName"
    # The dev default profile requires attestation for a new key.
    if timeout 120 "$ATTESTCA_RIG_BIN" reenroll --server "https://127.0.0.1:$EST_PORT" \
        --trust "$PKI/ca-chain.pem" --cert "$rekeyed/device.crt" --key "$rekeyed/device.key" \
        --out "$W/rig-rekey-plain" --rekey 2>"$W/rekey-plain.err"; then
        fail "a rekey without attestation succeeded"
    fi
    grep -q 'reenroll.rekey_requires_attestation' "$W/rekey-plain.err" || fail "$(cat "$W/rekey-plain.err")"
}

t_rig_enroll_wrong_key() {
    local out="$W/rig-bogus" rc=0
    mkdir -p "$out"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/bogus.key"
    timeout 120 "$ATTESTCA_RIG_BIN" enroll \
        --server "https://127.0.0.1:$EST_PORT" --trust "$PKI/ca-chain.pem" \
        --rig-cert "$PKI/rig.crt" --rig-key "$W/bogus.key" --out "$out" --cn rig-device-bogus || rc=$?
    ((rc != 0)) || fail "enroll with a key that does not match --rig-cert exited 0"
    ((rc != 124)) || fail "enroll with a bogus key hung (killed after 120 s)"
    [[ ! -e "$out/device.crt" ]] || fail "a failed enroll still wrote $out/device.crt"
    echo "exit $rc"
}

t_restart_same_chain() {
    cmp "$W/ca-chain.before.pem" "$PKI/ca-chain.pem" || fail "ca-chain.pem changed across a restart"
}

t_restart_old_cert_verifies() {
    [[ -s "$W/device.pem" ]] || fail "no device.pem from before the restart"
    expect_verifies "$W/device.pem"
}

t_restart_cacerts() {
    local n
    req cacerts2 "$EST/cacerts"
    expect_status 200 cacerts2
    base64 -d <"$W/cacerts2.b" | openssl pkcs7 -inform DER -print_certs -out "$W/cacerts2.pem"
    n="$(count_certs "$W/cacerts2.pem")"
    [[ "$n" == 2 ]] || fail "expected 2 certificates, got $n"
    [[ "$(fingerprints "$W/cacerts2.pem")" == "$(fingerprints "$W/ca-chain.before.pem")" ]] \
        || fail "cacerts after the restart differs from the chain before it"
}

# ---------------------------------------------------------------- main
# Server starts run in this shell (not in run_step's subshell): SERVER_PID and
# the ports must outlive them.
server_step() { # server_step NAME COMMAND...
    local name=$1 out="$W/steps/server-$((PASSED + FAILED)).out"
    shift
    if "$@" >"$out" 2>&1; then
        echo "ok - $name"
        PASSED=$((PASSED + 1))
    else
        echo "not ok - $name"
        sed 's/^/#   /' "$out"
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$name")
        return 1
    fi
}

restart_server() {
    cp "$PKI/ca-chain.pem" "$W/ca-chain.before.pem" || return 1
    stop_server
    start_server
}

main() {
    if ! server_step "server starts and answers /healthz" start_server; then
        echo "Bail out! the server did not start"
        exit 1
    fi

    run_step "cacerts: anonymous GET, pkcs7-mime, base64, Content-Length, 2 certificates" t_cacerts
    run_step "cacerts: same certificates as ca-chain.pem" t_cacerts_matches_chain
    run_step "csrattrs: application/csrattrs that parses as DER" t_csrattrs
    run_step "simpleenroll: mTLS, wrapped base64 CSR -> 1 certificate that verifies, same key" t_enroll_mtls
    run_step "simpleenroll: same CSR again is a retry (same certificate)" t_enroll_retry
    run_step "simpleenroll: Basic auth, one-line base64 CSR -> verifies" t_enroll_basic
    run_step "simpleenroll: a plain CSR on the default profile -> 403 attestation.required" t_default_requires_attestation
    run_step "attested CSR (rig csr --vendor) via curl: hardwareModuleName, retry, foreign nonce 403" t_attested_enroll
    run_step "simplereenroll with curl --cert/--key: renewed, 401 without a certificate, 400 for another subject" t_reenroll_curl
    run_step "CRL: served at the distribution point, -crl_check and -crl_check_all good, revoke -> listed within seconds, error 23, pkilint clean" t_crl
    run_step "pkilint -s WARNING accepts the issued certificates" t_pkilint
    run_step "operator API with curl: operator certificate reads and revokes, rig gets 403 JSON" t_operator_api
    run_step "refuse: no credentials -> 401 with Basic challenge" t_refuse_anonymous
    run_step "refuse: wrong Basic password -> 401" t_refuse_wrong_password
    run_step "refuse: Content-Type text/plain -> 415" t_refuse_content_type
    run_step "refuse: body not base64 -> 400" t_refuse_not_base64
    run_step "refuse: base64 of random bytes -> 400" t_refuse_random_der
    run_step "refuse: 1 MiB body -> 413" t_refuse_huge
    run_step "refuse: unknown label -> 404" t_refuse_unknown_label
    run_step "rig csr writes a P-256 PKCS#8 key and a DER CSR that verifies" t_rig_csr
    run_step "rig enroll gets a certificate that verifies" t_rig_enroll
    run_step "rig enroll with --basic-file gets a certificate that verifies" t_rig_enroll_basic
    run_step "rig enroll with a key not matching --rig-cert fails" t_rig_enroll_wrong_key
    run_step "rig reenroll: renewal, attested rekey (--rekey --vendor), plain rekey refused" t_rig_reenroll
    run_step "TLS 1.2 and 1.3 negotiate, TLS 1.1 does not" t_tls_versions
    server_step "restart on the same data dir" restart_server || true
    run_step "restart: ca-chain.pem unchanged" t_restart_same_chain
    run_step "restart: certificate issued before still verifies" t_restart_old_cert_verifies
    run_step "restart: cacerts serves the same chain" t_restart_cacerts

    finish_steps est_curl_openssl
}

main

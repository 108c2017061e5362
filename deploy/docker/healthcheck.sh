#!/bin/bash
# Container health check of the attestca image (its HEALTHCHECK): GET /healthz on the plain-HTTP
# listener, healthy on "200".
#
# Why not curl: the runtime image has no HTTP client, and adding curl would bring libcurl and
# its protocol libraries (LDAP, SSH, RTMP…) into a CA's image for one request every few
# seconds. bash (part of every Debian image) can speak this much HTTP through /dev/tcp.
#
# Liveness, not readiness: /healthz answers while the process serves; /readyz (database and
# signer) is for load balancers. Docker does not restart unhealthy containers by itself, and an
# orchestrator that does must not restart the CA because PostgreSQL is away.
#
# ATTESTCA_HEALTHCHECK_ADDR: host:port of the plain-HTTP listener (server.http_addr), default
# 127.0.0.1:8080. Exit status: 0 healthy, 1 anything else (refused, timeout, other status).
set -u
addr="${ATTESTCA_HEALTHCHECK_ADDR:-127.0.0.1:8080}"
host="${addr%:*}"
port="${addr##*:}"
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "unhealthy: nothing answers on $addr" >&2
    exit 1
fi
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$addr" >&3 || exit 1
IFS= read -r -t 5 status <&3 || exit 1
status="${status%$'\r'}"
# "HTTP/1.0 200 OK" or "HTTP/1.1 200 OK"
if [[ "$status" =~ ^HTTP/1\.[01]\ 200(\ |$) ]]; then
    exit 0
fi
echo "unhealthy: $status" >&2
exit 1

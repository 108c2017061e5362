# attestca container image.
#
#   docker build -t attestca .
#   docker run --rm -v attestca-data:/var/lib/attestca -v attestca-tokens:/var/lib/softhsm/tokens \
#       -v "$PWD/attestca.toml:/etc/attestca/attestca.toml:ro" -e ATTESTCA_SIGNER_PIN=… \
#       -p 127.0.0.1:8443:8443 -p 127.0.0.1:8080:8080 attestca
#
# docker-compose.yml runs it with PostgreSQL, a SoftHSM token and Prometheus; docs/operations.md
# explains every choice made here.

# ---- build: the release binaries, with the versions pinned by Cargo.lock.
FROM rust:1-bookworm AS builder
WORKDIR /src
# .dockerignore keeps target/, .git, tests and docs out of the context.
COPY . .
RUN cargo build --release --locked --bins \
    && install -D -m 0755 -t /out target/release/attestca target/release/attestca-rig

# ---- runtime: Debian slim, same release as the builder (same glibc).
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="attestca" \
      org.opencontainers.image.description="Issuing CA for hardware-attested device keys: EST, PKCS#11, PostgreSQL/SQLite, CRL, OCSP" \
      org.opencontainers.image.licenses="Apache-2.0"

# softhsm2: the SoftHSM PKCS#11 module (/usr/lib/softhsm/libsofthsm2.so, from libsofthsm2) and
# softhsm2-util, which the compose initialiser uses to create the token. With a real HSM, add
# its vendor's PKCS#11 module instead (and point signer.module at it).
# ca-certificates: for TLS to PostgreSQL with sslmode=verify-full and the like.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates softhsm2 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid (10001), so that volume ownership and Kubernetes' runAsNonRoot
# checks do not depend on the order users were created in.
RUN groupadd --gid 10001 attestca \
    && useradd --uid 10001 --gid attestca --home-dir /var/lib/attestca \
       --no-create-home --shell /usr/sbin/nologin attestca

COPY --from=builder /out/attestca /out/attestca-rig /usr/local/bin/
COPY deploy/docker/healthcheck.sh /usr/local/lib/attestca/healthcheck
COPY deploy/compose/entrypoint.sh /usr/local/lib/attestca/compose-entrypoint
COPY deploy/compose/init-ca.sh /usr/local/lib/attestca/init-ca
# The example production configuration as the default; mount your own over it.
COPY deploy/attestca.example.toml /etc/attestca/attestca.toml

# State lives in two volumes: the data directory (TLS key, CA chain, SQLite if used) and the
# SoftHSM token directory (the CA key). Both belong to the service user; a new named volume
# copies this ownership on first use. Debian grants SoftHSM's configuration and directories to
# the group softhsm instead; a supplementary group is not reliable in a container (Docker drops
# them when USER names a group, orchestrators may replace them), so the service user owns the
# directories and the configuration (no secret in it) is world-readable.
RUN chmod 0755 /usr/local/lib/attestca/healthcheck /usr/local/lib/attestca/compose-entrypoint \
       /usr/local/lib/attestca/init-ca \
    && install -d -o attestca -g attestca -m 0750 /var/lib/attestca \
    && chmod 0755 /etc/softhsm && chmod 0644 /etc/softhsm/softhsm2.conf \
    && install -d -o attestca -g attestca -m 0750 /var/lib/softhsm \
    && install -d -o attestca -g attestca -m 0700 /var/lib/softhsm/tokens \
    && attestca --version

USER 10001:10001
WORKDIR /var/lib/attestca
VOLUME ["/var/lib/attestca", "/var/lib/softhsm/tokens"]

# 8443: EST, renewal and the operator API over HTTPS. 8080: plain HTTP — /healthz, /readyz,
# /metrics, CRLs and OCSP.
EXPOSE 8443 8080

# Liveness through /healthz with bash's /dev/tcp (no curl in the image: see the script).
# It assumes server.http_addr on port 8080; set ATTESTCA_HEALTHCHECK_ADDR if you move it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/lib/attestca/healthcheck"]

# attestca runs as PID 1 without an init: it handles SIGTERM (graceful drain, exit 0) and
# SIGINT itself and starts no child processes, so there is nothing to forward or reap.
# (With a PKCS#11 module that forks helpers, run with `docker run --init`.)
STOPSIGNAL SIGTERM
ENTRYPOINT ["attestca"]
CMD ["serve", "--config", "/etc/attestca/attestca.toml"]

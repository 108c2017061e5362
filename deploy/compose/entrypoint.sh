#!/bin/sh
# Entry point of the attestca service in docker-compose.yml (installed in the image as
# /usr/local/lib/attestca/compose-entrypoint): passes two kinds of compose secrets to attestca,
# then replaces itself with the command (so attestca is PID 1 and receives SIGTERM itself).
#
# attestca reads most secrets from files on its own: docker-compose.yml points
# ATTESTCA_SIGNER__PIN_FILE and ATTESTCA_DATABASE__PASSWORD_FILE at /run/secrets/…. A Basic-auth
# rig password and an operator token have file keys too (password_file, token_file), but inside
# the [[rigs.accounts]] and [[operators.tokens]] arrays, which ATTESTCA_<SECTION>__<KEY>
# overrides cannot reach. For those, every secret file named
#     ATTESTCA_RIG_PASSWORD_<ACCOUNT>   or   ATTESTCA_OPERATOR_TOKEN_<NAME>
# in $ATTESTCA_SECRETS_DIR (default /run/secrets) becomes the environment variable of that name,
# which attestca reads (src/config.rs). Its trailing newlines are removed, as attestca does for
# files.
set -eu
dir="${ATTESTCA_SECRETS_DIR:-/run/secrets}"
for file in "$dir"/ATTESTCA_RIG_PASSWORD_* "$dir"/ATTESTCA_OPERATOR_TOKEN_*; do
    [ -f "$file" ] || continue              # an unmatched glob stays literal
    name="${file##*/}"
    case "$name" in
        *[!A-Z0-9_]*) echo "compose-entrypoint: ignoring $file (not a variable name)" >&2; continue ;;
    esac
    value="$(cat "$file")"
    export "$name=$value"
done
exec "$@"

"""Checks docker-compose.yml as Compose resolves it, beyond what `config -q` validates.

Reads the output of `docker-compose -f docker-compose.yml config` on standard input (paths
resolved, defaults filled in). Needs PyYAML: run it with the Python that runs docker-compose
(Compose v1 is written in Python and depends on PyYAML), see tests/shell/deploy_files.sh.

  check_compose.py check REPO_ROOT     the deployment's promises (below); exit 1 on findings
  check_compose.py env SERVICE         the service's environment, one KEY=VALUE a line
  check_compose.py secrets SERVICE     "TARGET<TAB>SOURCE-FILE" for each secret of the service

What `check` asserts:
  - the attestca service runs `serve --config /etc/attestca/attestca.toml` with exactly
    deploy/attestca.example.toml mounted there read-only (the file the Rust test runs), and the
    softhsm-init service mounts the same file;
  - listeners on 0.0.0.0 inside the container, ports published on 127.0.0.1 only;
  - attestca waits for a healthy postgres and a successfully completed softhsm-init, and shares
    the data and token volumes with softhsm-init;
  - no secret is passed by value in any environment; every /run/secrets/… path named in an
    environment is a secret mounted in that service; the secret files exist;
  - postgres has a pg_isready health check;
  - prometheus mounts deploy/prometheus/prometheus.yml and each of its rule_files beside it,
    and scrapes the attestca service on its plain-HTTP port.
"""

import os
import re
import sys
from pathlib import Path

import yaml

findings = []


def finding(message):
    findings.append(message)


def env_of(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def volumes_of(service):
    """[(source, target, read_only)] in either the short or the long syntax."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            out.append((source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            out.append((str(v.get("source", "")), v.get("target", ""), bool(v.get("read_only"))))
    return out


def secrets_of(service):
    """{target name under /run/secrets: source secret name}"""
    out = {}
    for s in service.get("secrets") or []:
        if isinstance(s, str):
            out[s] = s
        else:
            out[s.get("target") or s["source"]] = s["source"]
    return out


def ports_of(service):
    """[(host_ip, published, target)]"""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, str):
            m = re.fullmatch(r"(?:(\[?[\d.:a-fA-F]*\]?):)?(\d+):(\d+)(?:/\w+)?", p)
            if not m:
                finding(f"cannot read port {p!r}")
                continue
            out.append((m.group(1) or "", m.group(2), m.group(3)))
        else:
            out.append((p.get("host_ip", ""), str(p.get("published", "")), str(p.get("target"))))
    return out


def depends_of(service):
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (v or {}).get("condition", "service_started") for name, v in deps.items()}


def mounts_file(service, source, target):
    want = os.path.realpath(source)
    return any(
        os.path.realpath(src) == want and tgt == target and ro
        for src, tgt, ro in volumes_of(service)
    )


SECRET_VARIABLES = re.compile(
    r"^(ATTESTCA_SIGNER_PIN|ATTESTCA_DATABASE_PASSWORD|ATTESTCA_RIG_PASSWORD_\w+|"
    r"ATTESTCA_OPERATOR_TOKEN_\w+|POSTGRES_PASSWORD)$"
)


def check(config, root):
    services = config.get("services") or {}
    for name in ("postgres", "softhsm-init", "attestca", "prometheus"):
        if name not in services:
            finding(f"service {name} missing")
    if findings:
        return
    ca, init, pg, prom = (services[n] for n in ("attestca", "softhsm-init", "postgres", "prometheus"))
    example = root / "deploy/attestca.example.toml"
    config_path = "/etc/attestca/attestca.toml"

    # The example configuration, mounted read-only, run in production mode.
    for name in ("attestca", "softhsm-init"):
        if not mounts_file(services[name], example, config_path):
            finding(f"{name} does not mount {example} read-only at {config_path}")
    command = list(ca.get("entrypoint") or []) + list(ca.get("command") or [])
    if command[-3:] != ["serve", "--config", config_path] or "--dev" in command:
        finding(f"attestca does not run `serve --config {config_path}`: {command}")
    if ca.get("image") != init.get("image") or not ca.get("image"):
        finding("softhsm-init and attestca must use the same image")

    env = env_of(ca)
    expected = {
        "ATTESTCA_SERVER__EST_ADDR": "0.0.0.0:8443",
        "ATTESTCA_SERVER__HTTP_ADDR": "0.0.0.0:8080",
        "ATTESTCA_SERVER__DATA_DIR": "/var/lib/attestca",
        "ATTESTCA_SIGNER__MODULE": "/usr/lib/softhsm/libsofthsm2.so",
    }
    for key, value in expected.items():
        if env.get(key) != value:
            finding(f"attestca: {key} should be {value}, is {env.get(key)!r}")
    if not env.get("ATTESTCA_DATABASE__URL", "").startswith("postgres://"):
        finding("attestca: ATTESTCA_DATABASE__URL should be a postgres:// URL")
    elif "@postgres:" not in env["ATTESTCA_DATABASE__URL"]:
        finding("attestca: ATTESTCA_DATABASE__URL does not point at the postgres service")
    if re.search(r"://[^/@]*:[^/@]*@", env.get("ATTESTCA_DATABASE__URL", "")):
        finding("attestca: the database URL carries a password")

    # Published ports: loopback only.
    for name, service in services.items():
        for host_ip, published, target in ports_of(service):
            if host_ip != "127.0.0.1":
                finding(f"{name}: port {published}:{target} is published on {host_ip or 'all interfaces'}, not 127.0.0.1")
    published = {target for _, _, target in ports_of(ca)}
    if published != {"8443", "8080"}:
        finding(f"attestca should publish 8443 and 8080, publishes {sorted(published)}")

    # Start order and shared state.
    deps = depends_of(ca)
    if deps.get("postgres") != "service_healthy":
        finding("attestca must wait for postgres: service_healthy")
    if deps.get("softhsm-init") != "service_completed_successfully":
        finding("attestca must wait for softhsm-init: service_completed_successfully")
    for target in ("/var/lib/attestca", "/var/lib/softhsm/tokens"):
        a = [s for s, t, _ in volumes_of(ca) if t == target]
        b = [s for s, t, _ in volumes_of(init) if t == target]
        if not a or a != b:
            finding(f"attestca and softhsm-init must share the volume at {target} ({a} vs {b})")
    if init.get("restart", "no") not in ("no", None):
        finding("softhsm-init is one-shot: restart must be \"no\"")

    # Secrets: by file only, and every file named is mounted.
    top_secrets = config.get("secrets") or {}
    for name, service in services.items():
        senv = env_of(service)
        mounted = secrets_of(service)
        for key, value in senv.items():
            if SECRET_VARIABLES.match(key):
                finding(f"{name}: secret {key} passed by value in the environment")
            for path in re.findall(r"/run/secrets/([\w.-]+)", value):
                if path not in mounted:
                    finding(f"{name}: {key} names /run/secrets/{path}, which is not a secret of the service")
        for target, source in mounted.items():
            if source not in top_secrets:
                finding(f"{name}: secret {source} is not defined")
    for source, definition in top_secrets.items():
        path = Path(definition.get("file", ""))
        if not path.is_file():
            finding(f"secret {source}: file {path} missing")
        elif not path.stat().st_mode & 0o004:
            finding(f"secret {source}: {path} must be readable by the containers' users (mode o+r)")
    for target in ("ATTESTCA_RIG_PASSWORD_LINE_1_BASIC", "ATTESTCA_OPERATOR_TOKEN_AUTOMATION"):
        if target not in secrets_of(ca):
            finding(f"attestca: no secret with target {target} (the example config's account needs it)")
    if "ATTESTCA_SIGNER__PIN_FILE" not in env_of(init) or "ATTESTCA_SIGNER__PIN_FILE" not in env:
        finding("softhsm-init and attestca must read the token PIN from ATTESTCA_SIGNER__PIN_FILE")

    # PostgreSQL health.
    test = (pg.get("healthcheck") or {}).get("test") or []
    if "pg_isready" not in " ".join(test if isinstance(test, list) else [test]):
        finding("postgres: the health check must run pg_isready")

    # Prometheus: its configuration and every rule file it loads.
    prom_config = root / "deploy/prometheus/prometheus.yml"
    if not mounts_file(prom, prom_config, "/etc/prometheus/prometheus.yml"):
        finding("prometheus does not mount deploy/prometheus/prometheus.yml read-only")
    try:
        pconf = yaml.safe_load(prom_config.read_text())
    except (OSError, yaml.YAMLError) as e:
        finding(f"{prom_config}: {e}")
        return
    for rule_file in pconf.get("rule_files") or []:
        if not mounts_file(prom, prom_config.parent / rule_file, f"/etc/prometheus/{rule_file}"):
            finding(f"prometheus does not mount {rule_file} beside its configuration")
    http_port = env.get("ATTESTCA_SERVER__HTTP_ADDR", "").rsplit(":", 1)[-1]
    targets = [
        t
        for job in pconf.get("scrape_configs") or []
        if job.get("job_name") == "attestca"
        for sc in job.get("static_configs") or []
        for t in sc.get("targets") or []
    ]
    if f"attestca:{http_port}" not in targets:
        finding(f"prometheus job attestca should scrape attestca:{http_port}, scrapes {targets}")


def main():
    config = yaml.safe_load(sys.stdin)
    if not isinstance(config, dict):
        print("no compose configuration on standard input")
        return 1
    if sys.argv[1:2] == ["check"] and len(sys.argv) == 3:
        check(config, Path(sys.argv[2]).resolve())
        for line in findings:
            print(line)
        if not findings:
            print(f"{len(config.get('services') or {})} services checked")
        return 1 if findings else 0
    if sys.argv[1:2] in (["env"], ["secrets"]) and len(sys.argv) == 3:
        service = (config.get("services") or {}).get(sys.argv[2])
        if service is None:
            print(f"no service {sys.argv[2]}", file=sys.stderr)
            return 1
        if sys.argv[1] == "env":
            for key, value in sorted(env_of(service).items()):
                print(f"{key}={value}")
        else:
            top = config.get("secrets") or {}
            for target, source in sorted(secrets_of(service).items()):
                print(f"{target}\t{top.get(source, {}).get('file', '')}")
        return 0
    print(__doc__.strip().splitlines()[0], file=sys.stderr)
    print("usage: check_compose.py check REPO_ROOT | env SERVICE | secrets SERVICE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Turns a benches/load/measure.sh output directory into results.json and results.md.

Standard library only. The crypto an attested enrollment needs is counted as three P-256
verifications (the device certificate and the attestation statement in the evidence chain,
and the CSR's proof of possession) and one P-256 signature (the certificate), at the rates
`openssl speed` measured on one core in the same run.
"""

import json
import re
import sys
from pathlib import Path

VERIFICATIONS_PER_ENROLLMENT = 3
SIGNATURES_PER_ENROLLMENT = 1


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def openssl_rates(text):
    # "ecdsa (nistp256)   0.0000s   0.0001s  40000.0  13500.0"
    for line in text.splitlines():
        m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            return float(m.group(1)), float(m.group(2))
    return None, None


def wrk_summary(text):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    p99_ms = None
    if p99:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        p99_ms = float(p99.group(1)) * scale
    return {
        "requests_per_second": float(rps.group(1)) if rps else None,
        "p99_ms": p99_ms,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def ms(report, name):
    try:
        return report["processes"][name]["ms_per_operation"]
    except (KeyError, TypeError):
        return None


def fmt(value, digits=2, unit=""):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def main():
    out = Path(sys.argv[1])
    sign, verify = openssl_rates((out / "openssl-speed.txt").read_text())
    crypto_ms = None
    if sign and verify:
        crypto_ms = 1000.0 * (
            VERIFICATIONS_PER_ENROLLMENT / verify + SIGNATURES_PER_ENROLLMENT / sign
        )
    pg = load(out / "pg.json")
    latency = load(out / "pg-latency.json")
    factory = load(out / "factory.json")
    dev = load(out / "dev.json")
    ocsp = wrk_summary((out / "ocsp-wrk.txt").read_text()) if (out / "ocsp-wrk.txt").exists() else {}
    results = {
        "crypto_reference": {
            "openssl_p256_signs_per_second_one_core": sign,
            "openssl_p256_verifies_per_second_one_core": verify,
            "crypto_ms_per_attested_enrollment": crypto_ms,
        },
        "throughput_postgres_softhsm": pg,
        "throughput_simulated_hsm_latency_2ms": latency,
        "factory_100_stations_2s": factory,
        "ocsp_wrk": ocsp,
        "throughput_serve_dev": dev,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))

    rate = pg and pg.get("per_second")
    lat_rate = latency and latency.get("per_second")
    ca_ms = ms(pg, "ca")
    rows = [
        ("attested enrollments/s, PostgreSQL + SoftHSM", "≥ 2,000 (stretch 3,000)",
         f"{fmt(rate, 0)} /s (machine {fmt(pg and 100 * pg['machine']['busy_share'], 0)} % busy)"),
        ("CA CPU per attested enrollment", "≤ 0.5 ms (≤ 1.5× crypto)",
         f"{fmt(ca_ms, 3)} ms = {fmt(ca_ms and crypto_ms and ca_ms / crypto_ms, 1)}× its crypto ({fmt(crypto_ms, 3)} ms)"),
        ("PostgreSQL CPU per attested enrollment", "≤ 0.25 ms", f"{fmt(ms(pg, 'postgres'), 3)} ms"),
        ("with 2 ms simulated signing latency", "≥ 90 % of the throughput without",
         f"{fmt(lat_rate, 0)} /s = {fmt(rate and lat_rate and 100 * lat_rate / rate, 0)} %"),
        ("OCSP responses/s from the pre-signed cache (wrk)", "≥ 50,000 /s, p99 ≤ 5 ms",
         f"{fmt(ocsp.get('requests_per_second'), 0)} /s, p99 {fmt(ocsp.get('p99_ms'), 2)} ms, non-2xx {ocsp.get('non_2xx', '—')}"),
    ]
    if factory:
        side = factory.get("ca_side") or {}
        client = factory.get("ca_latency_ms") or {}
        rows.append((
            "factory 100 stations × 2 s, CA-side", "p99 ≤ 5 ms, p99.9 ≤ 10 ms, 0 failures",
            f"CA histogram p99 ≤ {fmt(side.get('p99_at_most'), 1)} ms, p99.9 ≤ {fmt(side.get('p999_at_most'), 1)} ms; "
            f"client round trip p99 {fmt(client.get('p99'), 2)} ms, p99.9 {fmt(client.get('p999'), 2)} ms; "
            f"{factory.get('failed')} failed of {factory.get('boards')}",
        ))
    rows.append(("serve --dev (SQLite, software key)", "≥ 1,000 /s",
                 f"{fmt(dev and dev.get('per_second'), 0)} /s, CA {fmt(ms(dev, 'ca'), 3)} ms per enrollment"))
    lines = ["| measure | target | measured |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append("")
    lines.append(
        f"Crypto reference (`openssl speed`, one core): {fmt(sign, 0)} P-256 signatures/s, "
        f"{fmt(verify, 0)} verifications/s; an attested enrollment's {VERIFICATIONS_PER_ENROLLMENT} "
        f"verifications and {SIGNATURES_PER_ENROLLMENT} signature = {fmt(crypto_ms, 3)} ms."
    )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Chart and summary of a soak run (benches/soak.sh): standard library only.

    python3 benches/soak_chart.py samples.csv soak.svg [--title TEXT]

Reads the CSV written by soak.sh (one row per sample of the CA process), writes an SVG with
resident memory, open files and threads over time (left) and over certificates issued
(right), and prints the summary: RSS at start / end / peak, growth per certificate issued
(end - start, and the least-squares slope over the run and over its second half), open files
and threads (range, and whether flat), OCSP responses cached, CPU per certificate.
"""

import argparse
import csv
import html
import math
import sys


def read(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {"phase": r["phase"]}
            for k, v in r.items():
                if k == "phase":
                    continue
                try:
                    row[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    row[k] = None
            rows.append(row)
    return rows


def slope(xs, ys):
    """Least-squares slope of ys over xs (None if fewer than 3 points or no spread)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def nice_ticks(lo, hi, count=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if (hi - lo) / step <= count:
            break
    start = (lo // step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks, step


def fmt(v):
    if abs(v) >= 1000 and v == int(v):
        return f"{int(v):,}"
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


def panel(out, x0, y0, w, h, series, xlabel, ylabel, title, ymin_zero=False, fit=None, shade=None):
    """series: list of (points [(x, y)], colour, label); shade: an x range to tint."""
    xs = [p[0] for s in series for p in s[0]]
    ys = [p[1] for s in series for p in s[0]]
    if not xs:
        return
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if ymin_zero:
        ylo = 0
    pad = (yhi - ylo) * 0.1 or max(abs(yhi) * 0.05, 1)
    ylo, yhi = (ylo if ymin_zero else ylo - pad), yhi + pad
    xt, _ = nice_ticks(xlo, xhi)
    yt, _ = nice_ticks(ylo, yhi)
    ylo, yhi = min(ylo, yt[0]), max(yhi, yt[-1])
    xlo, xhi = min(xlo, xt[0]), max(xhi, xt[-1])
    if xhi == xlo:
        xhi = xlo + 1

    def X(x):
        return x0 + (x - xlo) / (xhi - xlo) * w

    def Y(y):
        return y0 + h - (y - ylo) / (yhi - ylo) * h

    out.append(f'<text x="{x0}" y="{y0 - 8}" class="t">{html.escape(title)}</text>')
    if shade:
        a, b = max(shade[0], xlo), min(shade[1], xhi)
        out.append(f'<rect x="{X(a):.1f}" y="{y0}" width="{X(b) - X(a):.1f}" height="{h}" fill="#f3f0e6"/>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" class="frame"/>')
    for t in yt:
        out.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" class="grid"/>')
        out.append(f'<text x="{x0 - 5}" y="{Y(t) + 4:.1f}" class="yl">{fmt(t)}</text>')
    for t in xt:
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{y0}" y2="{y0 + h}" class="grid"/>')
        out.append(f'<text x="{X(t):.1f}" y="{y0 + h + 14}" class="xl">{fmt(t)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 30}" class="xl">{html.escape(xlabel)}</text>')
    out.append(
        f'<text transform="translate({x0 - 44},{y0 + h / 2}) rotate(-90)" class="xl">{html.escape(ylabel)}</text>'
    )
    for pts, colour, label in series:
        if not pts:
            continue
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    if fit:
        (a, b), label = fit
        out.append(
            f'<line x1="{X(xlo):.1f}" y1="{Y(a + b * xlo):.1f}" x2="{X(xhi):.1f}" y2="{Y(a + b * xhi):.1f}" '
            'stroke="#888" stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{x0 + 6}" y="{y0 + 14}" class="lg">{html.escape(label)}</text>')
    ly = y0 + (30 if fit else 14)
    for pts, colour, label in series:
        if label:
            out.append(f'<text x="{x0 + 6}" y="{ly}" class="lg" fill="{colour}">{html.escape(label)}</text>')
            ly += 14


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("svg")
    ap.add_argument("--title", default="attestca soak")
    args = ap.parse_args()
    rows = read(args.csv)
    load = [r for r in rows if r["phase"] == "load"]
    before = [r for r in rows if r["phase"] == "idle-before"]
    after = [r for r in rows if r["phase"] == "idle-after"]
    if len(load) < 2:
        sys.exit("soak_chart: fewer than two samples under load")

    start = before[-1] if before else load[0]
    end = load[-1]
    issued0 = start["certificates_issued"] or 0
    issued = (end["certificates_issued"] or 0) - issued0
    t_load0 = load[0]["t_s"]
    rss_mb = lambda r: r["rss_kb"] / 1024
    growth_total = (end["rss_kb"] - start["rss_kb"]) * 1024
    per_cert = growth_total / issued if issued else None
    lx = [(r["certificates_issued"] or 0) for r in load]
    ly = [r["rss_kb"] * 1024 for r in load]
    slope_all = slope(lx, ly)
    half = len(load) // 2
    slope_2nd = slope(lx[half:], ly[half:])
    peak_hwm = max(r["hwm_kb"] for r in rows if r["hwm_kb"] is not None)
    fds = [int(r["fds"]) for r in load]
    # The database pool grows and shrinks with the load (each connection is a socket): open
    # files less pooled connections are what a leak would move.
    other_fds = [int(r["fds"] - r["db_connections"]) for r in load if r["db_connections"] is not None]
    thr = [int(r["threads"]) for r in load]
    q = max(1, len(load) // 4)

    def flat(values):
        # Flat: the last quarter's highest is no higher than the first quarter's highest + 2.
        return max(values[-q:]) <= max(values[:q]) + 2

    cpu = (end["cpu_s"] or 0) - (start["cpu_s"] or 0)
    cached = end.get("ocsp_cached")
    lines = [
        f"samples: {len(rows)} ({len(before)} idle before, {len(load)} under load, {len(after)} idle after)",
        f"load window: {end['t_s'] - t_load0:.0f} s sampled, {issued:,.0f} certificates issued "
        f"({issued / max(end['t_s'] - t_load0, 1):.2f}/s)",
        f"RSS: start {start['rss_kb'] / 1024:.1f} MB (before the line), first loaded sample "
        f"{load[0]['rss_kb'] / 1024:.1f} MB, end of load {end['rss_kb'] / 1024:.1f} MB, "
        f"peak (VmHWM) {peak_hwm / 1024:.1f} MB"
        + (f", after {after[-1]['rss_kb'] / 1024:.1f} MB idle" if after else ""),
        "growth per certificate issued: "
        + (f"{per_cert:.0f} bytes (end - start)" if per_cert is not None else "n/a")
        + (f"; least-squares slope {slope_all:.0f} bytes" if slope_all is not None else "")
        + (f" over the run, {slope_2nd:.0f} bytes over its second half" if slope_2nd is not None else ""),
        f"open files: {min(fds)}..{max(fds)} under load (max {max(fds)}), "
        + ("flat" if flat(fds) else "NOT flat")
        + (f"; {int(before[-1]['fds'])} before, {int(after[-1]['fds'])} after" if before and after else ""),
        (
            f"open files less pooled database connections: {min(other_fds)}..{max(other_fds)} under load, "
            + ("flat" if flat(other_fds) else "NOT flat")
            + f"; database connections {min(int(r['db_connections']) for r in load if r['db_connections'] is not None)}"
            f"..{max(int(r['db_connections']) for r in load if r['db_connections'] is not None)}"
            if other_fds
            else ""
        ),
        f"threads: {min(thr)}..{max(thr)} under load (max {max(thr)}), "
        + ("flat" if flat(thr) else "NOT flat")
        + (f"; {int(before[-1]['threads'])} before, {int(after[-1]['threads'])} after" if before and after else ""),
        (
            f"OCSP responses cached at the end: {cached:,.0f} (+{cached - (start['ocsp_cached'] or 0):,.0f}); "
            f"RSS growth per cached response {growth_total / (cached - (start['ocsp_cached'] or 0)):.0f} bytes"
            if cached is not None and cached > (start["ocsp_cached"] or 0)
            else "OCSP: no gauge, or nothing cached"
        ),
        f"CA CPU: {cpu:.0f} s over the window, {cpu / issued * 1000:.2f} ms per certificate" if issued else "",
        f"load average (1 min) during the run: {min(r['load1'] for r in load):.2f}..{max(r['load1'] for r in load):.2f}",
    ]
    print("\n".join(l for l in lines if l))

    # Chart.
    W, H = 1100, 820
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">',
        "<style>.t{font-size:13px;font-weight:bold}.xl{font-size:11px;text-anchor:middle}"
        ".yl{font-size:11px;text-anchor:end}.lg{font-size:11px}.frame{fill:none;stroke:#333}"
        ".grid{stroke:#ddd}</style>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{html.escape(args.title)}</text>',
        f'<text x="{W / 2}" y="40" text-anchor="middle" font-size="12">{html.escape(lines[3])}</text>',
    ]
    minutes = lambda r: r["t_s"] / 60
    pw, ph = 430, 180
    lx0, rx0 = 90, 610
    rows_y = [80, 330, 580]
    lp = [r for r in rows]
    fit = None
    if slope_all is not None:
        n = len(lx)
        mx = sum(lx) / n
        my = sum(r["rss_kb"] / 1024 for r in load) / n
        b = slope_all / 1024 / 1024
        fit = ((my - b * mx, b), f"fit: {slope_all:.0f} bytes per certificate")
    specs = [
        ("resident memory (VmRSS)", "MB", rss_mb, "#1f77b4", True),
        ("open files (/proc/PID/fd)", "fds", lambda r: r["fds"], "#d62728", True),
        ("threads", "threads", lambda r: r["threads"], "#2ca02c", True),
    ]
    for (title, unit, f, colour, zero), y in zip(specs, rows_y):
        panel(
            out, lx0, y, pw, ph,
            [([(minutes(r), f(r)) for r in lp], colour, None)],
            "minutes since the CA was ready (tinted: the line running)", unit,
            f"{title} over time", ymin_zero=zero, shade=(minutes(load[0]), minutes(load[-1])),
        )
        panel(
            out, rx0, y, pw, ph,
            [([((r["certificates_issued"] or 0), f(r)) for r in load], colour, None)],
            "certificates issued", unit, f"{title} over certificates issued", ymin_zero=zero,
            fit=fit if unit == "MB" else None,
        )
    out.append("</svg>")
    with open(args.svg, "w") as fh:
        fh.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

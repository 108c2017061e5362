#!/usr/bin/env python3
"""Checks the monitoring files against the metrics the CA really exports (crates/attestca-server/src/metrics.rs).

promtool checks the syntax of the rules; nothing else notices an alert on a misspelt metric
name, which simply never fires, or a dashboard panel that stays empty. This script (standard
library only) reads the metric names, types and labels from crates/attestca-server/src/metrics.rs and checks:

  dashboard  deploy/grafana/attestca-dashboard.json: valid JSON, the datasource is the
             ${DS_PROMETHEUS} variable everywhere, unique panel ids, panels inside the 24-column
             grid without overlaps, every panel has a query, every metric name in a query is
             exported (histograms with _bucket/_sum/_count) or an allowed Prometheus series, and
             every label it filters or groups by belongs to one of the query's metrics;
  rules      deploy/prometheus/*rules.yml: every metric name exported or a recording rule of
             the file; every alert has a severity label, summary, description and runbook_url,
             and the runbook anchor is a heading of docs/operations.md;
  docs       docs/operations.md has one table row per exported metric, with its type and
             labels, and no row for a metric that does not exist.

Usage: check_monitoring.py REPO_ROOT. Prints one line per finding; exit status 1 if any.
"""

import json
import re
import sys
from pathlib import Path

# Series a dashboard or rule may use without attestca exporting them: Prometheus' own
# per-target series. (The process_* collector is not registered in crates/attestca-server/src/metrics.rs.)
BUILTIN_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Labels every attestca series carries once scraped, plus histogram buckets' le.
TARGET_LABELS = {"job", "instance"}
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

findings = []


def finding(where, message):
    findings.append(f"{where}: {message}")


# ---------------------------------------------------------------- crates/attestca-server/src/metrics.rs
HELPER_TYPES = {
    "counter": "counter",
    "histogram": "histogram",
    "int_gauges": "gauge",
    "gauges": "gauge",
    "int_gauge": "gauge",
}


def exported_metrics(path):
    """{name: (type, [labels])} from the registrations in crates/attestca-server/src/metrics.rs."""
    try:
        text = path.read_text()
    except OSError as e:
        finding(str(path), f"cannot read: {e}")
        return {}
    text = text.split("#[cfg(test)]", 1)[0]
    metrics = {}
    helper = re.compile(
        r'\b(counter|histogram|int_gauges|gauges|int_gauge)\(\s*&\w+,\s*"(attestca_\w+)",\s*'
        r'"(?:[^"\\]|\\.)*"\s*(?:,\s*&\[([^\]]*)\])?'
    )
    for kind, name, labels in helper.findall(text):
        metrics[name] = (HELPER_TYPES[kind], re.findall(r'"(\w+)"', labels or ""))
    for kind, name in re.findall(r'\b(Int)?(?:Gauge)::new\(\s*"(attestca_\w+)"', text):
        metrics[name] = ("gauge", [])
    for name in re.findall(r'\b(?:Int)?Counter::new\(\s*"(attestca_\w+)"', text):
        metrics[name] = ("counter", [])
    literals = set(re.findall(r'"(attestca_\w+)"', text))
    for name in sorted(literals - set(metrics)):
        finding(str(path), f"{name} is registered in a way this checker does not parse: update it")
    if not metrics:
        finding(str(path), "no metrics found")
    return metrics


# ---------------------------------------------------------------- PromQL
def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def promql_names(expr):
    """(series names, label names) used by a PromQL expression (Grafana variables allowed)."""
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "1", expr)        # Grafana variables
    expr = strip_strings(expr)
    labels = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels.update(re.findall(r"\w+", clause))
    bare = re.sub(r"\{[^}]*\}", " ", expr)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare
    )
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", bare):
        token, call = match.group(1), match.group(2)
        if call or token.lower() in PROMQL_KEYWORDS:
            continue
        names.add(token)
    return names, labels


def check_expr(where, expr, metrics, records, allow_labels=()):
    names, labels = promql_names(expr)
    if not names:
        finding(where, f"no series in {expr!r}")
    known_labels = set(TARGET_LABELS) | set(allow_labels) | {"__name__"}
    for name in sorted(names):
        base = name
        if name not in metrics:
            for suffix in HISTOGRAM_SUFFIXES:
                stem = name[: -len(suffix)]
                if name.endswith(suffix) and metrics.get(stem, ("",))[0] == "histogram":
                    base = stem
                    if suffix == "_bucket":
                        known_labels.add("le")
        if base in metrics:
            known_labels.update(metrics[base][1])
        elif name in records:
            known_labels.update(records[name])
        elif name not in BUILTIN_SERIES:
            finding(where, f"unknown series {name} (not in crates/attestca-server/src/metrics.rs) in {expr!r}")
    for label in sorted(labels - known_labels):
        finding(where, f"label {label} belongs to none of the series of {expr!r}")


# ---------------------------------------------------------------- dashboard
def check_dashboard(path, metrics):
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        finding(str(path), f"not valid JSON: {e}")
        return set()
    for key in ("title", "uid", "schemaVersion", "panels", "templating"):
        if key not in dashboard:
            finding(str(path), f"missing top-level key {key}")
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        finding(str(path), "schemaVersion must be an integer >= 36")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds_var = variables.get("DS_PROMETHEUS")
    if not ds_var or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        finding(str(path), "needs a datasource variable DS_PROMETHEUS of type prometheus")
    for name, var in variables.items():
        if var.get("type") == "query":
            definition = var.get("definition", "")
            m = re.fullmatch(r"label_values\((\w+)(\{[^}]*\})?,\s*(\w+)\)", definition)
            if not m:
                finding(f"{path} variable {name}", f"unexpected query {definition!r}")
            else:
                check_expr(f"{path} variable {name}", m.group(1) + (m.group(2) or ""), metrics, {})
                if m.group(3) not in TARGET_LABELS | set(metrics.get(m.group(1), ("", []))[1]):
                    finding(f"{path} variable {name}", f"label {m.group(3)} not on {m.group(1)}")

    used = set()
    ids = set()
    cells = {}
    flat = []
    for panel in dashboard.get("panels", []):
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    for panel in flat:
        where = f"{path} panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids:
            finding(where, "duplicate panel id")
        ids.add(panel.get("id"))
        pos = panel.get("gridPos") or {}
        if not all(isinstance(pos.get(k), int) for k in ("x", "y", "w", "h")):
            finding(where, "gridPos needs integer x, y, w, h")
            continue
        if pos["x"] < 0 or pos["w"] < 1 or pos["x"] + pos["w"] > 24:
            finding(where, "outside the 24-column grid")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    finding(where, f"overlaps panel {cells[(x, y)]}")
                    break
                cells[(x, y)] = panel.get("id")
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}:
            finding(where, "datasource must be {type: prometheus, uid: ${DS_PROMETHEUS}}")
        targets = panel.get("targets") or []
        if not targets:
            finding(where, "no query")
        if not panel.get("description"):
            finding(where, "no description")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                finding(where, f"empty expr in target {target.get('refId')}")
                continue
            if target.get("datasource", panel.get("datasource")) != panel.get("datasource"):
                finding(where, f"target {target.get('refId')} uses another datasource")
            names, _ = promql_names(expr)
            used.update(names)
            check_expr(where, expr, metrics, {})
    return used


# ---------------------------------------------------------------- rules
def github_anchor(heading):
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def rule_items(text):
    """[(kind, name, {key: text})] of a rules file, read line by line (no YAML parser in the
    standard library): the keys are expr, severity, and the annotation names."""
    lines = text.splitlines()
    items = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)- (record|alert):\s*(\S+)\s*$", line)
        if not m:
            continue
        indent = len(m.group(1))
        block = []
        for later in lines[i + 1:]:
            if later.strip() and len(later) - len(later.lstrip()) <= indent:
                break
            block.append(later)
        fields = {}
        for j, b in enumerate(block):
            f = re.match(r"^(\s*)(expr|severity|summary|description|runbook_url):\s*(.*)$", b)
            if not f:
                continue
            key, value = f.group(2), f.group(3).strip()
            if value in ("|", ">-", ">", "|-"):
                own = len(f.group(1))
                more = []
                for c in block[j + 1:]:
                    if c.strip() and len(c) - len(c.lstrip()) <= own:
                        break
                    more.append(c.strip())
                value = " ".join(x for x in more if x)
            fields[key] = value.strip('"')
        items.append((m.group(2), m.group(3), fields))
    return items


def check_rules(path, metrics, anchors):
    try:
        items = rule_items(path.read_text())
    except OSError as e:
        finding(str(path), f"cannot read: {e}")
        return {}
    records = {}
    for kind, name, fields in items:
        if kind == "record":
            m = re.search(r"\bby\s*\(([^)]*)\)", fields.get("expr", ""))
            records[name] = set(re.findall(r"\w+", m.group(1))) if m else set()
    if not any(kind == "alert" for kind, _, _ in items):
        finding(str(path), "no alerts found")
    for kind, name, fields in items:
        where = f"{path} {kind} {name}"
        if not fields.get("expr"):
            finding(where, "no expr found")
        else:
            check_expr(where, fields["expr"], metrics, records)
        if kind == "record":
            continue
        if fields.get("severity") not in ("critical", "warning", "info"):
            finding(where, "severity label missing or not critical/warning/info")
        for annotation in ("summary", "description", "runbook_url"):
            if not fields.get(annotation):
                finding(where, f"annotation {annotation} missing")
        # Series named in the text (e.g. "see attestca_enrollment_refusals_total") must exist.
        for text in (fields.get("summary", ""), fields.get("description", "")):
            for series in re.findall(r"\b(attestca_\w+)", text):
                if series not in metrics:
                    finding(where, f"the annotations name {series}, which is not exported")
        m = re.fullmatch(r"docs/operations\.md#([\w-]+)", fields.get("runbook_url", ""))
        if not m:
            finding(where, "runbook_url must be docs/operations.md#<anchor>")
        elif m.group(1) not in anchors:
            finding(where, f"runbook anchor #{m.group(1)} is no heading of docs/operations.md")
    return records


# ---------------------------------------------------------------- docs
def check_docs(path, metrics):
    try:
        text = path.read_text()
    except OSError as e:
        finding(str(path), f"cannot read: {e}")
        return set()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`(attestca_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|([^|]*)\|", line)
        if m:
            name, kind, labels, meaning = m.groups()
            rows[name] = (kind, sorted(re.findall(r"`(\w+)`", labels)), meaning.strip())
    for name, (kind, labels) in sorted(metrics.items()):
        if name not in rows:
            finding(str(path), f"no table row for {name}")
            continue
        doc_kind, doc_labels, meaning = rows[name]
        if doc_kind != kind:
            finding(str(path), f"{name} is a {kind} in crates/attestca-server/src/metrics.rs, the table says {doc_kind}")
        if doc_labels != sorted(labels):
            finding(str(path), f"{name} labels: crates/attestca-server/src/metrics.rs {sorted(labels)}, table {doc_labels}")
        if len(meaning) < 10:
            finding(str(path), f"{name}: no meaning given")
    for name in sorted(set(rows) - set(metrics)):
        finding(str(path), f"table row for {name}, which crates/attestca-server/src/metrics.rs does not export")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)     # not comments in code blocks
    return {github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.*)$", prose, re.M)}


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    metrics = exported_metrics(root / "crates/attestca-server/src/metrics.rs")
    anchors = check_docs(root / "docs/operations.md", metrics)
    rule_files = sorted((root / "deploy/prometheus").glob("*rules.yml"))
    if not rule_files:
        finding("deploy/prometheus", "no *rules.yml")
    for path in rule_files:
        check_rules(path, metrics, anchors)
    used = check_dashboard(root / "deploy/grafana/attestca-dashboard.json", metrics)
    shown = {n for n in used if n in metrics} | {
        n[: -len(s)] for n in used for s in HISTOGRAM_SUFFIXES if n.endswith(s)
    }
    missing = sorted(set(metrics) - shown)
    print(f"{len(metrics)} metrics in crates/attestca-server/src/metrics.rs; dashboard shows {len(set(metrics) & shown)}"
          + (f" (not shown: {', '.join(missing)})" if missing else ""))
    for line in findings:
        print(line)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

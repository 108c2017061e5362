//! The layering `docs/architecture.md` describes, checked: between crates over `Cargo.lock`,
//! inside the server crate over its `use crate::…` paths.
//!
//! Cargo already refuses an arrow between crates that the manifests do not declare; these tests
//! keep the *declared* arrows honest: the rig and the core never reach the server's stack, and
//! no module of the server imports from a layer above its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use attestca_testkit::repo_root;

/// Every package reachable from `package` in `Cargo.lock` (normal, build and dev edges of the
/// workspace's own crates: an over-approximation of `cargo tree -e normal`).
fn reachable(package: &str) -> BTreeSet<String> {
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).expect("read Cargo.lock");
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("package name")
            .to_string();
        let deps: Vec<String> = block
            .split("dependencies = [")
            .nth(1)
            .map(|d| {
                d.split(']')
                    .next()
                    .unwrap_or_default()
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .map(|d| d.split(' ').next().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        edges.entry(name).or_default().extend(deps);
    }
    let mut seen = BTreeSet::new();
    let mut pending = vec![package.to_string()];
    while let Some(next) = pending.pop() {
        if seen.insert(next.clone()) {
            pending.extend(edges.get(&next).cloned().unwrap_or_default());
        }
    }
    seen
}

fn assert_none_of(package: &str, forbidden: &[&str]) {
    let reached = reachable(package);
    assert!(reached.len() > 5, "{package} not found in Cargo.lock");
    let found: Vec<&String> = reached
        .iter()
        .filter(|p| {
            forbidden
                .iter()
                .any(|f| p == f || p.starts_with(&format!("{f}-")))
        })
        .collect();
    assert!(found.is_empty(), "{package} reaches {found:?}");
}

#[test]
fn the_rig_installs_without_the_servers_stack() {
    assert_none_of(
        "attestca-rig",
        &["sqlx", "cryptoki", "axum", "prometheus", "attestca-server"],
    );
}

#[test]
fn the_core_has_no_http_database_or_network() {
    assert_none_of(
        "attestca-core",
        &[
            "sqlx",
            "cryptoki",
            "axum",
            "prometheus",
            "reqwest",
            "hyper",
            "tokio",
            "attestca-server",
            "attestca-rig",
        ],
    );
}

/// The server crate's top-level modules by layer, lowest first. A module may import from its
/// own layer or below; `asn1`, `attestation`, `issuance`, `pem`, `reason` and `verify` are the core's,
/// re-exported, and below everything.
const LAYERS: &[(&str, u8)] = &[
    ("metrics", 0),
    ("config", 1),
    ("activity", 1),
    ("store", 2),
    ("signer", 2),
    ("revocation", 3),
    ("ocsp", 3),
    ("transparency", 3),
    ("access", 4),
    ("registry", 4),
    ("enrollment", 4),
    ("evidence", 4),
    ("http", 5),
    ("est", 6),
    ("api", 6),
    ("setup", 7),
    ("server", 7),
    ("app", 8),
];
const CORE: &[&str] = &["asn1", "attestation", "issuance", "pem", "reason", "verify"];

/// Arrows upward that still exist, each with the issue that removes it. The test fails when one
/// disappears too, so that this list only shrinks.
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[];

/// `crate::<module>` references of each top-level module (unit tests excluded).
fn module_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_string();
            if top == "bin" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let refs = out.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    if let Some(group) = rest.strip_prefix('{') {
                        // `use crate::{a, b::c};` on one line (rustfmt keeps short groups so).
                        for item in group.split('}').next().unwrap_or_default().split(',') {
                            refs.insert(first_segment(item.trim()));
                        }
                    } else {
                        refs.insert(first_segment(rest));
                    }
                }
            }
            refs.remove(&top);
            refs.remove("");
        }
    }
    out
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_server_module_imports_from_a_layer_above_it() {
    let layer = |m: &str| LAYERS.iter().find(|(name, _)| *name == m).map(|(_, l)| *l);
    let mut upward = BTreeSet::new();
    for (module, imports) in module_imports() {
        let Some(own) = layer(&module) else {
            panic!("module {module} is not in LAYERS: give it a layer (and docs/architecture.md)");
        };
        for import in imports {
            if CORE.contains(&import.as_str()) {
                continue;
            }
            let Some(theirs) = layer(&import) else {
                panic!("{module} imports crate::{import}, which is not in LAYERS");
            };
            if theirs > own {
                upward.insert((module.clone(), import));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_BACK_EDGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(new.is_empty(), "imports from a layer above: {new:?}");
    let gone: Vec<_> = known.difference(&upward).collect();
    assert!(
        gone.is_empty(),
        "gone, remove from KNOWN_BACK_EDGES: {gone:?}"
    );
}

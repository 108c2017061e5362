//! `attestca log verify`: fetch a log over HTTP as any monitor would, re-derive it
//! ([`attestca_core::transparency::audit`]), and, given the CA's database, compare the
//! certificates in the log with the certificates the CA recorded.

use std::collections::{BTreeSet, HashMap};

use attestca_core::serial::Serial;
use attestca_core::transparency::audit;
use attestca_core::transparency::checkpoint::{self, LogKey, VerifiedCheckpoint};
use attestca_core::transparency::tiles::{self, TilePath};
use attestca_core::transparency::witness::{self, WitnessKey};
use der::Decode;
use serde::Serialize;

use super::client::BoundedClient;
use crate::store::Store;

/// One check of the verification, as printed (one JSON line each).
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// The verification's outcome: every check, and the checkpoint verified (to save for the
/// next run's `--since`).
pub struct Verification {
    pub checks: Vec<Check>,
    pub checkpoint: Option<Vec<u8>>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn push(&mut self, check: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            check: check.to_owned(),
            ok,
            detail: detail.into(),
        });
    }
}

/// Fetches and verifies the log at `url` (its prefix, ending in `/`), signed by `key`;
/// `since` is a checkpoint note saved by an earlier run; `store` the CA's database.
pub async fn verify_log(
    url: &str,
    key: &LogKey,
    witnesses: &[WitnessKey],
    max_entries: u64,
    since: Option<&[u8]>,
    store: Option<&Store>,
) -> Verification {
    let mut v = Verification {
        checks: Vec::new(),
        checkpoint: None,
    };
    let base = if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    };
    let client = match BoundedClient::new() {
        Ok(client) => client,
        Err(e) => {
            v.push("checkpoint", false, e);
            return v;
        }
    };
    let note = match fetch(&client, &format!("{base}checkpoint")).await {
        Ok(note) => note,
        Err(e) => {
            v.push("checkpoint", false, e);
            return v;
        }
    };
    let current = match checkpoint::verify_checkpoint(&note, key, key.name()) {
        Ok(c) => c,
        Err(e) => {
            v.push("checkpoint", false, e.to_string());
            return v;
        }
    };
    v.push(
        "checkpoint",
        true,
        format!("{} entries, signed by {}", current.size, key.name()),
    );
    if !witnesses.is_empty() {
        let missing = witness::missing_cosigners(&note, &current, witnesses);
        if missing.is_empty() {
            v.push(
                "witness",
                true,
                format!("cosigned by {} witness(es)", witnesses.len()),
            );
        } else {
            v.push(
                "witness",
                false,
                format!("no valid cosignature by {}", missing.join(", ")),
            );
        }
    }
    // The size is the log's word: a log that claims more entries than the monitor is
    // prepared to fetch is reported, not followed.
    if current.size > max_entries {
        v.push(
            "tree",
            false,
            format!(
                "the checkpoint claims {} entries, more than --max-entries {max_entries}",
                current.size
            ),
        );
        return v;
    }
    let earlier: Option<VerifiedCheckpoint> = match since {
        Some(old) => match checkpoint::verify_checkpoint(old, key, key.name()) {
            Ok(old) => Some(old),
            Err(e) => {
                v.push("since", false, format!("the earlier checkpoint: {e}"));
                return v;
            }
        },
        None => None,
    };
    let mut bundles = Vec::new();
    for path in tiles::bundles_of(current.size) {
        match fetch(&client, &format!("{base}{}", path.to_path())).await {
            Ok(data) => bundles.push(data),
            Err(e) => {
                v.push("entries", false, e);
                return v;
            }
        }
    }
    let mut served: HashMap<TilePath, Vec<u8>> = HashMap::new();
    for path in tiles::hash_tiles_of(current.size) {
        if let Ok(data) = fetch(&client, &format!("{base}{}", path.to_path())).await {
            served.insert(path, data);
        }
    }
    let audited = audit::audit(
        &current,
        &bundles,
        &mut |path| served.get(path).cloned(),
        earlier.as_ref(),
    );
    if audited.findings.is_empty() {
        v.push(
            "tree",
            true,
            format!(
                "{} entries re-hashed, {} tiles and the root recomputed",
                current.size,
                served.len()
            ),
        );
    }
    for finding in &audited.findings {
        let check = match finding {
            audit::Finding::Inconsistent { .. } => "consistency",
            _ => "tree",
        };
        v.push(check, false, finding.to_string());
    }
    if let Some(old) = &earlier
        && !audited
            .findings
            .iter()
            .any(|f| matches!(f, audit::Finding::Inconsistent { .. }))
    {
        v.push(
            "consistency",
            true,
            format!(
                "the checkpoint of size {} is a prefix of this log",
                old.size
            ),
        );
    }
    if let Some(store) = store
        && audited.findings.is_empty()
    {
        compare_with_database(&mut v, store, &audited.entries).await;
    }
    v.checkpoint = Some(note);
    v
}

/// Every logged certificate recorded by the CA, and every certificate the CA recorded since
/// the log's first entry either logged or pending integration.
async fn compare_with_database(
    v: &mut Verification,
    store: &Store,
    entries: &[attestca_core::transparency::entry::IssuanceEntry],
) {
    let mut logged = BTreeSet::new();
    for entry in entries {
        match x509_cert::Certificate::from_der(&entry.certificate) {
            Ok(c) => {
                logged.insert(Serial::of(c.tbs_certificate().serial_number()).into_string());
            }
            Err(e) => v.push(
                "database",
                false,
                format!("a logged certificate does not parse: {e}"),
            ),
        }
    }
    let since = entries.first().map_or(i64::MAX, |e| e.logged_at as i64);
    let recorded = match store.log_cross_check(since).await {
        Ok(r) => r,
        Err(e) => {
            v.push("database", false, e.to_string());
            return;
        }
    };
    let unknown: Vec<&String> = logged
        .iter()
        .filter(|s| !recorded.all.contains(*s))
        .collect();
    let missing: Vec<&String> = recorded
        .since
        .iter()
        .filter(|s| !logged.contains(*s) && !recorded.pending.contains(*s))
        .collect();
    if unknown.is_empty() {
        v.push(
            "database",
            true,
            format!(
                "every logged certificate ({}) is recorded by the CA",
                logged.len()
            ),
        );
    } else {
        v.push(
            "database",
            false,
            format!("logged but not recorded by the CA: {}", list(&unknown)),
        );
    }
    if missing.is_empty() {
        v.push(
            "completeness",
            true,
            format!(
                "every certificate recorded since the log began is logged or pending ({} pending)",
                recorded.pending.len()
            ),
        );
    } else {
        v.push(
            "completeness",
            false,
            format!("recorded by the CA but not in the log: {}", list(&missing)),
        );
    }
}

fn list(serials: &[&String]) -> String {
    let shown: Vec<&str> = serials.iter().take(20).map(|s| s.as_str()).collect();
    if serials.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            serials.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

async fn fetch(client: &BoundedClient, url: &str) -> Result<Vec<u8>, String> {
    client.get_found(url).await
}

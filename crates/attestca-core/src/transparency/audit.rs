//! Auditing a log from what it serves: every entry re-hashed, every hash tile recomputed from
//! the entries, the root compared with the signed checkpoint, and an earlier checkpoint shown
//! to be a prefix of this one (consistency). The fetching is the caller's; this is the
//! arithmetic, so that `attestca log verify` and the tests share it.

use std::collections::HashMap;

use super::checkpoint::VerifiedCheckpoint;
use super::entry::{IssuanceEntry, leaf_hash};
use super::tiles::{self, TileKind, TilePath};

/// One problem found in a log. Any of them means the log cannot be trusted as served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    #[error("entry bundles hold {found} entries, the checkpoint says {expected}")]
    EntryCount { expected: u64, found: u64 },
    #[error("entry {index} does not decode: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error("{path}: the served hashes differ from the entries' (tampered or forked)")]
    TileMismatch { path: String },
    #[error("{path}: not served")]
    TileMissing { path: String },
    #[error("the entries hash to a root other than the checkpoint's (size {size})")]
    RootMismatch { size: u64 },
    #[error("the earlier checkpoint (size {old_size}) is not a prefix of this log: {why}")]
    Inconsistent { old_size: u64, why: String },
}

/// What an audit established: the entries (in log order) of a log whose every served tile and
/// root matched them; or the findings.
#[derive(Debug)]
pub struct Audited {
    pub entries: Vec<IssuanceEntry>,
    pub findings: Vec<Finding>,
}

/// Audits a log of `checkpoint.size` entries given its entry bundles' data (in order, as
/// served: full bundles then the last partial one), and a reader of its hash tiles by path.
/// `earlier` is a checkpoint seen before (verified by the caller), to show consistency.
pub fn audit(
    checkpoint: &VerifiedCheckpoint,
    bundles: &[Vec<u8>],
    served_tile: &mut dyn FnMut(&TilePath) -> Option<Vec<u8>>,
    earlier: Option<&VerifiedCheckpoint>,
) -> Audited {
    let mut findings = Vec::new();
    let mut raw: Vec<&[u8]> = Vec::new();
    for bundle in bundles {
        match tiles::bundle_entries(bundle) {
            Ok(entries) => raw.extend(entries),
            Err(e) => findings.push(Finding::BadEntry {
                index: raw.len() as u64,
                reason: e.to_string(),
            }),
        }
    }
    if raw.len() as u64 != checkpoint.size {
        findings.push(Finding::EntryCount {
            expected: checkpoint.size,
            found: raw.len() as u64,
        });
        return Audited {
            entries: Vec::new(),
            findings,
        };
    }
    let mut entries = Vec::with_capacity(raw.len());
    for (index, bytes) in raw.iter().enumerate() {
        match IssuanceEntry::decode(bytes) {
            Ok(entry) => entries.push(entry),
            Err(e) => findings.push(Finding::BadEntry {
                index: index as u64,
                reason: e.to_string(),
            }),
        }
    }
    let leaves: Vec<[u8; 32]> = raw.iter().map(|e| leaf_hash(e)).collect();
    match tiles::integrate(0, &HashMap::new(), &leaves) {
        Ok(expected) => {
            if expected.root != checkpoint.root {
                findings.push(Finding::RootMismatch {
                    size: checkpoint.size,
                });
            }
            for (path, data) in expected.tiles {
                if !matches!(path.kind, TileKind::Hashes(_)) {
                    continue;
                }
                match served_tile(&path) {
                    Some(served) if served == data => {}
                    Some(_) => findings.push(Finding::TileMismatch {
                        path: path.to_path(),
                    }),
                    None => findings.push(Finding::TileMissing {
                        path: path.to_path(),
                    }),
                }
            }
        }
        Err(e) => findings.push(Finding::BadEntry {
            index: 0,
            reason: format!("the tree could not be built: {e}"),
        }),
    }
    if let Some(old) = earlier {
        if old.origin != checkpoint.origin {
            findings.push(Finding::Inconsistent {
                old_size: old.size,
                why: format!("another log ({})", old.origin),
            });
        } else if old.size > checkpoint.size {
            findings.push(Finding::Inconsistent {
                old_size: old.size,
                why: format!("the log shrank to {}", checkpoint.size),
            });
        } else {
            let prefix = tiles::integrate(0, &HashMap::new(), &leaves[..old.size as usize]);
            if !prefix.is_ok_and(|p| p.root == old.root) {
                findings.push(Finding::Inconsistent {
                    old_size: old.size,
                    why: "its root is not the root of this log's first entries (a fork)".into(),
                });
            }
        }
    }
    Audited { entries, findings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transparency::entry::AttestationRecord;

    fn log_of(n: u32) -> (Vec<Vec<u8>>, HashMap<TilePath, Vec<u8>>, VerifiedCheckpoint) {
        let entries: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                IssuanceEntry {
                    logged_at: u64::from(i),
                    certificate: i.to_be_bytes().to_vec(),
                    attestation: AttestationRecord {
                        operation: "simpleenroll".into(),
                        ..Default::default()
                    },
                }
                .encode()
                .expect("entry")
            })
            .collect();
        let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf_hash(e)).collect();
        let built = tiles::integrate(0, &HashMap::new(), &leaves).expect("tree");
        let bundles = tiles::append_to_bundles(0, None, &entries).expect("bundles");
        let checkpoint = VerifiedCheckpoint {
            origin: "ca".into(),
            size: u64::from(n),
            root: built.root,
            other_signatures: Vec::new(),
        };
        let mut served: HashMap<TilePath, Vec<u8>> = built.tiles.into_iter().collect();
        served.extend(bundles);
        (entries, served, checkpoint)
    }

    fn bundles_of(served: &HashMap<TilePath, Vec<u8>>) -> Vec<Vec<u8>> {
        let mut bundles: Vec<(&TilePath, &Vec<u8>)> = served
            .iter()
            .filter(|(p, _)| p.kind == TileKind::Entries)
            .collect();
        bundles.sort_by_key(|(p, _)| p.index);
        bundles.into_iter().map(|(_, d)| d.clone()).collect()
    }

    #[test]
    fn a_consistent_log_has_no_findings_and_each_tampering_is_found() {
        let (_, served, checkpoint) = log_of(600);
        let run = |served: &HashMap<TilePath, Vec<u8>>, earlier: Option<&VerifiedCheckpoint>| {
            let mut reader = |p: &TilePath| served.get(p).cloned();
            audit(&checkpoint, &bundles_of(served), &mut reader, earlier).findings
        };
        assert_eq!(run(&served, None), Vec::new());
        assert_eq!(run(&served, Some(&log_of(300).2)), Vec::new());

        let mut tampered = served.clone();
        let tile = TilePath {
            kind: TileKind::Hashes(0),
            index: 1,
            width: 256,
        };
        tampered.get_mut(&tile).expect("tile")[0] ^= 1;
        assert_eq!(
            run(&tampered, None),
            [Finding::TileMismatch {
                path: "tile/0/001".into()
            }]
        );

        let mut dropped = served.clone();
        let bundle = TilePath {
            kind: TileKind::Entries,
            index: 2,
            width: 88,
        };
        let data = dropped.get_mut(&bundle).expect("bundle");
        let first = 2 + usize::from(u16::from_be_bytes([data[0], data[1]]));
        data.drain(..first);
        assert!(matches!(
            run(&dropped, None)[..],
            [Finding::EntryCount { .. }]
        ));

        let mut forked = log_of(300).2;
        forked.root[0] ^= 1;
        assert!(matches!(
            run(&served, Some(&forked))[..],
            [Finding::Inconsistent { old_size: 300, .. }]
        ));
        let longer = log_of(700).2;
        assert!(matches!(
            run(&served, Some(&longer))[..],
            [Finding::Inconsistent { old_size: 700, .. }]
        ));
    }
}

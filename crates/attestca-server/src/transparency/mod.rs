//! The issuance log (docs/transparency.md): integrates the entries the ledger commits into the
//! Merkle tree, signs checkpoints, and serves the log as C2SP tlog-tiles.
//!
//! The ledger writes each certificate's entry in the certificate's own commit (`log_pending`),
//! so nothing is issued without its entry. This integrator, one instance at a time, appends
//! what is pending every `transparency.integrate_interval_ms`: one transaction reads the tree's
//! right edge, stores the changed tiles and entry bundles, records where each certificate
//! landed, signs the new checkpoint and deletes what it integrated.

pub mod client;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use attestca_core::serial::Serial;
use attestca_core::transparency::checkpoint::{self, LogKey};
use attestca_core::transparency::entry::{IssuanceEntry, leaf_hash};
use attestca_core::transparency::key::CheckpointSigner;
use attestca_core::transparency::tiles::{self, ProofRequest, TileKind, TilePath};
use attestca_core::transparency::witness::{self, WitnessKey};

use crate::store::log::{LogState, LogUpdate};
use crate::store::{Store, StoreError};

/// How long a witness may take to answer (C2SP tlog-witness: synchronous, low latency).
const WITNESS_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a missing cosignature is asked for again.
const WITNESS_RETRY: Duration = Duration::from_secs(5);

/// How much older than the newest checkpoint the served, fully cosigned one may be before
/// the newest is served without them.
const WITNESS_WAIT: Duration = Duration::from_secs(10);

/// The largest answer read from a witness (a few signature lines).
const WITNESS_ANSWER_MAX: usize = 16 * 1024;

/// Entries integrated per transaction at most (a backlog takes several rounds).
const INTEGRATE_MAX: i64 = 16_384;

/// Errors of the issuance log.
#[derive(Debug, thiserror::Error)]
pub enum TransparencyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint key: {0}")]
    Key(String),
    #[error("witness {0}")]
    Witness(String),
    /// What the log stores does not fit together (a tile or entry missing under a checkpoint).
    #[error("the stored log is inconsistent: {0}")]
    Inconsistent(String),
}

/// One CA's issuance log.
pub struct IssuanceLog {
    store: Store,
    /// `ca.name` (the path component `/log/<name>/`).
    name: String,
    /// The checkpoint origin: `ca.name` + `transparency.origin_suffix`.
    origin: String,
    key: LogKey,
    signer: Arc<dyn CheckpointSigner>,
    interval: Duration,
    witnesses: Vec<Witness>,
    client: client::BoundedClient,
    /// The size of the newest checkpoint signed, for the cosigner task.
    cosign_next: tokio::sync::watch::Sender<u64>,
    /// Database reads for the public log routes in progress: anyone can ask for tiles, and
    /// they must not take the connections enrollments need.
    public_reads: tokio::sync::Semaphore,
}

/// A witness asked to cosign each checkpoint, and the size this instance believes it last
/// cosigned (0 at start; a 409 answer tells the real one).
struct Witness {
    key: WitnessKey,
    url: String,
    cosigned: AtomicU64,
}

impl IssuanceLog {
    pub fn new(
        store: Store,
        ca_name: &str,
        config: &crate::config::TransparencyConfig,
        signer: Arc<dyn CheckpointSigner>,
    ) -> Result<Self, TransparencyError> {
        let origin = format!("{ca_name}{}", config.origin_suffix);
        let key = LogKey::new(&origin, signer.public_key())
            .map_err(|e| TransparencyError::Key(e.to_string()))?;
        let witnesses = config
            .witnesses
            .iter()
            .map(|w| {
                Ok(Witness {
                    key: WitnessKey::from_verifier_key(&w.key)
                        .map_err(|e| TransparencyError::Witness(format!("{}: {e}", w.url)))?,
                    url: format!("{}/add-checkpoint", w.url.trim_end_matches('/')),
                    cosigned: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, TransparencyError>>()?;
        Ok(Self {
            store,
            name: ca_name.to_owned(),
            origin,
            key,
            signer,
            interval: Duration::from_millis(config.integrate_interval_ms.max(10)),
            witnesses,
            client: client::BoundedClient::with_limits(WITNESS_TIMEOUT, WITNESS_ANSWER_MAX)
                .map_err(TransparencyError::Witness)?,
            cosign_next: tokio::sync::watch::Sender::new(0),
            public_reads: tokio::sync::Semaphore::new(config.max_concurrent_reads.max(1)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key a relying party configures (`<origin>+<id>+<key>`).
    pub fn verifier_key(&self) -> String {
        self.key.verifier_key()
    }

    /// Integrates what is pending; returns the new tree size, or `None` when there was
    /// nothing to do or another instance holds the integrator lock.
    pub async fn integrate_once(&self) -> Result<Option<u64>, TransparencyError> {
        let origin = self.origin.clone();
        let key = self.key.clone();
        let signer = Arc::clone(&self.signer);
        let integrated = self
            .store
            .integrate_log(INTEGRATE_MAX, tiles::edge_tiles, move |state| {
                build(state, &origin, &key, signer.as_ref())
            })
            .await?;
        if let Some(size) = integrated {
            crate::metrics::METRICS.log_size.set(size as i64);
            crate::metrics::METRICS
                .log_checkpoint_timestamp
                .set(attestca_core::time::unix_now() as f64);
            // The witnesses are asked by the cosigner task (`run`), so that a slow or absent
            // witness never delays integration.
            self.cosign_next.send_replace(size);
        }
        Ok(integrated)
    }

    /// Asks the witnesses to cosign the newest checkpoint: at start, after each new one
    /// (the newest only, when several were signed during a round), and every
    /// [`WITNESS_RETRY`] while a witness's cosignature is missing.
    async fn cosigner(&self) {
        if self.witnesses.is_empty() {
            return;
        }
        let mut next = self.cosign_next.subscribe();
        loop {
            if let Err(e) = self.cosign().await {
                tracing::warn!(error = %e, "cosigning the checkpoint failed");
            }
            tokio::select! {
                changed = next.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(WITNESS_RETRY) => {}
            }
        }
    }

    /// Asks the witnesses whose cosignature the newest checkpoint lacks, all at once, and
    /// stores it with the cosignatures that verify. A witness that refuses or does not answer
    /// is counted and logged, and asked again later.
    async fn cosign(&self) -> Result<(), TransparencyError> {
        let Some(note) = self.store.log_checkpoint().await? else {
            return Ok(());
        };
        let checkpoint = checkpoint::verify_checkpoint(&note, &self.key, &self.origin)
            .map_err(|e| TransparencyError::Inconsistent(format!("checkpoint: {e}")))?;
        let missing: Vec<&Witness> = self
            .witnesses
            .iter()
            .filter(|w| !cosigned_by(&note, w.key.name()))
            .collect();
        let answers = futures::future::join_all(
            missing
                .iter()
                .map(|witness| self.ask(witness, &note, checkpoint.size)),
        )
        .await;
        let mut cosigned = note.clone();
        for (witness, answer) in missing.iter().zip(answers) {
            let outcome = match answer {
                Ok(line) => {
                    cosigned.extend_from_slice(line.as_bytes());
                    "cosigned"
                }
                Err(WitnessRefusal::Refused(why)) => {
                    tracing::warn!(witness = witness.key.name(), size = checkpoint.size, reason = %why, "witness refused the checkpoint");
                    "refused"
                }
                Err(WitnessRefusal::Unreachable(why)) => {
                    tracing::warn!(witness = witness.key.name(), size = checkpoint.size, reason = %why, "witness unreachable");
                    "unreachable"
                }
            };
            crate::metrics::METRICS
                .log_cosignature_requests
                .with_label_values(&[witness.key.name(), outcome])
                .inc();
        }
        if cosigned.len() > note.len() {
            self.store
                .log_cosign_checkpoint(checkpoint.size, &note, &cosigned)
                .await?;
        }
        Ok(())
    }

    /// One witness's cosignature line for the checkpoint `note` of `size` (C2SP tlog-witness
    /// `add-checkpoint`), proving consistency from the size it last cosigned.
    async fn ask(
        &self,
        witness: &Witness,
        note: &[u8],
        size: u64,
    ) -> Result<String, WitnessRefusal> {
        let text = witness::note_text(note)
            .ok_or_else(|| WitnessRefusal::Refused("the checkpoint has no body".into()))?;
        // Twice at most: a 409 tells the size the witness holds, and the second request
        // proves consistency from there.
        for _ in 0..2 {
            let old = witness.cosigned.load(Ordering::Relaxed);
            if old > size {
                return Err(WitnessRefusal::Refused(format!(
                    "the witness holds a larger checkpoint ({old}) than this instance's ({size})"
                )));
            }
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                self.prove(ProofRequest::Consistency { old, new: size })
                    .await
                    .map_err(|e| WitnessRefusal::Refused(e.to_string()))?
            };
            let body = witness::add_checkpoint_body(old, &proof, note);
            let (status, answer) = self
                .client
                .post_answer(&witness.url, "text/plain; charset=utf-8", &body)
                .await
                .map_err(WitnessRefusal::Unreachable)?;
            let answer = String::from_utf8_lossy(&answer);
            match status {
                200 => {
                    let line = answer
                        .lines()
                        .find(|line| witness.key.verify_line(line, text).is_ok())
                        .ok_or_else(|| {
                            WitnessRefusal::Refused("no cosignature that verifies".into())
                        })?;
                    witness.cosigned.store(size, Ordering::Relaxed);
                    return Ok(format!(
                        "{line}
"
                    ));
                }
                409 => match answer.trim().parse::<u64>() {
                    Ok(held) if held != old => witness.cosigned.store(held, Ordering::Relaxed),
                    _ => {
                        return Err(WitnessRefusal::Refused(format!("409: {}", answer.trim())));
                    }
                },
                _ => {
                    return Err(WitnessRefusal::Refused(format!(
                        "HTTP {status}: {}",
                        answer.trim()
                    )));
                }
            }
        }
        Err(WitnessRefusal::Refused(
            "the witness's size kept changing".into(),
        ))
    }

    /// A proof's hashes, from the stored tiles.
    async fn prove(&self, request: ProofRequest) -> Result<Vec<[u8; 32]>, TransparencyError> {
        let inconsistent = |e: String| TransparencyError::Inconsistent(e);
        let mut hashes = std::collections::HashMap::new();
        for path in request.tiles().map_err(|e| inconsistent(e.to_string()))? {
            let TileKind::Hashes(level) = path.kind else {
                continue;
            };
            let data = self
                .tile(&path)
                .await?
                .ok_or_else(|| inconsistent(format!("{} missing", path.to_path())))?;
            hashes.insert((level, path.index), data);
        }
        request
            .prove(&hashes)
            .map_err(|e| inconsistent(e.to_string()))
    }

    /// Integrates every interval until the task is dropped. A round takes everything pending
    /// (up to [`INTEGRATE_MAX`]), so under load one checkpoint covers an interval's
    /// enrollments; only a backlog of more than a round is worked off without waiting.
    pub async fn run(self: Arc<Self>) {
        // The cosigner runs beside the integrator in this task, so that stopping the task
        // (the CA's jobs at shutdown) stops both.
        tokio::join!(self.cosigner(), self.integrator());
    }

    async fn integrator(&self) {
        loop {
            if let Err(e) = self.integrate_once().await {
                tracing::warn!(error = %e, "transparency log integration failed");
            }
            let pending = self.store.log_pending_count().await;
            if let Ok(pending) = pending {
                crate::metrics::METRICS.log_pending.set(pending);
            }
            if !pending.is_ok_and(|p| p >= INTEGRATE_MAX) {
                tokio::time::sleep(self.interval).await;
            }
        }
    }

    /// A permit for one public read (the plain-HTTP log routes), if fewer than
    /// `transparency.max_concurrent_reads` are in progress.
    pub fn public_read(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.public_reads.try_acquire().ok()
    }

    /// The checkpoint to serve: the newest one; with witnesses configured, the newest one
    /// every witness has cosigned, unless that was signed more than [`WITNESS_WAIT`] ago
    /// (witnesses down: the newest, with the log's own signature only).
    pub async fn checkpoint(&self) -> Result<Option<Vec<u8>>, TransparencyError> {
        if self.witnesses.is_empty() {
            return Ok(self.store.log_checkpoint().await?);
        }
        let recent = self.store.log_recent_checkpoints(64).await?;
        let Some((newest, _)) = recent.first().cloned() else {
            return Ok(None);
        };
        let witnessed = recent.into_iter().find(|(note, _)| {
            self.witnesses
                .iter()
                .all(|w| cosigned_by(note, w.key.name()))
        });
        let now = attestca_core::time::unix_now();
        Ok(Some(match witnessed {
            Some((note, at)) if note == newest || now - at <= WITNESS_WAIT.as_secs() as i64 => note,
            _ => newest,
        }))
    }

    /// A tile or entry bundle by its path below the log prefix (`tile/…`): full tiles only
    /// once full, partial ones as the first W hashes or entries of what is stored.
    pub async fn tile(&self, path: &TilePath) -> Result<Option<Vec<u8>>, TransparencyError> {
        let Some(stored) = self.store.log_tile(path.kind, path.index).await? else {
            return Ok(None);
        };
        Ok(tiles::prefix_of(path.kind, &stored, path.width))
    }
}

/// Whether `note` carries a signature line by `name` (the cosigner stores only lines that
/// verified).
fn cosigned_by(note: &[u8], name: &str) -> bool {
    let prefix = format!("\u{2014} {name} ");
    String::from_utf8_lossy(note)
        .lines()
        .any(|line| line.starts_with(&prefix))
}

/// Why a witness gave no cosignature.
enum WitnessRefusal {
    /// It answered, but not with a cosignature that verifies (or the log could not ask).
    Refused(String),
    /// No answer.
    Unreachable(String),
}

/// A certificate's place in the log, proven: what `GET /api/v1/certificates/{serial}/attestation`
/// answers. Anyone holding the log's verifier key can check it offline.
#[derive(Debug)]
pub struct LoggedCertificate {
    pub index: u64,
    pub entry: IssuanceEntry,
    /// The entry's bytes as the log hashes them.
    pub entry_bytes: Vec<u8>,
    /// The signed checkpoint the proof is against (the note's text).
    pub checkpoint: String,
    pub tree_size: u64,
    pub root: [u8; 32],
    /// RFC 9162 §2.1.3 inclusion proof of `index` in the tree of `tree_size`.
    pub inclusion_proof: Vec<[u8; 32]>,
}

impl IssuanceLog {
    /// Where a certificate landed in the log, once integrated.
    pub async fn index_of(&self, serial: &Serial) -> Result<Option<u64>, TransparencyError> {
        Ok(self.store.log_index_of(serial.as_str()).await?)
    }

    /// A certificate's entry with its inclusion proof under the newest checkpoint; `None` when
    /// the certificate is not (yet) in the log.
    pub async fn logged(
        &self,
        serial: &Serial,
    ) -> Result<Option<LoggedCertificate>, TransparencyError> {
        // The index before the checkpoint: the integrator records both in one transaction,
        // so the checkpoint read after covers the index.
        let Some(index) = self.index_of(serial).await? else {
            return Ok(None);
        };
        let note = self
            .checkpoint()
            .await?
            .ok_or_else(|| TransparencyError::Inconsistent("no checkpoint".into()))?;
        let checkpoint = checkpoint::verify_checkpoint(&note, &self.key, &self.origin)
            .map_err(|e| TransparencyError::Inconsistent(format!("checkpoint: {e}")))?;
        if index >= checkpoint.size {
            // Integrated, but the served checkpoint (one every witness cosigned) is older.
            return Ok(None);
        }
        let inconsistent = |e: String| TransparencyError::Inconsistent(e);
        let bundle_path = tiles::bundle_of(index, checkpoint.size);
        let bundle = self
            .tile(&bundle_path)
            .await?
            .ok_or_else(|| inconsistent(format!("{} missing", bundle_path.to_path())))?;
        let entry_bytes = tiles::bundle_entries(&bundle)
            .map_err(|e| inconsistent(e.to_string()))?
            .get((index % tiles::TILE_WIDTH) as usize)
            .map(|e| e.to_vec())
            .ok_or_else(|| inconsistent(format!("entry {index} missing")))?;
        let entry = IssuanceEntry::decode(&entry_bytes).map_err(|e| inconsistent(e.to_string()))?;
        let inclusion_proof = self
            .prove(ProofRequest::Inclusion {
                index,
                size: checkpoint.size,
            })
            .await?;
        Ok(Some(LoggedCertificate {
            index,
            entry,
            entry_bytes,
            checkpoint: String::from_utf8_lossy(&note).into_owned(),
            tree_size: checkpoint.size,
            root: checkpoint.root,
            inclusion_proof,
        }))
    }
}

/// Computes the appended tree and signs its checkpoint (inside the integration transaction).
fn build(
    state: &LogState,
    origin: &str,
    key: &LogKey,
    signer: &dyn CheckpointSigner,
) -> Result<LogUpdate, String> {
    let leaves: Vec<[u8; 32]> = state.pending.iter().map(|p| leaf_hash(&p.entry)).collect();
    let integrated =
        tiles::integrate(state.size, &state.edge, &leaves).map_err(|e| e.to_string())?;
    let entries: Vec<Vec<u8>> = state.pending.iter().map(|p| p.entry.clone()).collect();
    let bundles = tiles::append_to_bundles(state.size, state.partial_bundle.as_deref(), &entries)
        .map_err(|e| e.to_string())?;
    let text = checkpoint::checkpoint_text(origin, integrated.size, &integrated.root)
        .map_err(|e| e.to_string())?;
    let signature = signer.sign(&text).map_err(|e| e.to_string())?;
    let note = checkpoint::signed_checkpoint(&text, key, &signature).map_err(|e| e.to_string())?;
    let mut all_tiles = integrated.tiles;
    all_tiles.extend(bundles);
    Ok(LogUpdate {
        size: integrated.size,
        root: integrated.root,
        note,
        tiles: all_tiles,
    })
}

//! A CA key inside a PKCS#11 token (an HSM; SoftHSM in tests), used through a pool of sessions
//! that heals itself when the token goes away and comes back.
//!
//! PKCS#11 facts this module is shaped by: a `Session` may be moved between threads but not
//! shared, so sessions are pooled; tokens move between slot ids when initialised, so the token
//! is found by label; closing the last session logs the application out, so sessions stay open
//! for the life of the process; SoftHSM has no `CKM_ECDSA_SHA256`, so the host hashes and the
//! token signs the digest with `CKM_ECDSA`, which returns raw `r‖s`.
//!
//! Faults, and why recovery looks the way it does:
//! - A network HSM restart, a session the HSM dropped, a token that was pulled or
//!   re-initialised: the session, its login and its object handles are gone. A session whose
//!   operation fails is therefore never put back in the pool; the next request opens a new one,
//!   logs in, and finds the key again *by label*.
//! - Some libraries (SoftHSM among them) do not notice a token that comes back after it went
//!   away until they are initialised again. When the token cannot be found or opened, the
//!   module is finalised and initialised again ([`Module::reinitialize`]); every key of that
//!   module then opens fresh sessions. Sessions of the old initialisation are forgotten, never
//!   closed: their handle numbers may already belong to new sessions.
//! - While the key is unavailable, requests are refused at once (no waiting on a dead token);
//!   a new attempt is made after a backoff (0.25 s doubling to 4 s), and the health monitor
//!   calls [`Signer::recover`] every second, so service comes back by itself within about a
//!   second of the token's return.
//! - A key found again by label could be another key (a re-initialised token with a new key
//!   under the old label). Every new session proves its key before use: it signs a random
//!   challenge and the signature must verify under the public key the CA certificate
//!   certifies. A session that fails the proof is closed and the signer stays unavailable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::Encode;
use secrecy::ExposeSecret;
use x509_cert::SubjectPublicKeyInfo;

use super::{CaKeyAlgorithm, Signer, SignerError};
use crate::config::Pkcs11SignerConfig;

fn p11(context: &str) -> impl FnOnce(P11Error) -> SignerError + '_ {
    move |e| SignerError::Pkcs11(format!("{context}: {e}"))
}

/// How long a signing request waits for a free session before giving up.
const SESSION_WAIT: Duration = Duration::from_secs(10);
/// The first wait before a request may try a failed token again; it doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts made by requests (the monitor tries every second).
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// How long start-up waits for a token the library does not see.
const START_WAIT: Duration = Duration::from_secs(10);

/// One loaded PKCS#11 library, shared by every key that lives in it (the CA key and the OCSP
/// responder key): a library is initialised once per process, so re-initialising it is a
/// decision for all of its keys.
struct Module {
    path: PathBuf,
    /// Held for reading during every call into the library; for writing while it is
    /// finalised and initialised again.
    state: RwLock<ModuleState>,
}

struct ModuleState {
    /// `None` after a re-initialisation failed: the next attempt loads it again.
    context: Option<Pkcs11>,
    /// Bumped by every re-initialisation: sessions of an older generation are dead.
    generation: u64,
}

/// The process's modules, by path.
fn modules() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES.get_or_init(Default::default)
}

impl Module {
    /// The loaded and initialised module at `path` (loaded on first use).
    fn get(path: &Path) -> Result<Arc<Self>, SignerError> {
        let mut all = modules()
            .lock()
            .map_err(|_| SignerError::Pkcs11("module registry poisoned".into()))?;
        if let Some(module) = all.get(path) {
            return Ok(Arc::clone(module));
        }
        let module = Arc::new(Self {
            path: path.to_owned(),
            state: RwLock::new(ModuleState {
                context: Some(load(path)?),
                generation: 0,
            }),
        });
        all.insert(path.to_owned(), Arc::clone(&module));
        Ok(module)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, ModuleState>, SignerError> {
        self.state
            .read()
            .map_err(|_| SignerError::Pkcs11("module state poisoned".into()))
    }

    /// A logged-in session on the configured token, at start-up. A token the library does
    /// not see for a moment (SoftHSM while another process writes the token, a network HSM
    /// still connecting) is waited for, with the library initialised again between attempts,
    /// for up to [`START_WAIT`]; a wrong PIN or a missing key is not.
    fn open_at_start(
        &self,
        config: &Pkcs11SignerConfig,
    ) -> Result<(Session, std::sync::RwLockReadGuard<'_, ModuleState>), SignerError> {
        // The generation whose attempt failed: initialised again before the next attempt.
        let mut failed: Option<u64> = None;
        waiting_for_token(&config.token_label, || {
            if let Some(generation) = failed.take() {
                self.reinitialize(generation)?;
            }
            let state = self.read()?;
            let opened = match state.context.as_ref() {
                Some(context) => open_logged_in(context, config),
                None => Err(not_loaded()),
            };
            match opened {
                Ok(session) => Ok((session, state)),
                Err(e) => {
                    failed = Some(state.generation);
                    Err(e)
                }
            }
        })
    }

    /// Finalises and initialises the library again, unless someone already did since
    /// `seen_generation`.
    fn reinitialize(&self, seen_generation: u64) -> Result<(), SignerError> {
        let mut state = self
            .state
            .write()
            .map_err(|_| SignerError::Pkcs11("module state poisoned".into()))?;
        if state.generation != seen_generation && state.context.is_some() {
            return Ok(());
        }
        if let Some(old) = state.context.take() {
            // Every session of this generation dies here; their owners forget them.
            if let Err(e) = old.finalize() {
                tracing::debug!(error = %e, "C_Finalize before re-initialising failed");
            }
        }
        state.generation += 1;
        tracing::debug!(module = %self.path.display(), generation = state.generation, "re-initialising the PKCS#11 module");
        state.context = Some(load(&self.path)?);
        Ok(())
    }
}

fn load(path: &Path) -> Result<Pkcs11, SignerError> {
    let context = Pkcs11::new(path).map_err(|e| {
        SignerError::Config(format!(
            "cannot load PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Initialised by someone else in this process (a library linked twice): usable.
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(e) => Err(p11("C_Initialize")(e)),
    }
}

/// A session with the private key's handle as this session sees it.
struct PooledSession {
    session: Session,
    key: ObjectHandle,
    generation: u64,
}

impl PooledSession {
    /// Ends a session that is no longer wanted. A session of an older generation is
    /// forgotten, not closed: the library was initialised again and its handle may now name
    /// someone else's session.
    fn discard(self, current_generation: u64) {
        if self.generation == current_generation {
            drop(self.session);
        } else {
            std::mem::forget(self.session);
        }
    }
}

/// Sessions not in use, and how many exist in all (idle and in use).
struct Pool {
    idle: Vec<PooledSession>,
    open: usize,
}

impl Pool {
    /// Takes a session made stale by a re-initialisation out of the count, and ends it.
    fn forget(&mut self, session: PooledSession, current_generation: u64) {
        self.open = self.open.saturating_sub(1);
        sessions_gauge().dec();
        session.discard(current_generation);
    }
}

/// Whether the key works, and when a request may try again after it did not.
struct Availability {
    available: AtomicBool,
    /// The token refused the PIN: no more attempts (each could count towards a lockout).
    pin_refused: AtomicBool,
    consecutive_failures: AtomicU32,
    retry_at: Mutex<Instant>,
    down_since: Mutex<Option<Instant>>,
}

/// The issuing key in a PKCS#11 token.
pub struct Pkcs11Signer {
    module: Arc<Module>,
    config: Pkcs11SignerConfig,
    spki: SubjectPublicKeyInfo,
    pool: Mutex<Pool>,
    returned: Condvar,
    availability: Availability,
}

impl Pkcs11Signer {
    /// Opens the token and finds the configured key pair.
    pub fn open(config: &Pkcs11SignerConfig) -> Result<Self, SignerError> {
        let module = Module::get(&config.module)?;
        let spki = {
            let (session, state) = module.open_at_start(config)?;
            let public = find_key(&session, config, ObjectClass::PUBLIC_KEY)?.ok_or_else(|| {
                SignerError::KeyNotFound(format!(
                    "no public key labelled {:?} in token {:?}; run `attestca init` first",
                    config.key_label, config.token_label
                ))
            })?;
            let spki = read_public_key(&session, public, config.algorithm)?;
            drop((session, state));
            spki
        };
        Self::with_sessions(module, config, spki)
    }

    /// Generates a key pair inside the token (sensitive, non-extractable, token object), then
    /// opens it. Refuses if a key with the label exists.
    pub fn generate(config: &Pkcs11SignerConfig) -> Result<Self, SignerError> {
        let module = Module::get(&config.module)?;
        let spki = {
            let (session, state) = module.open_at_start(config)?;
            let spki = generate_key_pair(&session, config)?;
            drop((session, state));
            spki
        };
        tracing::info!(token = %config.token_label, key = %config.key_label, "generated the CA key inside the token (sensitive, non-extractable)");
        Self::with_sessions(module, config, spki)
    }

    /// Opens the first session (which proves the key), the rest on demand.
    fn with_sessions(
        module: Arc<Module>,
        config: &Pkcs11SignerConfig,
        spki: SubjectPublicKeyInfo,
    ) -> Result<Self, SignerError> {
        let signer = Self {
            module,
            config: config.clone(),
            spki,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
            availability: Availability {
                available: AtomicBool::new(true),
                pin_refused: AtomicBool::new(false),
                consecutive_failures: AtomicU32::new(0),
                retry_at: Mutex::new(Instant::now()),
                down_since: Mutex::new(None),
            },
        };
        // The token can vanish again between the opening session and this one (SoftHSM hides
        // it from a process that reads while another writes to it): at start-up, the first
        // pooled session waits for it as `open_at_start` does.
        let first = waiting_for_token(&config.token_label, || signer.new_session())?;
        signer.pool()?.open = 1;
        signer.checkin(first);
        tracing::info!(token = %config.token_label, key = %config.key_label, sessions = config.sessions.max(1), "PKCS#11 signer ready");
        Ok(signer)
    }

    fn pool(&self) -> Result<std::sync::MutexGuard<'_, Pool>, SignerError> {
        self.pool
            .lock()
            .map_err(|_| SignerError::Pkcs11("session pool poisoned".into()))
    }

    fn generation(&self) -> u64 {
        self.module.read().map(|s| s.generation).unwrap_or(u64::MAX)
    }

    /// A session to sign with: an idle one of the current generation, else a new one while
    /// fewer than `signer.pkcs11.sessions` exist, else the next one returned.
    fn checkout(&self) -> Result<PooledSession, SignerError> {
        let generation = self.generation();
        let deadline = Instant::now() + SESSION_WAIT;
        let mut pool = self.pool()?;
        loop {
            if let Some(session) = pool.idle.pop() {
                if session.generation == generation {
                    in_use().inc();
                    return Ok(session);
                }
                pool.forget(session, generation);
                continue;
            }
            if pool.open < self.config.sessions.max(1) {
                pool.open += 1;
                drop(pool);
                return match self.new_session() {
                    Ok(session) => {
                        in_use().inc();
                        Ok(session)
                    }
                    Err(e) => {
                        let mut pool = self.pool()?;
                        pool.open = pool.open.saturating_sub(1);
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(SignerError::SessionsBusy);
            }
            pool = self
                .returned
                .wait_timeout(pool, wait)
                .map_err(|_| SignerError::Pkcs11("session pool poisoned".into()))?
                .0;
        }
    }

    fn checkin(&self, session: PooledSession) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.idle.push(session);
            self.returned.notify_one();
        }
    }

    /// Ends a session that failed, and the idle ones with it: a fault that broke one session
    /// (a token gone, a login lost) has usually broken them all.
    fn discard_after_failure(&self, failed: PooledSession) {
        let generation = self.generation();
        let idle = match self.pool.lock() {
            Ok(mut pool) => {
                let idle = std::mem::take(&mut pool.idle);
                pool.open = pool.open.saturating_sub(1 + idle.len());
                self.returned.notify_all();
                idle
            }
            Err(_) => Vec::new(),
        };
        sessions_gauge().sub(1 + idle.len() as i64);
        failed.discard(generation);
        for session in idle {
            session.discard(generation);
        }
    }

    /// Opens a session, logs in, finds the key by label and proves it is the configured key.
    /// When the token cannot be found or opened, initialises the module again and retries
    /// once.
    fn new_session(&self) -> Result<PooledSession, SignerError> {
        let generation = {
            let state = self.module.read()?;
            if let Some(context) = state.context.as_ref() {
                match open_logged_in(context, &self.config) {
                    Ok(session) => return self.prove(session, state.generation),
                    Err(e) if !is_token_fault(&e) => return Err(e),
                    Err(e) => {
                        // Once a second while the token is away: the outage itself is logged
                        // once, by the availability bookkeeping.
                        tracing::debug!(token = %self.config.token_label, error = %e, "the token cannot be opened");
                    }
                }
            }
            state.generation
        };
        self.module.reinitialize(generation)?;
        let state = self.module.read()?;
        let context = state.context.as_ref().ok_or_else(not_loaded)?;
        let session = open_logged_in(context, &self.config)?;
        self.prove(session, state.generation)
    }

    /// Finds the private key in a new session and proves it: a signature over a random
    /// challenge must verify under the configured public key.
    fn prove(&self, session: Session, generation: u64) -> Result<PooledSession, SignerError> {
        let key = find_private(&session, &self.config)?;
        let mut challenge = [0u8; 32];
        aws_lc_rs::rand::fill(&mut challenge)
            .map_err(|_| SignerError::Pkcs11("no randomness for the key proof".into()))?;
        let algorithm = self.config.algorithm;
        let raw = session
            .sign(&Mechanism::Ecdsa, key, &algorithm.digest(&challenge))
            .map_err(p11("C_Sign (key proof)"))?;
        let der = algorithm.raw_signature_to_der(&raw)?;
        if !crate::verify::verify(
            &self.spki,
            algorithm.signature_algorithm().oid,
            &challenge,
            &der,
        ) {
            tracing::error!(token = %self.config.token_label, key = %self.config.key_label, "the key found under the configured label is not the configured key; it will not be used");
            return Err(SignerError::KeyMismatch(format!(
                "the private key labelled {:?} in token {:?} does not match the certified public key",
                self.config.key_label, self.config.token_label
            )));
        }
        sessions_gauge().inc();
        Ok(PooledSession {
            session,
            key,
            generation,
        })
    }

    /// Signs `digest`, discarding the session on failure. `gated`: refuse at once while the
    /// key is down and its backoff has not passed (requests); the health monitor is not gated.
    fn sign_digest(&self, digest: &[u8], gated: bool) -> Result<Vec<u8>, SignerError> {
        if self.availability.pin_refused.load(Ordering::SeqCst) {
            return Err(SignerError::Unavailable(
                "the token refused the PIN: not trying again (an HSM locks the user after a few \
                 wrong PINs); correct the PIN and restart"
                    .into(),
            ));
        }
        if gated {
            self.availability.admit()?;
        }
        let result = self.sign_with_pool(digest);
        match &result {
            Ok(_) => self.availability.succeeded(&self.config),
            Err(e) => self.availability.failed(&self.config, e),
        }
        result
    }
}

impl Pkcs11Signer {
    /// One signature from a pooled session. A session made stale by a re-initialisation
    /// between checkout and use (another key of the module recovering) is replaced, not
    /// counted as a failure.
    fn sign_with_pool(&self, digest: &[u8]) -> Result<Vec<u8>, SignerError> {
        for _ in 0..3 {
            let pooled = self.checkout()?;
            if !self.config.simulated_latency.is_zero() {
                // A network HSM's round trip: the session is busy, this thread waits.
                std::thread::sleep(self.config.simulated_latency);
            }
            let signed = {
                let state = self.module.read()?;
                (state.generation == pooled.generation).then(|| {
                    pooled
                        .session
                        .sign(&Mechanism::Ecdsa, pooled.key, digest)
                        .map_err(p11("C_Sign"))
                })
            };
            in_use().dec();
            match signed {
                Some(Ok(raw)) => {
                    self.checkin(pooled);
                    return Ok(raw);
                }
                Some(Err(e)) => {
                    self.discard_after_failure(pooled);
                    return Err(e);
                }
                None => {
                    let generation = self.generation();
                    self.pool()?.forget(pooled, generation);
                }
            }
        }
        Err(SignerError::TokenFault(
            "the PKCS#11 module keeps being re-initialised".into(),
        ))
    }
}

impl Availability {
    /// Refuses at once while the key is down and the backoff has not passed; otherwise lets
    /// this caller try, and moves the next try back by the backoff (one prober at a time).
    fn admit(&self) -> Result<(), SignerError> {
        if self.available.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut retry_at = self
            .retry_at
            .lock()
            .map_err(|_| SignerError::Pkcs11("availability poisoned".into()))?;
        let now = Instant::now();
        if now < *retry_at {
            let since = self
                .down_since
                .lock()
                .ok()
                .and_then(|d| *d)
                .map_or(0, |d| d.elapsed().as_secs());
            return Err(SignerError::Unavailable(format!(
                "the signing key has been unavailable for {since} s; retrying in the background"
            )));
        }
        *retry_at = now + self.backoff();
        Ok(())
    }

    fn backoff(&self) -> Duration {
        let failures = self.consecutive_failures.load(Ordering::SeqCst).min(8);
        FIRST_BACKOFF
            .saturating_mul(1 << failures.saturating_sub(1))
            .min(MAX_BACKOFF)
    }

    fn failed(&self, config: &Pkcs11SignerConfig, error: &SignerError) {
        // Refused without trying, or every session busy: says nothing about the token.
        if matches!(
            error,
            SignerError::Unavailable(_) | SignerError::SessionsBusy
        ) {
            return;
        }
        if matches!(error, SignerError::PinRefused(_)) {
            self.pin_refused.store(true, Ordering::SeqCst);
            tracing::error!(token = %config.token_label, error = %error, "the token refused the PIN; the CA will not log in again until it is restarted with the right PIN (an HSM locks the user after a few wrong PINs)");
        }
        self.consecutive_failures.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut retry_at) = self.retry_at.lock() {
            *retry_at = Instant::now() + self.backoff();
        }
        if self.available.swap(false, Ordering::SeqCst) {
            if let Ok(mut since) = self.down_since.lock() {
                *since = Some(Instant::now());
            }
            tracing::error!(token = %config.token_label, key = %config.key_label, error = %error, "the signing key is unavailable; signing requests are refused until it is back");
        }
    }

    fn succeeded(&self, config: &Pkcs11SignerConfig) {
        self.consecutive_failures.store(0, Ordering::SeqCst);
        if !self.available.swap(true, Ordering::SeqCst) {
            let down_for = self
                .down_since
                .lock()
                .ok()
                .and_then(|mut d| d.take())
                .map_or(0.0, |d| d.elapsed().as_secs_f64());
            tracing::info!(token = %config.token_label, key = %config.key_label, down_secs = down_for, "the signing key is available again");
        }
    }
}

fn not_loaded() -> SignerError {
    SignerError::TokenFault(
        "the PKCS#11 module is not loaded (its last initialisation failed)".into(),
    )
}

/// `attestca_signer_sessions_in_use{backend="pkcs11"}`: summed over every PKCS#11 key.
fn in_use() -> prometheus::IntGauge {
    crate::metrics::METRICS
        .signer_sessions_in_use
        .with_label_values(&["pkcs11"])
}

/// `attestca_signer_sessions{backend="pkcs11"}`: sessions open, summed over every key.
fn sessions_gauge() -> prometheus::IntGauge {
    crate::metrics::METRICS
        .signer_sessions
        .with_label_values(&["pkcs11"])
}

/// Whether an error opening the token means the token (or the library's view of it) is
/// gone, so that initialising the module again may help. A wrong PIN or a missing key is not.
/// Runs `attempt` until it succeeds, fails with something other than a token fault, or
/// [`START_WAIT`] has passed, sleeping with a doubling backoff between attempts: how start-up
/// waits for a token the library does not see for a moment.
fn waiting_for_token<T>(
    token_label: &str,
    mut attempt: impl FnMut() -> Result<T, SignerError>,
) -> Result<T, SignerError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt() {
            Err(e) if is_token_fault(&e) && started.elapsed() + backoff <= START_WAIT => {
                tracing::warn!(token = %token_label, error = %e, retry_in_ms = backoff.as_millis() as u64, "waiting for the token");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            result => return result,
        }
    }
}

fn is_token_fault(error: &SignerError) -> bool {
    matches!(error, SignerError::TokenFault(_))
}

/// The return values that mean a session, its login, its objects, the token or the device
/// are gone (not that the request was wrong).
fn is_connection_fault(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError
            | RvError::FunctionFailed
    )
}

/// Opens a read-write session on the token with the configured label, logged in.
fn open_logged_in(context: &Pkcs11, config: &Pkcs11SignerConfig) -> Result<Session, SignerError> {
    let token_fault = |what: &'static str| {
        move |e: P11Error| match &e {
            P11Error::Pkcs11(rv, _) if is_connection_fault(*rv) => {
                SignerError::TokenFault(format!("{what}: {e}"))
            }
            _ => SignerError::Pkcs11(format!("{what}: {e}")),
        }
    };
    let slot = find_slot(context, config)?;
    let session = context
        .open_rw_session(slot)
        .map_err(token_fault("open session"))?;
    let pin = AuthPin::from(config.pin.expose_secret().to_owned());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(P11Error::Pkcs11(rv, _)) if is_connection_fault(rv) => Err(SignerError::TokenFault(
            format!("login to token {:?}: {rv}", config.token_label),
        )),
        // A token with no user PIN is not usable as it is. SoftHSM's file store also answers
        // this for a moment while another process rewrites the token (the two-instances test
        // saw it at start-up): a token fault, waited for at start-up and recovered from later,
        // and reported as what it is when it lasts.
        Err(P11Error::Pkcs11(rv @ RvError::UserPinNotInitialized, _)) => {
            Err(SignerError::TokenFault(format!(
                "login to token {:?}: {rv} (the token's user PIN is not set)",
                config.token_label
            )))
        }
        Err(P11Error::Pkcs11(
            rv @ (RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked),
            _,
        )) => Err(SignerError::PinRefused(format!(
            "login to token {:?} refused: {rv}",
            config.token_label
        ))),
        Err(e) => Err(SignerError::Pkcs11(format!(
            "login to token {:?} failed: {e}",
            config.token_label
        ))),
    }
}

fn find_slot(context: &Pkcs11, config: &Pkcs11SignerConfig) -> Result<Slot, SignerError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| SignerError::TokenFault(format!("list slots: {e}")))?;
    slots
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .map(|info| info.label().trim_end() == config.token_label)
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            SignerError::TokenFault(format!(
                "no token labelled {:?} in {}",
                config.token_label,
                config.module.display()
            ))
        })
}

fn generate_key_pair(
    session: &Session,
    config: &Pkcs11SignerConfig,
) -> Result<SubjectPublicKeyInfo, SignerError> {
    if find_key(session, config, ObjectClass::PRIVATE_KEY)?.is_some() {
        return Err(SignerError::Config(format!(
            "token {:?} already holds a key labelled {:?}; refusing to replace a CA key",
            config.token_label, config.key_label
        )));
    }
    let params = config
        .algorithm
        .curve()
        .to_der()
        .map_err(|e| SignerError::Config(e.to_string()))?;
    let (public_template, private_template) = key_templates(&config.key_label, params);
    let (public, _private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(p11("generate key pair"))?;
    read_public_key(session, public, config.algorithm)
}

/// The templates of a key pair generated in the token: a public token object, and a private
/// one that is sensitive, never extractable and signs; both labelled (and identified) `label`.
fn key_templates(label: &str, ec_params: Vec<u8>) -> ([Attribute; 6], [Attribute; 7]) {
    let label = label.as_bytes().to_vec();
    (
        [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ec_params),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ],
        [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ],
    )
}

fn find_key(
    session: &Session,
    config: &Pkcs11SignerConfig,
    class: ObjectClass,
) -> Result<Option<ObjectHandle>, SignerError> {
    find_key_of_type(session, config, class, KeyType::EC)
}

/// The one key of `class` and `key_type` labelled `config.key_label` (an error when several).
fn find_key_of_type(
    session: &Session,
    config: &Pkcs11SignerConfig,
    class: ObjectClass,
    key_type: KeyType,
) -> Result<Option<ObjectHandle>, SignerError> {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Label(config.key_label.as_bytes().to_vec()),
    ];
    let found = session.find_objects(&template).map_err(p11("find key"))?;
    if found.len() > 1 {
        return Err(SignerError::Config(format!(
            "token {:?} holds {} keys labelled {:?}; labels must be unique",
            config.token_label,
            found.len(),
            config.key_label
        )));
    }
    Ok(found.into_iter().next())
}

fn find_private(
    session: &Session,
    config: &Pkcs11SignerConfig,
) -> Result<ObjectHandle, SignerError> {
    find_key(session, config, ObjectClass::PRIVATE_KEY)?.ok_or_else(|| {
        SignerError::KeyNotFound(format!(
            "no private key labelled {:?} in token {:?}",
            config.key_label, config.token_label
        ))
    })
}

fn read_public_key(
    session: &Session,
    public: ObjectHandle,
    algorithm: CaKeyAlgorithm,
) -> Result<SubjectPublicKeyInfo, SignerError> {
    algorithm.spki_from_point(&read_ec_point(session, public)?)
}

/// `CKA_EC_POINT` of a public key: DER, an OCTET STRING wrapping the point (some tokens give
/// the point bare).
fn read_ec_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, SignerError> {
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(p11("read CKA_EC_POINT"))?;
    let wrapped = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| SignerError::Pkcs11("public key has no CKA_EC_POINT".into()))?;
    Ok(<der::asn1::OctetString as der::Decode>::from_der(&wrapped)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or(wrapped))
}

/// The transparency log's checkpoint key on the CA's token: Ed25519 (`CKK_EC_EDWARDS`,
/// `CKM_EDDSA`) under its own label, generated inside the token (sensitive, non-extractable)
/// when absent. Checkpoints are signed at most a few times a second, so one session serves;
/// after a failure the next signature opens a new one (a token restart recovers by itself).
pub struct Pkcs11CheckpointKey {
    module: Arc<Module>,
    config: Pkcs11SignerConfig,
    public_key: [u8; 32],
    session: Mutex<Option<(Session, u64)>>,
}

/// DER of the Ed25519 curve OID (1.3.101.112), as `CKA_EC_PARAMS`.
const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

impl Pkcs11CheckpointKey {
    /// Opens the key labelled `label` on the token of `config`, generating it if absent.
    pub fn open_or_generate(config: &Pkcs11SignerConfig, label: &str) -> Result<Self, SignerError> {
        let mut config = config.clone();
        config.key_label = label.to_owned();
        let module = Module::get(&config.module)?;
        let public_key = {
            let (session, state) = module.open_at_start(&config)?;
            let public = match find_edwards(&session, &config, ObjectClass::PUBLIC_KEY)? {
                Some(public) => public,
                None => generate_edwards(&session, &config)?,
            };
            let key = read_edwards_point(&session, public)?;
            drop((session, state));
            key
        };
        tracing::info!(token = %config.token_label, key = %config.key_label, "transparency log checkpoint key ready (Ed25519, in the token)");
        Ok(Self {
            module,
            config,
            public_key,
            session: Mutex::new(None),
        })
    }

    fn sign_once(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let state = self.module.read()?;
        let context = state.context.as_ref().ok_or_else(not_loaded)?;
        let mut cached = self
            .session
            .lock()
            .map_err(|_| SignerError::Pkcs11("checkpoint session poisoned".into()))?;
        if cached.as_ref().is_none_or(|(_, g)| *g != state.generation) {
            *cached = Some((open_logged_in(context, &self.config)?, state.generation));
        }
        let Some((session, _)) = cached.as_ref() else {
            return Err(not_loaded());
        };
        let signed = find_edwards(session, &self.config, ObjectClass::PRIVATE_KEY)
            .and_then(|key| {
                key.ok_or_else(|| SignerError::KeyNotFound(self.config.key_label.clone()))
            })
            .and_then(|key| {
                let params = cryptoki::mechanism::eddsa::EddsaParams::new(
                    cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                );
                session
                    .sign(&Mechanism::Eddsa(params), key, message)
                    .map_err(p11("sign checkpoint"))
            });
        if signed.is_err() {
            *cached = None;
        }
        signed
    }
}

impl attestca_core::transparency::key::CheckpointSigner for Pkcs11CheckpointKey {
    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        // One retry on a fresh session: the cached one may have died with a token restart.
        self.sign_once(message).or_else(|_| self.sign_once(message))
    }
}

fn find_edwards(
    session: &Session,
    config: &Pkcs11SignerConfig,
    class: ObjectClass,
) -> Result<Option<ObjectHandle>, SignerError> {
    find_key_of_type(session, config, class, KeyType::EC_EDWARDS)
}

fn generate_edwards(
    session: &Session,
    config: &Pkcs11SignerConfig,
) -> Result<ObjectHandle, SignerError> {
    let (public_template, private_template) =
        key_templates(&config.key_label, ED25519_PARAMS.to_vec());
    let (public, _) = session
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(p11("generate the checkpoint key"))?;
    tracing::info!(token = %config.token_label, key = %config.key_label, "generated the transparency log's checkpoint key inside the token");
    Ok(public)
}

/// The 32-octet Ed25519 public key (`CKA_EC_POINT`, raw or wrapped in an OCTET STRING).
fn read_edwards_point(session: &Session, public: ObjectHandle) -> Result<[u8; 32], SignerError> {
    read_ec_point(session, public)?
        .try_into()
        .map_err(|_| SignerError::Pkcs11("the checkpoint key is not a 32-octet Ed25519 key".into()))
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> CaKeyAlgorithm {
        self.config.algorithm
    }

    fn public_key(&self) -> &SubjectPublicKeyInfo {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let algorithm = self.config.algorithm;
        let raw = self.sign_digest(&algorithm.digest(message), true)?;
        if raw.len() != 2 * algorithm.scalar_len() {
            return Err(SignerError::Pkcs11(format!(
                "token returned a {}-byte signature for {algorithm:?}",
                raw.len(),
            )));
        }
        algorithm.raw_signature_to_der(&raw)
    }

    fn backend(&self) -> &'static str {
        "pkcs11"
    }

    fn available(&self) -> bool {
        self.availability.available.load(Ordering::SeqCst)
    }

    fn recover(&self) -> Result<(), SignerError> {
        let algorithm = self.config.algorithm;
        self.sign_digest(&algorithm.digest(b"attestca signer health probe"), false)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_to_four_seconds() {
        let availability = Availability {
            available: AtomicBool::new(false),
            pin_refused: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            retry_at: Mutex::new(Instant::now()),
            down_since: Mutex::new(None),
        };
        let mut seen = Vec::new();
        for failures in 1..=8 {
            availability
                .consecutive_failures
                .store(failures, Ordering::SeqCst);
            seen.push(availability.backoff().as_millis());
        }
        assert_eq!(seen, [250, 500, 1000, 2000, 4000, 4000, 4000, 4000]);
    }

    #[test]
    fn a_down_key_admits_one_attempt_per_backoff() {
        let availability = Availability {
            available: AtomicBool::new(false),
            pin_refused: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(1),
            retry_at: Mutex::new(Instant::now()),
            down_since: Mutex::new(Some(Instant::now())),
        };
        assert!(availability.admit().is_ok(), "the first caller tries");
        assert!(
            matches!(availability.admit(), Err(SignerError::Unavailable(_))),
            "the next is refused at once"
        );
        availability.available.store(true, Ordering::SeqCst);
        assert!(availability.admit().is_ok(), "an available key admits all");
    }
}

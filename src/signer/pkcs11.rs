//! A CA key inside a PKCS#11 token (an HSM; SoftHSM in tests), used through a pool of sessions.
//!
//! PKCS#11 facts this module is shaped by: a `Session` may be moved between threads but not
//! shared, so sessions are pooled; tokens move between slot ids when initialised, so the token
//! is found by label; closing the last session logs the application out, so sessions stay open
//! for the life of the process; SoftHSM has no `CKM_ECDSA_SHA256`, so the host hashes and the
//! token signs the digest with `CKM_ECDSA`, which returns raw `r‖s`.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
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

fn p11(context: &str) -> impl FnOnce(cryptoki::error::Error) -> SignerError + '_ {
    move |e| SignerError::Pkcs11(format!("{context}: {e}"))
}

/// A session with the private key's handle as this session sees it.
struct PooledSession {
    session: Session,
    key: ObjectHandle,
}

/// The issuing key in a PKCS#11 token.
pub struct Pkcs11Signer {
    algorithm: CaKeyAlgorithm,
    spki: SubjectPublicKeyInfo,
    idle: Mutex<Vec<PooledSession>>,
    returned: Condvar,
    // Dropped last: sessions must close before the library is finalised.
    _context: Pkcs11,
}

/// How long a signing request waits for a free session before giving up.
const SESSION_WAIT: Duration = Duration::from_secs(10);

impl Pkcs11Signer {
    /// Opens the token and finds the configured key pair.
    pub fn open(config: &Pkcs11SignerConfig) -> Result<Self, SignerError> {
        let (context, slot) = connect(config)?;
        let first = context.open_rw_session(slot).map_err(p11("open session"))?;
        login(&first, config)?;
        let public = find_key(&first, config, ObjectClass::PUBLIC_KEY)?.ok_or_else(|| {
            SignerError::KeyNotFound(format!(
                "no public key labelled {:?} in token {:?}; run `attestca init` first",
                config.key_label, config.token_label
            ))
        })?;
        let spki = read_public_key(&first, public, config.algorithm)?;
        Self::with_sessions(context, slot, first, config, spki)
    }

    /// Generates a key pair inside the token (sensitive, non-extractable, token object), then
    /// opens it. Refuses if a key with the label exists.
    pub fn generate(config: &Pkcs11SignerConfig) -> Result<Self, SignerError> {
        let (context, slot) = connect(config)?;
        let session = context.open_rw_session(slot).map_err(p11("open session"))?;
        login(&session, config)?;
        if find_key(&session, config, ObjectClass::PRIVATE_KEY)?.is_some() {
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
        let label = config.key_label.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params),
            Attribute::Label(label.clone()),
            Attribute::Id(label.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.clone()),
            Attribute::Id(label),
        ];
        let (public, _private) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(p11("generate key pair"))?;
        let spki = read_public_key(&session, public, config.algorithm)?;
        tracing::info!(token = %config.token_label, key = %config.key_label, "generated the CA key inside the token (sensitive, non-extractable)");
        Self::with_sessions(context, slot, session, config, spki)
    }

    fn with_sessions(
        context: Pkcs11,
        slot: Slot,
        first: Session,
        config: &Pkcs11SignerConfig,
        spki: SubjectPublicKeyInfo,
    ) -> Result<Self, SignerError> {
        let size = config.sessions.max(1);
        let mut idle = Vec::with_capacity(size);
        let key = find_private(&first, config)?;
        idle.push(PooledSession {
            session: first,
            key,
        });
        for _ in 1..size {
            let session = context.open_rw_session(slot).map_err(p11("open session"))?;
            let key = find_private(&session, config)?;
            idle.push(PooledSession { session, key });
        }
        tracing::info!(token = %config.token_label, key = %config.key_label, sessions = size, "PKCS#11 signer ready");
        crate::metrics::METRICS
            .signer_sessions
            .with_label_values(&["pkcs11"])
            .add(size as i64);
        Ok(Self {
            algorithm: config.algorithm,
            spki,
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            _context: context,
        })
    }

    fn checkout(&self) -> Result<PooledSession, SignerError> {
        let mut idle = self
            .idle
            .lock()
            .map_err(|_| SignerError::Pkcs11("session pool poisoned".into()))?;
        loop {
            if let Some(s) = idle.pop() {
                in_use().inc();
                return Ok(s);
            }
            let (guard, timeout) = self
                .returned
                .wait_timeout(idle, SESSION_WAIT)
                .map_err(|_| SignerError::Pkcs11("session pool poisoned".into()))?;
            idle = guard;
            if timeout.timed_out() && idle.is_empty() {
                return Err(SignerError::Pkcs11(
                    "no PKCS#11 session became free in time (raise signer.pkcs11.sessions)".into(),
                ));
            }
        }
    }

    fn checkin(&self, session: PooledSession) {
        in_use().dec();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(session);
            self.returned.notify_one();
        }
    }
}

/// `attestca_signer_sessions_in_use{backend="pkcs11"}`: summed over every PKCS#11 key.
fn in_use() -> prometheus::IntGauge {
    crate::metrics::METRICS
        .signer_sessions_in_use
        .with_label_values(&["pkcs11"])
}

fn connect(config: &Pkcs11SignerConfig) -> Result<(Pkcs11, Slot), SignerError> {
    let context = Pkcs11::new(&config.module).map_err(|e| {
        SignerError::Config(format!(
            "cannot load PKCS#11 module {}: {e}",
            config.module.display()
        ))
    })?;
    // A second key of the same module in this process (the OCSP responder's beside the CA's)
    // finds the library initialised already: that is fine, the first context keeps it so.
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => return Err(p11("C_Initialize")(e)),
    }
    let slots = context.get_slots_with_token().map_err(p11("list slots"))?;
    let slot = slots
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .map(|info| info.label().trim_end() == config.token_label)
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            SignerError::Config(format!(
                "no token labelled {:?} in {}",
                config.token_label,
                config.module.display()
            ))
        })?;
    Ok((context, slot))
}

fn login(session: &Session, config: &Pkcs11SignerConfig) -> Result<(), SignerError> {
    let pin = AuthPin::from(config.pin.expose_secret().to_owned());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) => Ok(()),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(())
        }
        Err(e) => Err(SignerError::Pkcs11(format!(
            "login to token {:?} failed: {e}",
            config.token_label
        ))),
    }
}

fn find_key(
    session: &Session,
    config: &Pkcs11SignerConfig,
    class: ObjectClass,
) -> Result<Option<ObjectHandle>, SignerError> {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC),
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
    // CKA_EC_POINT is DER: an OCTET STRING wrapping the uncompressed point.
    let point = <der::asn1::OctetString as der::Decode>::from_der(&wrapped)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or(wrapped);
    algorithm.spki_from_point(&point)
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> CaKeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &SubjectPublicKeyInfo {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let digest = self.algorithm.digest(message);
        let pooled = self.checkout()?;
        let result = pooled.session.sign(&Mechanism::Ecdsa, pooled.key, &digest);
        self.checkin(pooled);
        let raw = result.map_err(p11("C_Sign"))?;
        if raw.len() != 2 * self.algorithm.scalar_len() {
            return Err(SignerError::Pkcs11(format!(
                "token returned a {}-byte signature for {:?}",
                raw.len(),
                self.algorithm
            )));
        }
        self.algorithm.raw_signature_to_der(&raw)
    }

    fn backend(&self) -> &'static str {
        "pkcs11"
    }
}

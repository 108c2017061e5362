//! The PKCS#11 signer on its own, against a real SoftHSM token: a pool that never grows past
//! its size under concurrent signing, a token that goes away (the key reports itself down and
//! refuses at once, without waiting on the token), and `recover` bringing it back with the
//! same key (every signature verifies under the public key read at start-up); a PIN the token
//! refuses is not tried again.
//!
//! One test per process: SoftHSM reads `SOFTHSM2_CONF` when the library is initialised.

use attestca_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use attestca::config::Pkcs11SignerConfig;
use attestca::signer::pkcs11::Pkcs11Signer;
use attestca::signer::{CaKeyAlgorithm, Signer, SignerError};
use common::*;

fn verifies(signer: &dyn Signer, message: &[u8], signature: &[u8]) -> bool {
    attestca::verify::verify(
        signer.public_key(),
        signer.algorithm().signature_algorithm().oid,
        message,
        signature,
    )
}

fn sessions_open() -> i64 {
    attestca::metrics::METRICS
        .signer_sessions
        .with_label_values(&["pkcs11"])
        .get()
}

#[test]
#[cfg_attr(
    missing_softhsm,
    ignore = "needs SoftHSM (ATTESTCA_TEST_PKCS11_MODULE); tests/run.sh provides it"
)]
fn the_pool_stays_within_its_size_and_a_token_that_comes_back_is_used_again() {
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    let token = SoftHsmToken::create(tmp.path(), "recovery", "1234");
    // SAFETY: set before any thread of this test process starts.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &token.conf) };
    let config = Pkcs11SignerConfig {
        module: module.into(),
        token_label: "recovery".into(),
        key_label: "ca".into(),
        algorithm: CaKeyAlgorithm::EcdsaP256,
        sessions: 3,
        pin: "1234".to_owned().into(),
        simulated_latency: std::time::Duration::ZERO,
    };
    let signer: Arc<dyn Signer> = Arc::new(Pkcs11Signer::generate(&config).expect("key"));

    // Eight threads on a pool of three.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let signer = Arc::clone(&signer);
            std::thread::spawn(move || {
                for j in 0..50 {
                    let message = format!("message {i}-{j}");
                    let signature = signer.sign(message.as_bytes()).expect("sign");
                    assert!(verifies(signer.as_ref(), message.as_bytes(), &signature));
                    assert!(sessions_open() <= 3, "{} sessions open", sessions_open());
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("signing thread");
    }
    assert_eq!(sessions_open(), 3);

    // The token goes away: one failure, then refusals that do not touch the token.
    let tokens = tmp.path().join("tokens");
    let away = tmp.path().join("away");
    std::fs::rename(&tokens, &away).expect("move the token away");
    assert!(signer.sign(b"while away").is_err());
    assert!(!signer.available());
    assert_eq!(
        sessions_open(),
        0,
        "failed sessions are discarded, idle ones too"
    );
    let started = Instant::now();
    for _ in 0..100 {
        match signer.sign(b"refused") {
            Err(SignerError::Unavailable(_)) => {}
            other => panic!("expected a refusal at once, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "100 refusals took {:?}",
        started.elapsed()
    );
    assert!(signer.recover().is_err(), "the token is still away");

    // Back: recovery opens a session, finds the key, proves it; signing works again.
    std::fs::rename(&away, &tokens).expect("move the token back");
    signer.recover().expect("recovered");
    assert!(signer.available());
    let signature = signer.sign(b"after").expect("sign after recovery");
    assert!(verifies(signer.as_ref(), b"after", &signature));
    assert!(sessions_open() >= 1 && sessions_open() <= 3);

    // The PIN is changed on the token, and the sessions are lost: the login that recovery
    // makes is refused, and never tried again (an HSM would lock the user).
    let (ok, out) = run(
        "pkcs11-tool",
        &[
            "--module",
            &config.module.display().to_string(),
            "--token-label",
            "recovery",
            "--login",
            "--pin",
            "1234",
            "--change-pin",
            "--new-pin",
            "5678",
        ],
        &[("SOFTHSM2_CONF", token.conf.display().to_string())],
    );
    assert!(ok, "pkcs11-tool --change-pin: {out}");
    std::fs::rename(&tokens, &away).expect("move the token away");
    assert!(signer.sign(b"while away").is_err());
    std::fs::rename(&away, &tokens).expect("move the token back");
    match signer.recover() {
        Err(SignerError::PinRefused(_)) => {}
        other => panic!("expected the PIN to be refused, got {other:?}"),
    }
    for _ in 0..3 {
        match signer.recover() {
            Err(SignerError::Unavailable(why)) => assert!(why.contains("PIN"), "{why}"),
            other => panic!("a refused PIN must not be tried again, got {other:?}"),
        }
    }
}

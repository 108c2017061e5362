//! Witness cosignatures (C2SP tlog-witness, tlog-cosignature) with a witness this test runs
//! itself, written here from the two specifications (not the log's code): it verifies the
//! log's signature, the old size it holds, and the RFC 9162 consistency proof, then cosigns.
//! The CA asks it for every checkpoint and serves its cosignatures; a restarted CA (which
//! forgot the size the witness holds) learns it from the 409 answer and carries on; a witness
//! that is down costs the log nothing but its cosignature.

use attestca_testkit as common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use sha2::{Digest, Sha256};

const WITNESS_NAME: &str = "witness.test/w1";

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 9162 §2.1.4.2: verifying a consistency proof from `m` to `n` leaves.
fn verify_consistency(m: u64, n: u64, old: [u8; 32], new: [u8; 32], proof: &[[u8; 32]]) -> bool {
    if m == 0 || m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && old == new;
    }
    let mut proof = proof.to_vec();
    if m.is_power_of_two() {
        proof.insert(0, old);
    }
    let (mut f_n, mut s_n) = (m - 1, n - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut f_r, mut s_r) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node(c, &f_r);
            s_r = node(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == old && s_r == new && s_n == 0
}

/// The test witness: its key, the log it knows, what it cosigned, and every request's answer.
struct TestWitness {
    key: Ed25519KeyPair,
    log_key: Mutex<Option<(String, Vec<u8>)>>,
    /// origin → (size, root) of the newest checkpoint cosigned.
    state: Mutex<HashMap<String, (u64, [u8; 32])>>,
    /// (old size, proof hashes, status) of every request.
    seen: Mutex<Vec<(u64, usize, u16)>>,
}

impl TestWitness {
    fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(format!("{WITNESS_NAME}\n").as_bytes());
        h.update([0x04]);
        h.update(self.key.public_key().as_ref());
        h.finalize()[..4].try_into().expect("4 octets")
    }

    fn vkey(&self) -> String {
        let mut key = vec![0x04];
        key.extend_from_slice(self.key.public_key().as_ref());
        format!(
            "{WITNESS_NAME}+{}+{}",
            hex::encode(self.key_id()),
            STANDARD.encode(key)
        )
    }

    /// C2SP tlog-witness `add-checkpoint`: (status, body).
    fn add_checkpoint(&self, body: &str) -> (u16, String) {
        let Some((head, note)) = body.split_once("\n\n") else {
            return (400, "no blank line".into());
        };
        let mut lines = head.lines();
        let Some(old) = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return (400, "no old size".into());
        };
        let proof: Option<Vec<[u8; 32]>> = lines
            .map(|l| STANDARD.decode(l).ok().and_then(|h| h.try_into().ok()))
            .collect();
        let Some(proof) = proof else {
            return (400, "bad proof line".into());
        };
        let Some((text, signatures)) = note.split_once("\n\n") else {
            return (400, "not a note".into());
        };
        let text = format!("{text}\n");
        let body_lines: Vec<&str> = text.lines().collect();
        let (origin, size, root) = match body_lines[..] {
            [origin, size, root, ..] => (
                origin.to_owned(),
                size.parse::<u64>().unwrap_or(u64::MAX),
                STANDARD
                    .decode(root)
                    .ok()
                    .and_then(|r| <[u8; 32]>::try_from(r).ok()),
            ),
            _ => return (400, "not a checkpoint".into()),
        };
        let Some(root) = root else {
            return (400, "bad root".into());
        };
        let Some((log_name, log_key)) = self.log_key.lock().expect("lock").clone() else {
            return (404, "unknown log".into());
        };
        if origin != log_name {
            return (404, "unknown log".into());
        }
        let mut id = Sha256::new();
        id.update(format!("{origin}\n").as_bytes());
        id.update([0x01]);
        id.update(&log_key);
        let id = id.finalize();
        let signed = signatures.lines().any(|line| {
            line.strip_prefix(&format!("\u{2014} {origin} "))
                .and_then(|b64| STANDARD.decode(b64).ok())
                .is_some_and(|sig| {
                    sig.len() == 68
                        && sig[..4] == id[..4]
                        && UnparsedPublicKey::new(&ED25519, &log_key)
                            .verify(text.as_bytes(), &sig[4..])
                            .is_ok()
                })
        });
        if !signed {
            return (403, "not signed by the log".into());
        }
        if old > size {
            return (400, "old size past the checkpoint".into());
        }
        let mut state = self.state.lock().expect("lock");
        let held = state.get(&origin).copied();
        let held_size = held.map_or(0, |(s, _)| s);
        if old != held_size {
            return (409, format!("{held_size}\n"));
        }
        if let Some((s, r)) = held {
            if s == size && r != root {
                return (409, format!("{held_size}\n"));
            }
            if s < size && !verify_consistency(s, size, r, root, &proof) {
                return (422, "inconsistent".into());
            }
        } else if !proof.is_empty() {
            return (422, "a proof from nothing".into());
        }
        state.insert(origin, (size, root));
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let message = format!("cosignature/v1\ntime {time}\n{text}");
        let mut raw = self.key_id().to_vec();
        raw.extend_from_slice(&time.to_be_bytes());
        raw.extend_from_slice(self.key.sign(message.as_bytes()).as_ref());
        (
            200,
            format!("\u{2014} {WITNESS_NAME} {}\n", STANDARD.encode(raw)),
        )
    }
}

async fn add_checkpoint(State(witness): State<Arc<TestWitness>>, body: String) -> Response {
    let (status, answer) = witness.add_checkpoint(&body);
    let old = body
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let proof = body
        .split_once("\n\n")
        .map_or(0, |(head, _)| head.lines().count().saturating_sub(1));
    witness
        .seen
        .lock()
        .expect("lock")
        .push((old, proof, status));
    let content_type = if status == 409 {
        "text/x.tlog.size"
    } else {
        "text/plain; charset=utf-8"
    };
    (
        StatusCode::from_u16(status).expect("status"),
        [(axum::http::header::CONTENT_TYPE, content_type)],
        answer,
    )
        .into_response()
}

/// The witness's cosignature on a served checkpoint, checked as a relying party would:
/// (size, timestamp) when one verifies.
fn cosigned(note: &str, witness: &TestWitness) -> Option<(u64, u64)> {
    let (text, signatures) = note.split_once("\n\n")?;
    let text = format!("{text}\n");
    let size = text.lines().nth(1)?.parse().ok()?;
    signatures.lines().find_map(|line| {
        let sig = STANDARD
            .decode(line.strip_prefix(&format!("\u{2014} {WITNESS_NAME} "))?)
            .ok()?;
        if sig.len() != 76 || sig[..4] != witness.key_id() {
            return None;
        }
        let time = u64::from_be_bytes(sig[4..12].try_into().ok()?);
        let message = format!("cosignature/v1\ntime {time}\n{text}");
        UnparsedPublicKey::new(&ED25519, witness.key.public_key().as_ref())
            .verify(message.as_bytes(), &sig[12..])
            .ok()
            .map(|_| (size, time))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_cosigned_by_a_configured_witness() {
    let witness = Arc::new(TestWitness {
        key: Ed25519KeyPair::generate().expect("witness key"),
        log_key: Mutex::new(None),
        state: Mutex::new(HashMap::new()),
        seen: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let witness_url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new()
        .route("/add-checkpoint", axum::routing::post(add_checkpoint))
        .with_state(Arc::clone(&witness));
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let witnesses = format!("[{{url=\"{witness_url}\",key=\"{}\"}}]", witness.vkey());
    let env = [("ATTESTCA_TRANSPARENCY__WITNESSES", witnesses.clone())];
    let mut server = ServerProcess::dev_with(&data, &tmp.path().join("server.log"), &env);
    server.wait_ready().await;
    // The witness is told the log's key, as its operator would configure it.
    let vkey = std::fs::read_to_string(data.join("pki/log.vkey")).expect("log.vkey");
    let parts: Vec<&str> = vkey.trim().splitn(3, '+').collect();
    let key = STANDARD.decode(parts[2]).expect("base64");
    *witness.log_key.lock().expect("lock") = Some((parts[0].to_owned(), key[1..].to_vec()));

    let pki = data.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let enroll_url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let checkpoint_url = format!("http://{}/log/issuing-ca/checkpoint", server.http);
    let plain = reqwest::Client::new();
    // Three rounds of enrollments: each checkpoint after the first is cosigned with a
    // consistency proof from the one before.
    let mut size = 1; // the OCSP responder's certificate
    for round in 0..3 {
        for i in 0..3 {
            enroll(&rig, &enroll_url, &format!("witnessed-{round}-{i}")).await;
            size += 1;
        }
        let note = cosigned_at_least(&plain, &checkpoint_url, &witness, size).await;
        // The log's own signature is still there, and `log verify` accepts the note.
        assert!(note.contains("\u{2014} issuing-ca "), "{note}");
    }
    let proofs_checked = witness
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(old, proof, status)| *old > 0 && *proof > 0 && *status == 200)
        .count();
    assert!(
        proofs_checked >= 1,
        "{:?}",
        witness.seen.lock().expect("lock")
    );
    let log_url = format!("http://{}/log/issuing-ca/", server.http);
    let data_dir = data.display().to_string();
    let vkey = witness.vkey();
    let log_verify = |log_url: &str| {
        run(
            &attestca_bin(),
            &[
                "log",
                "verify",
                "--url",
                log_url,
                "--dev",
                "--data-dir",
                &data_dir,
                "--witness",
                &vkey,
            ],
            &[],
        )
    };
    let (ok, out) = log_verify(&log_url);
    assert!(ok, "log verify on a cosigned log: {out}");
    assert!(out.contains("\"check\":\"witness\",\"ok\":true"), "{out}");
    // A relying party that requires the witness: the device's checkpoint is cosigned.
    let device = tmp.path().join("device.crt");
    write_pem(
        &device,
        &enroll(&rig, &enroll_url, "witnessed-device").await,
    );
    size += 1;
    cosigned_at_least(&plain, &checkpoint_url, &witness, size).await;
    let verify_device = |log_url: &str| {
        run(
            &attestca_bin(),
            &[
                "verify-device",
                "--cert",
                &device.display().to_string(),
                "--log",
                log_url,
                "--dev",
                "--data-dir",
                &data_dir,
                "--allow-unattested",
                "--witness",
                &vkey,
            ],
            &[],
        )
    };
    let (ok, out) = verify_device(&log_url);
    assert!(ok, "verify-device with the witness required: {out}");
    assert!(out.contains("cosigned by witness.test/w1"), "{out}");

    // A restarted CA does not know what the witness holds: the 409 tells it.
    drop(server);
    let mut server = ServerProcess::dev_with(&data, &tmp.path().join("server2.log"), &env);
    server.wait_ready().await;
    let enroll_url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let checkpoint_url = format!("http://{}/log/issuing-ca/checkpoint", server.http);
    enroll(&rig_for(&pki), &enroll_url, "witnessed-after-restart").await;
    size += 1;
    cosigned_at_least(&plain, &checkpoint_url, &witness, size).await;
    assert!(
        witness
            .seen
            .lock()
            .expect("lock")
            .iter()
            .any(|(old, _, status)| *old == 0 && *status == 409),
        "the restarted CA's first request was answered 409"
    );

    // The witness goes away: the log keeps serving the newest checkpoint the witness
    // cosigned, for up to 10 s after a newer one was signed, then the newest with the log's
    // own signature only; the failures are counted.
    serving.abort();
    let _ = serving.await;
    enroll(&rig_for(&pki), &enroll_url, "unwitnessed").await;
    size += 1;
    let signed = Instant::now();
    loop {
        let note = served_note(&plain, &checkpoint_url).await;
        let served: u64 = note
            .lines()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if served >= size {
            assert!(cosigned(&note, &witness).is_none(), "{note}");
            assert!(
                signed.elapsed() >= Duration::from_secs(5),
                "the uncosigned checkpoint was served at once"
            );
            break;
        }
        assert!(
            cosigned(&note, &witness).is_some(),
            "meanwhile the cosigned one: {note}"
        );
        assert!(signed.elapsed() < Duration::from_secs(16), "{note}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Whoever requires the witness now refuses the log's uncosigned checkpoint.
    let log_url = format!("http://{}/log/issuing-ca/", server.http);
    let (ok, out) = log_verify(&log_url);
    assert!(!ok, "{out}");
    assert!(out.contains("\"check\":\"witness\",\"ok\":false"), "{out}");
    let (ok, out) = verify_device(&log_url);
    assert!(!ok && out.contains("log.not_witnessed"), "{out}");
    let started = Instant::now();
    loop {
        let metrics = plain
            .get(format!("http://{}/metrics", server.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains(&format!(
            "attestca_log_cosignature_requests_total{{outcome=\"unreachable\",witness=\"{WITNESS_NAME}\"}}"
        )) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(8), "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (5 s at most) for the served checkpoint to carry the witness's cosignature on a
/// tree of `size` entries or more, made within the last minute; returns the note.
async fn cosigned_at_least(
    plain: &reqwest::Client,
    checkpoint_url: &str,
    witness: &TestWitness,
    size: u64,
) -> String {
    let started = Instant::now();
    loop {
        let note = served_note(plain, checkpoint_url).await;
        if let Some((cosigned_size, time)) = cosigned(&note, witness)
            && cosigned_size >= size
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_secs();
            assert!(time <= now && now - time < 60, "cosignature time {time}");
            return note;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no cosignature for size {size}: {note}\nwitness saw {:?}",
            witness.seen.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn served_note(plain: &reqwest::Client, url: &str) -> String {
    plain
        .get(url)
        .send()
        .await
        .expect("checkpoint")
        .text()
        .await
        .expect("note")
}

fn rig_for(pki: &std::path::Path) -> reqwest::Client {
    https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    )
}

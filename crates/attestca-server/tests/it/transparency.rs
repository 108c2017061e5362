//! The issuance log over real HTTP (docs/transparency.md): every certificate issued is in the
//! log within a second; the checkpoint, tiles and entry bundles served recompute — with code
//! written here from RFC 6962, C2SP tlog-tiles and C2SP signed-note, not the log's own — to
//! the signed root.

use attestca_testkit as common;

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use sha2::{Digest, Sha256};

fn leaf(entry: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// RFC 6962 §2.1 Merkle Tree Hash.
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(mth(&leaves[..k]));
            h.update(mth(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// (origin, size, root, the signed text, the signature lines) of a checkpoint note.
fn parse_note(note: &str) -> (String, u64, [u8; 32], String, Vec<String>) {
    let (text, signatures) = note
        .split_once("\n\n")
        .expect("text, blank line, signatures");
    let text = format!("{text}\n");
    let lines: Vec<&str> = text.lines().collect();
    let root: [u8; 32] = STANDARD
        .decode(lines[2])
        .expect("base64 root")
        .try_into()
        .expect("32 octets");
    (
        lines[0].to_owned(),
        lines[1].parse().expect("size"),
        root,
        text,
        signatures.lines().map(str::to_owned).collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_issued_certificate_is_in_the_log_within_a_second_and_the_log_verifies() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let mut server = ServerProcess::dev_with(
        &dir,
        &tmp.path().join("server.log"),
        &[("ATTESTCA_TRANSPARENCY__ENABLED", "true".into())],
    );
    server.wait_ready().await;
    let pki = dir.join("pki");
    let chain = pki.join("ca-chain.pem");
    let rig = https_client(&chain, Some((&pki.join("rig.crt"), &pki.join("rig.key"))));
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    let mut issued = Vec::new();
    for i in 0..5 {
        issued.push(enroll(&rig, &url, &format!("logged-device-{i}")).await);
    }
    let enrolled_at = Instant::now();

    let base = format!("http://{}/log/{}", server.http, "issuing-ca");
    let plain = reqwest::Client::new();
    // The dev CA has also issued its OCSP responder certificate: at least 6 entries.
    let note = loop {
        let response = plain
            .get(format!("{base}/checkpoint"))
            .send()
            .await
            .expect("checkpoint");
        if response.status() == 200 {
            assert_eq!(
                response.headers()["content-type"],
                "text/plain; charset=utf-8"
            );
            let note = response.text().await.expect("note");
            if parse_note(&note).1 >= issued.len() as u64 {
                break note;
            }
        }
        assert!(
            enrolled_at.elapsed() < Duration::from_millis(1500),
            "no checkpoint covering the enrollments within a second:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (origin, size, root, text, signatures) = parse_note(&note);
    assert_eq!(origin, "issuing-ca");

    // The signature, by the key in pki/log.vkey (C2SP signed-note, Ed25519).
    let vkey = std::fs::read_to_string(pki.join("log.vkey")).expect("log.vkey");
    let parts: Vec<&str> = vkey.trim().splitn(3, '+').collect();
    assert_eq!(parts[0], origin);
    let key = STANDARD.decode(parts[2]).expect("base64 key");
    assert_eq!(key[0], 0x01, "Ed25519");
    let line = signatures
        .iter()
        .find_map(|l| l.strip_prefix(&format!("— {origin} ")))
        .expect("a signature line by the log");
    let signature = STANDARD.decode(line).expect("base64 signature");
    let mut key_id = Sha256::new();
    key_id.update(format!("{origin}\n").as_bytes());
    key_id.update(&key);
    assert_eq!(signature[..4], key_id.finalize()[..4], "key id");
    UnparsedPublicKey::new(&ED25519, &key[1..])
        .verify(text.as_bytes(), &signature[4..])
        .expect("the checkpoint signature verifies");

    // The tiles and entries of that tree (all in the first, partial, tiles).
    let get = |path: String| {
        let plain = plain.clone();
        async move {
            let response = plain.get(path).send().await.expect("tile");
            assert_eq!(response.status(), 200);
            assert_eq!(
                response.headers()["cache-control"],
                "public, max-age=31536000, immutable"
            );
            response.bytes().await.expect("body").to_vec()
        }
    };
    let hashes = get(format!("{base}/tile/0/000.p/{size}")).await;
    let bundle = get(format!("{base}/tile/entries/000.p/{size}")).await;
    let mut entries = Vec::new();
    let mut rest = bundle.as_slice();
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        entries.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    assert_eq!(entries.len() as u64, size);
    let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf(e)).collect();
    for (i, l) in leaves.iter().enumerate() {
        assert_eq!(&hashes[i * 32..(i + 1) * 32], l, "leaf {i}");
    }
    assert_eq!(
        mth(&leaves),
        root,
        "the served entries hash to the signed root"
    );

    // Every certificate enrolled is an entry, with the record the docs describe.
    let logged: Vec<attestca_core::transparency::entry::IssuanceEntry> = entries
        .iter()
        .map(|e| attestca_core::transparency::entry::IssuanceEntry::decode(e).expect("entry"))
        .collect();
    for der in &issued {
        let entry = logged
            .iter()
            .find(|e| &e.certificate == der)
            .expect("an issued certificate is in the log");
        assert_eq!(entry.attestation.operation, "simpleenroll");
        assert_eq!(entry.attestation.profile, "lab");
        assert!(
            !entry.attestation.attested,
            "the lab profile requires no evidence"
        );
    }
    // A tile beyond the tree is not there.
    let missing = plain
        .get(format!("{base}/tile/0/001"))
        .send()
        .await
        .expect("tile");
    assert_eq!(missing.status(), 404);
}

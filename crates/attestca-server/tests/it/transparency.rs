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

/// `serve --dev` with the log on, and its data directory.
async fn logged_dev_server(tmp: &std::path::Path) -> (ServerProcess, std::path::PathBuf) {
    let dir = tmp.join("data");
    let mut server = ServerProcess::dev_with(
        &dir,
        &tmp.join("server.log"),
        &[("ATTESTCA_TRANSPARENCY__ENABLED", "true".into())],
    );
    server.wait_ready().await;
    (server, dir)
}

/// `attestca log verify` against the dev server's log: passes on the log as served, and
/// finds a tampered tile, a dropped entry, a forked earlier checkpoint and a certificate the
/// CA recorded that is not in the log.
#[tokio::test(flavor = "multi_thread")]
async fn log_verify_passes_on_the_log_and_finds_each_tampering() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (server, dir) = logged_dev_server(tmp.path()).await;
    let pki = dir.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    for i in 0..3 {
        enroll(&rig, &url, &format!("verified-device-{i}")).await;
    }
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("attestca.db").display()))
        .await
        .expect("sqlite");
    wait_log_integrated(&db, Duration::from_secs(2)).await;
    let log_url = format!("http://{}/log/issuing-ca/", server.http);
    let data_dir = dir.display().to_string();
    let saved = tmp.path().join("checkpoint");
    let verify = |extra: Vec<String>| {
        let mut args = vec![
            "log".to_owned(),
            "verify".into(),
            "--url".into(),
            log_url.clone(),
            "--dev".into(),
            "--data-dir".into(),
            data_dir.clone(),
        ];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&attestca_bin(), &args, &[])
    };
    let (ok, out) = verify(vec!["--save".into(), saved.display().to_string()]);
    assert!(ok, "a consistent log verifies:\n{out}");
    for check in ["checkpoint", "tree", "database", "completeness"] {
        assert!(
            out.contains(&format!("\"check\":\"{check}\",\"ok\":true")),
            "{check} passes:\n{out}"
        );
    }
    // A log claiming more entries than the monitor will fetch is reported, not followed.
    let (ok, out) = verify(vec!["--max-entries".into(), "2".into()]);
    assert!(!ok && out.contains("more than --max-entries 2"), "{out}");
    let (ok, out) = verify(vec!["--since".into(), saved.display().to_string()]);
    assert!(
        ok && out.contains("\"check\":\"consistency\",\"ok\":true"),
        "{out}"
    );

    // A tampered tile: one bit of the level-0 tile.
    let tile: Vec<u8> =
        sqlx::query_scalar("SELECT data FROM log_tiles WHERE level = 0 AND idx = 0")
            .fetch_one(&db)
            .await
            .expect("tile");
    let mut flipped = tile.clone();
    flipped[40] ^= 1;
    set_tile(&db, 0, &flipped).await;
    let (ok, out) = verify(vec![]);
    assert!(
        !ok && out.contains("served hashes differ"),
        "tampered tile:\n{out}"
    );
    set_tile(&db, 0, &tile).await;

    // A dropped entry: the first entry cut out of the bundle.
    let bundle: Vec<u8> =
        sqlx::query_scalar("SELECT data FROM log_tiles WHERE level = -1 AND idx = 0")
            .fetch_one(&db)
            .await
            .expect("bundle");
    let first = 2 + usize::from(u16::from_be_bytes([bundle[0], bundle[1]]));
    set_tile(&db, -1, &bundle[first..]).await;
    let (ok, out) = verify(vec![]);
    // The bundle is now one entry short of the checkpoint: not served at that width, or (from a
    // server that serves it anyway) fewer entries than the checkpoint counts.
    assert!(
        !ok && (out.contains("\"check\":\"entries\",\"ok\":false")
            || out.contains("entry bundles hold")),
        "dropped entry:\n{out}"
    );
    set_tile(&db, -1, &bundle).await;

    // A forked history: an earlier checkpoint, signed by the log's key, with another root.
    let key_der = std::fs::read(pki.join("log-checkpoint.key")).expect("key");
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&key_der).expect("key");
    let text = format!("issuing-ca\n2\n{}\n", STANDARD.encode([9u8; 32]));
    let vkey = std::fs::read_to_string(pki.join("log.vkey")).expect("vkey");
    let key_id = &STANDARD
        .decode(vkey.trim().splitn(3, '+').nth(2).expect("key"))
        .expect("b64")[..];
    let mut id = Sha256::new();
    id.update(b"issuing-ca\n");
    id.update(key_id);
    let mut sig = id.finalize()[..4].to_vec();
    sig.extend_from_slice(pair.sign(text.as_bytes()).as_ref());
    let forked = tmp.path().join("forked");
    std::fs::write(
        &forked,
        format!("{text}\n— issuing-ca {}\n", STANDARD.encode(sig)),
    )
    .expect("write");
    let (ok, out) = verify(vec!["--since".into(), forked.display().to_string()]);
    assert!(!ok && out.contains("a fork"), "forked checkpoint:\n{out}");

    // A certificate recorded by the CA (issued now) that the log does not have.
    sqlx::query(
        "INSERT INTO certificates (serial, der, issuer_key_id, subject, spki_sha256, profile, \
         not_before, not_after, requester, csr_sha256, issued_at) \
         VALUES ('0badc0de', x'3000', x'00', 'CN=outside', x'00', 'lab', 0, 4000000000, \
         'tls:insider', x'00', strftime('%s', 'now') + 60)",
    )
    .execute(&db)
    .await
    .expect("insert");
    let (ok, out) = verify(vec![]);
    assert!(
        !ok && out.contains("not in the log: 0badc0de"),
        "certificate outside the log:\n{out}"
    );
}

async fn set_tile(db: &sqlx::SqlitePool, level: i32, data: &[u8]) {
    sqlx::query("UPDATE log_tiles SET data = $1 WHERE level = $2 AND idx = 0")
        .bind(data)
        .bind(level)
        .execute(db)
        .await
        .expect("update tile");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_issued_certificate_is_in_the_log_within_a_second_and_the_log_verifies() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (server, dir) = logged_dev_server(tmp.path()).await;
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
    // Entry bundles are gzip-compressed for a client that accepts it (curl decompresses).
    let headers = tmp.path().join("headers");
    let gunzipped = tmp.path().join("bundle");
    let (ok, out) = run(
        "curl",
        &[
            "-sf",
            "--compressed",
            "-D",
            &headers.display().to_string(),
            "-o",
            &gunzipped.display().to_string(),
            &format!("{base}/tile/entries/000.p/{size}"),
        ],
        &[],
    );
    assert!(ok, "curl: {out}");
    let headers = std::fs::read_to_string(&headers).expect("headers");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{headers}"
    );
    assert_eq!(std::fs::read(&gunzipped).expect("bundle"), bundle);
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
    // Another CA's log is not here.
    let other = plain
        .get(format!("http://{}/log/other-ca/checkpoint", server.http))
        .send()
        .await
        .expect("checkpoint");
    assert_eq!(other.status(), 404);
    assert!(
        other
            .text()
            .await
            .expect("body")
            .starts_with("log.no_such_log")
    );
    // A tile beyond the tree is not there.
    let missing = plain
        .get(format!("{base}/tile/0/001"))
        .send()
        .await
        .expect("tile");
    assert_eq!(missing.status(), 404);
}

/// The CA killed (`kill -9`) in the middle of a burst of enrollments: every certificate row
/// has its log entry (pending or integrated) and every entry its certificate — the two are
/// one transaction — and after a restart the log integrates what was pending and verifies
/// against the database (every certificate issued is in the log).
#[tokio::test(flavor = "multi_thread")]
async fn a_ca_killed_mid_burst_leaves_every_certificate_with_its_entry() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (mut server, dir) = logged_dev_server(tmp.path()).await;
    let pki = dir.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    // Rigs enrolling in a loop; the CA is killed while they are at it.
    let burst: Vec<_> = (0..8)
        .map(|rig_no| {
            let (rig, url) = (rig.clone(), url.clone());
            tokio::spawn(async move {
                let mut issued = 0;
                for i in 0..200 {
                    let sent = rig
                        .post(&url)
                        .header("Content-Type", "application/pkcs10")
                        .body(body(&csr(&format!("killed-{rig_no}-{i}"))))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => issued += 1,
                        _ => break,
                    }
                }
                issued
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.signal("KILL");
    let mut received = 0;
    for task in burst {
        received += task.await.expect("rig");
    }
    assert!(received > 0, "nothing was issued before the kill");
    assert!(server.exit_within(Duration::from_secs(5)).await.is_some());

    let db_path = format!("sqlite://{}", dir.join("attestca.db").display());
    {
        let db = sqlx::SqlitePool::connect(&db_path).await.expect("sqlite");
        let orphans: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM certificates c WHERE NOT EXISTS \
             (SELECT 1 FROM log_pending p WHERE p.serial = c.serial) AND NOT EXISTS \
             (SELECT 1 FROM log_leaves l WHERE l.serial = c.serial)",
        )
        .fetch_one(&db)
        .await
        .expect("orphans");
        let unbacked: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM log_pending p WHERE NOT EXISTS \
               (SELECT 1 FROM certificates c WHERE c.serial = p.serial)) + \
             (SELECT count(*) FROM log_leaves l WHERE NOT EXISTS \
               (SELECT 1 FROM certificates c WHERE c.serial = l.serial))",
        )
        .fetch_one(&db)
        .await
        .expect("unbacked");
        let certificates: i64 = sqlx::query_scalar("SELECT count(*) FROM certificates")
            .fetch_one(&db)
            .await
            .expect("count");
        assert!(
            certificates >= received,
            "{certificates} rows, {received} received"
        );
        assert_eq!(
            (orphans, unbacked),
            (0, 0),
            "certificates without entries, entries without certificates"
        );
        db.close().await;
    }

    // Restarted: what was pending is integrated, and the log matches the database.
    let (restarted, _) = logged_dev_server(tmp.path()).await;
    let log_url = format!("http://{}/log/issuing-ca/", restarted.http);
    let data_dir = dir.display().to_string();
    let started = Instant::now();
    loop {
        let (ok, out) = run(
            &attestca_bin(),
            &[
                "log",
                "verify",
                "--url",
                &log_url,
                "--dev",
                "--data-dir",
                &data_dir,
            ],
            &[],
        );
        if ok && out.contains("(0 pending)") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the log does not verify after the restart:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Anyone can read the log: beyond `transparency.max_concurrent_reads` database reads at once
/// the public routes answer `503 overload.log_reads` with `Retry-After`, never an error or a
/// hang, and enrollments go on meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_log_reads_is_bounded() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let mut server = ServerProcess::dev_with(
        &dir,
        &tmp.path().join("server.log"),
        &[("ATTESTCA_TRANSPARENCY__MAX_CONCURRENT_READS", "1".into())],
    );
    server.wait_ready().await;
    let pki = dir.join("pki");
    let rig = https_client(
        &pki.join("ca-chain.pem"),
        Some((&pki.join("rig.crt"), &pki.join("rig.key"))),
    );
    let enroll_url = format!("{}/.well-known/est/lab/simpleenroll", server.est_url());
    enroll(&rig, &enroll_url, "flooded-1").await;
    let base = format!("http://{}/log/issuing-ca", server.http);
    let plain = reqwest::Client::new();
    let mut busy = 0;
    for _ in 0..10 {
        let answers = futures::future::join_all((0..300).map(|i| {
            let url = if i % 2 == 0 {
                format!("{base}/checkpoint")
            } else {
                format!("{base}/tile/0/000.p/1")
            };
            let plain = plain.clone();
            async move {
                let response = plain.get(url).send().await.expect("answer");
                let status = response.status().as_u16();
                let retry = response.headers().get("retry-after").cloned();
                (status, retry, response.text().await.expect("body"))
            }
        }))
        .await;
        for (status, retry, body) in answers {
            match status {
                200 => {}
                503 => {
                    assert!(body.starts_with("overload.log_reads"), "{body}");
                    assert_eq!(retry.expect("Retry-After"), "1");
                    busy += 1;
                }
                other => panic!("{other}: {body}"),
            }
        }
        if busy > 0 {
            break;
        }
    }
    assert!(
        busy > 0,
        "300 concurrent reads never exceeded one at a time"
    );
    enroll(&rig, &enroll_url, "flooded-2").await;
}

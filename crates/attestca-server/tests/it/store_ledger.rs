//! The durable write path on both engines: the ledger's decisions (stored, already issued,
//! serial collision, re-issue after the retry window), the purge of expired retry claims, and
//! the OCSP sweep's paging over what the ledger wrote.

use attestca_testkit as common;

use attestca::revocation::Revocations;
use attestca::store::ledger::{Committed, Ledger, LedgerEntry};
use attestca::store::{CertificateRecord, EnrollmentEvent, Store};
use attestca_core::record::{CertStatus, EventOutcome};
use attestca_core::serial::Serial;
use common::*;
use secrecy::SecretString;

fn sn(hex: &str) -> Serial {
    Serial::parse(hex).expect("serial")
}

fn record(serial: &str, csr: &[u8], issued_at: i64) -> CertificateRecord {
    CertificateRecord {
        serial: sn(serial),
        der: vec![0x30, 0x00],
        issuer_key_id: vec![1; 20],
        subject: "CN=ledger-test".into(),
        sans: String::new(),
        spki_sha256: vec![2; 32],
        profile: "default".into(),
        not_before: issued_at,
        not_after: issued_at + 86_400,
        status: CertStatus::Active,
        revoked_at: None,
        revocation_reason: None,
        requester: "tls:rig-1".into(),
        device_identity: None,
        csr_sha256: csr.to_vec(),
        issued_at,
        predecessor_serial: None,
    }
}

fn issued(serial: &str, csr: &[u8], issued_at: i64, window_start: i64) -> LedgerEntry {
    LedgerEntry::Issued {
        certificate: Box::new(record(serial, csr, issued_at)),
        event: EnrollmentEvent {
            occurred_at: issued_at,
            requester: Some("tls:rig-1".into()),
            operation: "simpleenroll".into(),
            profile: "default".into(),
            outcome: EventOutcome::Issued,
            reason: "enroll.issued".into(),
            serial: Some(sn(serial)),
            ..Default::default()
        },
        retry_window_start: window_start,
        nonce: None,
    }
}

/// [`issued`] carrying a stateless nonce.
fn issued_with_nonce(serial: &str, csr: &[u8], issued_at: i64, nonce: &[u8]) -> LedgerEntry {
    let mut entry = issued(serial, csr, issued_at, issued_at - 600);
    if let LedgerEntry::Issued { nonce: n, .. } = &mut entry {
        *n = Some(nonce.to_vec());
    }
    entry
}

async fn exercise(store: Store) {
    let ledger = Ledger::start(store.clone(), 16, 4, true);
    let (csr_a, csr_b) = ([0xaa; 32], [0xbb; 32]);
    let t = 1_000_000;

    assert_eq!(
        ledger
            .commit(issued("01", &csr_a, t, t - 600))
            .await
            .expect("commit"),
        Committed::Stored
    );
    let found = store
        .find_recent_issue("tls:rig-1", "default", &csr_a, t - 600)
        .await
        .expect("lookup");
    assert_eq!(found.map(|c| c.serial.into_string()).as_deref(), Some("01"));

    // The same rig and CSR within the window: the first certificate wins, the second is not stored.
    assert_eq!(
        ledger
            .commit(issued("02", &csr_a, t + 5, t + 5 - 600))
            .await
            .expect("commit"),
        Committed::AlreadyIssued { serial: sn("01") }
    );
    assert!(
        store
            .certificate(&sn("02"))
            .await
            .expect("lookup")
            .is_none(),
        "the loser's row must be gone"
    );

    // The same rig and CSR on another profile is another request: stored, and a retry lookup
    // on one profile never finds the other's certificate.
    let mut on_lab = issued("05", &csr_a, t + 5, t + 5 - 600);
    if let LedgerEntry::Issued {
        certificate, event, ..
    } = &mut on_lab
    {
        certificate.profile = "lab".into();
        event.profile = "lab".into();
    }
    assert_eq!(
        ledger.commit(on_lab).await.expect("commit"),
        Committed::Stored
    );
    for (profile, serial) in [("default", "01"), ("lab", "05")] {
        let found = store
            .find_recent_issue("tls:rig-1", profile, &csr_a, t - 600)
            .await
            .expect("lookup");
        assert_eq!(
            found.map(|c| c.serial.into_string()).as_deref(),
            Some(serial),
            "{profile}"
        );
    }

    // A serial that exists already is a collision: nothing stored for that entry.
    assert_eq!(
        ledger
            .commit(issued("01", &csr_b, t + 6, t + 6 - 600))
            .await
            .expect("commit"),
        Committed::SerialCollision
    );
    assert!(
        store
            .find_recent_issue("tls:rig-1", "default", &csr_b, 0)
            .await
            .expect("lookup")
            .is_none()
    );

    // A nonce buys one certificate: another CSR with it stores nothing (refused), the same
    // CSR with it is a retry answered with the first certificate. (Issued after the purges
    // below, which must not see these claims.)
    let (csr_c, csr_d, nonce) = ([0xc1; 32], [0xd1; 32], [0x5a; 32]);
    assert_eq!(
        ledger
            .commit(issued_with_nonce("06", &csr_c, t + 710, &nonce))
            .await
            .expect("commit"),
        Committed::Stored
    );
    assert_eq!(
        ledger
            .commit(issued_with_nonce("07", &csr_d, t + 711, &nonce))
            .await
            .expect("commit"),
        Committed::NonceReused
    );
    assert!(
        store
            .certificate(&sn("07"))
            .await
            .expect("lookup")
            .is_none()
    );
    assert_eq!(
        ledger
            .commit(issued_with_nonce("08", &csr_c, t + 711, &nonce))
            .await
            .expect("commit"),
        Committed::AlreadyIssued { serial: sn("06") }
    );
    assert!(
        store
            .certificate(&sn("08"))
            .await
            .expect("lookup")
            .is_none()
    );

    // After the window, the same CSR may be issued again.
    let later = t + 700;
    assert_eq!(
        ledger
            .commit(issued("03", &csr_a, later, later - 600))
            .await
            .expect("commit"),
        Committed::Stored
    );
    let found = store
        .find_recent_issue("tls:rig-1", "default", &csr_a, later - 600)
        .await
        .expect("lookup");
    assert_eq!(found.map(|c| c.serial.into_string()).as_deref(), Some("03"));

    // Purging claims older than the window forgets them (and only them).
    // (The lab claim, from t + 5, is older than `later`; the default one was renewed at `later`.)
    assert_eq!(store.purge_retry_claims(later).await.expect("purge"), 1);
    assert_eq!(store.purge_retry_claims(later + 1).await.expect("purge"), 1);
    assert!(
        store
            .find_recent_issue("tls:rig-1", "default", &csr_a, 0)
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        store
            .certificate(&sn("03"))
            .await
            .expect("lookup")
            .is_some(),
        "certificates are never purged"
    );

    // A renewal of "03" issued at `later`: after the overlap, "03" is revoked as superseded.
    let mut renewal = record("04", &[0xcc; 32], later);
    renewal.predecessor_serial = Some(sn("03"));
    let entry = LedgerEntry::Issued {
        certificate: Box::new(renewal),
        event: EnrollmentEvent {
            occurred_at: later,
            operation: "simplereenroll".into(),
            profile: "default".into(),
            outcome: EventOutcome::Issued,
            reason: "enroll.issued".into(),
            ..Default::default()
        },
        retry_window_start: later - 600,
        nonce: None,
    };
    assert_eq!(
        ledger.commit(entry).await.expect("commit"),
        Committed::Stored
    );
    assert_eq!(
        Revocations::new(store.clone())
            .expire_overlaps("default", later - 1, later + 10)
            .await
            .expect("supersede"),
        Vec::<Serial>::new(),
        "overlap not over"
    );
    assert_eq!(
        Revocations::new(store.clone())
            .expire_overlaps("other", later, later + 10)
            .await
            .expect("supersede"),
        Vec::<Serial>::new(),
        "another profile"
    );
    assert_eq!(
        Revocations::new(store.clone())
            .expire_overlaps("default", later, later + 10)
            .await
            .expect("supersede"),
        vec![sn("03")]
    );
    let superseded = store
        .certificate(&sn("03"))
        .await
        .expect("lookup")
        .expect("row");
    assert_eq!(
        (
            superseded.status.as_str(),
            superseded.revocation_reason.as_deref()
        ),
        ("revoked", Some("superseded"))
    );
    let audit = store
        .audit_page(&attestca::store::AuditQuery {
            operator: Some("system:overlap-expiry".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        audit
            .iter()
            .map(|e| (
                e.action.as_str(),
                e.target.as_str(),
                e.outcome.as_str(),
                e.reason.as_str()
            ))
            .collect::<Vec<_>>(),
        [("certificate.revoke", "03", "done", "superseded")],
        "the overlap expiry is audited"
    );
    assert_eq!(
        Revocations::new(store.clone())
            .expire_overlaps("default", later, later + 20)
            .await
            .expect("again"),
        Vec::<Serial>::new(),
        "idempotent"
    );

    let events = store.recent_events(10).await.expect("events");
    let outcomes: Vec<&str> = events.iter().rev().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "issued", "retried", "issued", "issued", "retried", "issued", "issued"
        ],
        "a collision and a spent nonce record nothing (the refusal is recorded by the caller)"
    );
}

/// Many commits at once, so that writers take them in batches of many rows (on PostgreSQL, one
/// multi-row statement per chunk): distinct CSRs, a retry racing its first request, a nonce
/// spent twice and a serial collision in the same batch get the same answers as one by one.
async fn batched(store: Store) {
    let ledger = Ledger::start(store.clone(), 64, 1, true);
    let t = 2_000_000;
    let nonce = [0x6b; 32];
    assert_eq!(
        ledger
            .commit(issued("e0", &[0x50; 32], t, t - 600))
            .await
            .expect("commit"),
        Committed::Stored
    );
    let mut entries: Vec<LedgerEntry> = (0..20u8)
        .map(|i| issued(&format!("a{i:02x}"), &[0x10 + i; 32], t + 1, t - 599))
        .collect();
    entries.push(issued("c0", &[0x10; 32], t + 1, t - 599));
    entries.push(issued_with_nonce("d0", &[0x40; 32], t + 1, &nonce));
    entries.push(issued_with_nonce("d1", &[0x41; 32], t + 1, &nonce));
    entries.push(issued("e0", &[0x51; 32], t + 1, t - 599));
    entries.push(LedgerEntry::Event(EnrollmentEvent {
        occurred_at: t + 1,
        operation: "simpleenroll".into(),
        profile: "default".into(),
        outcome: EventOutcome::Refused,
        reason: "csr.invalid".into(),
        ..Default::default()
    }));
    let outcomes = futures::future::join_all(entries.into_iter().map(|entry| {
        let ledger = ledger.clone();
        async move { ledger.commit(entry).await.expect("commit") }
    }))
    .await;

    for (i, outcome) in outcomes[1..20].iter().enumerate() {
        assert_eq!(outcome, &Committed::Stored, "distinct CSR {}", i + 1);
    }
    // The first request for CSR 0x10 and its retry: one certificate, the other is told about it.
    let (first, retry) = (&outcomes[0], &outcomes[20]);
    let winner = match (first, retry) {
        (Committed::Stored, Committed::AlreadyIssued { serial }) if serial == &sn("a00") => "a00",
        (Committed::AlreadyIssued { serial }, Committed::Stored) if serial == &sn("c0") => "c0",
        other => panic!("a retry in the same batch: {other:?}"),
    };
    let loser = if winner == "a00" { "c0" } else { "a00" };
    assert!(
        store
            .certificate(&sn(winner))
            .await
            .expect("lookup")
            .is_some()
    );
    assert!(
        store
            .certificate(&sn(loser))
            .await
            .expect("lookup")
            .is_none()
    );
    // One nonce, two CSRs: one certificate, one refusal.
    let mut spent = [&outcomes[21], &outcomes[22]];
    spent.sort_by_key(|o| matches!(o, Committed::NonceReused));
    assert_eq!(spent, [&Committed::Stored, &Committed::NonceReused]);
    assert_eq!(outcomes[23], Committed::SerialCollision);
    assert_eq!(outcomes[24], Committed::Stored);

    for i in 1..20u8 {
        let serial = sn(&format!("a{i:02x}"));
        assert!(
            store.certificate(&serial).await.expect("lookup").is_some(),
            "{serial}"
        );
    }
    let events = store.recent_events(100).await.expect("events");
    let count = |outcome: &str| {
        events
            .iter()
            .filter(|e| e.outcome.as_str() == outcome)
            .count()
    };
    // 1 + 20 + 1 issued (e0 before, the CSRs, the nonce's winner); one retry; one refusal.
    assert_eq!(
        (count("issued"), count("retried"), count("refused")),
        (22, 1, 1)
    );
    // Every stored certificate, and nothing else, has its transparency log entry, decodable
    // and naming that certificate.
    let pending: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT p.serial, p.entry FROM log_pending p JOIN certificates c ON c.serial = p.serial",
    )
    .fetch_all(store.pool())
    .await
    .expect("log entries");
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM log_pending")
        .fetch_one(store.pool())
        .await
        .expect("count");
    let certificates: i64 = sqlx::query_scalar("SELECT count(*) FROM certificates")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!((pending.len() as i64, all), (certificates, certificates));
    for (serial, entry) in pending {
        let entry = attestca_core::transparency::entry::IssuanceEntry::decode(&entry)
            .expect("a log entry decodes");
        assert_eq!(entry.attestation.requester, "tls:rig-1", "{serial}");
        assert_eq!(entry.certificate, vec![0x30, 0x00]);
    }
}

/// The OCSP sweep's keyset paging: every unexpired certificate of one issuer exactly once, in
/// (issued_at, serial) order, across pages that split a second's certificates, and nothing of
/// another issuer (whose rows the page must not even read: `certificates_issued`).
async fn sweep_pages(store: Store) {
    let ledger = Ledger::start(store.clone(), 16, 1, true);
    let t = 3_000_000;
    let mut expected = Vec::new();
    for i in 0..11u8 {
        let serial = format!("{:02x}", 0x80 - i);
        let mut entry = issued(&serial, &[0x20 + i; 32], t + i64::from(i / 4), t - 600);
        if let LedgerEntry::Issued { certificate, .. } = &mut entry {
            if i % 3 == 2 {
                certificate.issuer_key_id = vec![9; 20];
            } else if i == 7 {
                certificate.not_after = t - 1;
            } else {
                expected.push((certificate.issued_at, serial.clone()));
            }
        }
        assert_eq!(
            ledger.commit(entry).await.expect("commit"),
            Committed::Stored
        );
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut after: Option<attestca::store::StatusRecord> = None;
    loop {
        let page = store
            .certificate_statuses_page(&[1; 20], t, after.as_ref(), 3)
            .await
            .expect("page");
        seen.extend(
            page.iter()
                .map(|r| (r.issued_at, r.serial.as_str().to_owned())),
        );
        match page.last() {
            Some(last) if page.len() == 3 => after = Some(last.clone()),
            _ => break,
        }
    }
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_pages_on_sqlite() {
    on_sqlite(sweep_pages).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn sweep_pages_on_postgres() {
    on_postgres(sweep_pages).await;
}

async fn on_sqlite<F: std::future::Future<Output = ()>>(run: impl FnOnce(Store) -> F) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let url = SecretString::from(format!(
        "sqlite://{}",
        tmp.path().join("ledger.db").display()
    ));
    run(Store::connect(&url, 4).await.expect("sqlite store")).await;
}

async fn on_postgres<F: std::future::Future<Output = ()>>(run: impl FnOnce(Store) -> F) {
    let admin_url = require("PostgreSQL", "ATTESTCA_TEST_DATABASE_URL");
    let db = TestDatabase::create(&admin_url).await;
    let store = Store::connect(&SecretString::from(db.url.clone()), 4)
        .await
        .expect("postgres store");
    run(store.clone()).await;
    store.pool().close().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_batched_on_sqlite() {
    on_sqlite(batched).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn ledger_batched_on_postgres() {
    on_postgres(batched).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_on_sqlite() {
    on_sqlite(exercise).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_postgres,
    ignore = "needs PostgreSQL (ATTESTCA_TEST_DATABASE_URL); tests/run.sh provides it"
)]
async fn ledger_on_postgres() {
    on_postgres(exercise).await;
}

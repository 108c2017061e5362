//! Issuing-CA rollover: after the CA moves to a new issuing key, devices holding certificates
//! of the previous issuing CA renew onto the new one — when that CA is listed in
//! `ca.previous_certificate_files`, and only then.

mod common;

use attestca::issuance::software_ca::SoftwareCa;
use attestca::signer::Signer;
use attestca_sim::device::DeviceKey;
use common::*;
use der::Decode;

#[tokio::test(flavor = "multi_thread")]
async fn devices_of_the_previous_issuing_ca_renew_onto_the_new_one() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut ca = ConfiguredCa::start(tmp.path(), "[profiles.default]\n", &[]).await;
    let key = DeviceKey::generate().expect("key");
    let (status, text) = ca
        .post("/simpleenroll", &key.csr("rollover-1").expect("csr"))
        .await;
    assert_eq!(status, 200, "{text}");
    let old_cert = certificate_from_response(text.as_bytes());
    ca.server.stop();

    // The rollover: a new issuing key and certificate under the same root; the old issuing CA
    // certificate is kept for renewals.
    let pki = ca.dir.join("pki");
    let chain = attestca::pem::read_certificate_ders(&pki.join("ca-chain.pem")).expect("chain");
    let (old_issuing, root_der) = (chain[0].clone(), chain[1].clone());
    let root = SoftwareCa::from_certificate_and_key(
        root_der.clone(),
        attestca::pem::read_private_key(&pki.join("root.key")).expect("root key"),
    )
    .expect("root");
    let new_pkcs8 =
        attestca::signer::software::generate_pkcs8(attestca::signer::CaKeyAlgorithm::EcdsaP256)
            .expect("key");
    let new_key = attestca::signer::software::SoftwareSigner::from_pkcs8(
        attestca::signer::CaKeyAlgorithm::EcdsaP256,
        &new_pkcs8,
    )
    .expect("signer");
    let new_issuing = root
        .issue_ca(
            "CN=attestca Issuing CA 2,O=attestca",
            new_key.public_key(),
            10,
            Some(0),
        )
        .expect("new issuing CA");
    attestca::pem::write_private_key(&pki.join("issuing2.key"), &new_pkcs8).expect("write key");
    attestca::pem::write_certificates(&pki.join("ca-chain2.pem"), &[&new_issuing, &root_der])
        .expect("chain");
    attestca::pem::write_certificates(&pki.join("issuing-ca1.crt"), &[&old_issuing])
        .expect("old CA");

    let client_for_old = {
        let (c, k) = (tmp.path().join("old.crt"), tmp.path().join("old.key"));
        write_pem(&c, &old_cert);
        attestca::pem::write_private_key(&k, &key.pkcs8).expect("key");
        https_client(&pki.join("ca-chain2.pem"), Some((&c, &k)))
    };
    let csr = key
        .renewal_csr(
            &x509_cert::Certificate::from_der(&old_cert).expect("cert"),
            Vec::new(),
        )
        .expect("csr");
    let config = tmp.path().join("attestca.toml");
    let base_env = |previous: &str| {
        vec![
            ("ATTESTCA_SIGNER__KEY_FILE", "pki/issuing2.key".to_owned()),
            ("ATTESTCA_CA__CHAIN_FILE", "pki/ca-chain2.pem".to_owned()),
            (
                "ATTESTCA_CA__PREVIOUS_CERTIFICATE_FILES",
                previous.to_owned(),
            ),
        ]
    };

    for (previous, expected) in [("[]", 401u16), ("[\"pki/issuing-ca1.crt\"]", 200)] {
        let (est, http) = addresses();
        let mut env = base_env(previous);
        env.push(("ATTESTCA_SERVER__EST_ADDR", est.to_string()));
        env.push(("ATTESTCA_SERVER__HTTP_ADDR", http.to_string()));
        let mut server = ServerProcess::spawn(
            &["serve", "--config", &config.display().to_string()],
            &env,
            &tmp.path().join(format!("server-{expected}.log")),
            est,
            http,
        );
        server.wait_ready().await;
        let response = client_for_old
            .post(format!(
                "{}/.well-known/est/simplereenroll",
                server.est_url()
            ))
            .header("Content-Type", "application/pkcs10")
            .body(body(&csr))
            .send()
            .await
            .expect("reenroll");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        assert_eq!(
            status,
            expected,
            "previous={previous}: {text}\n{}",
            server.log_text()
        );
        if expected == 200 {
            let renewed = certificate_from_response(text.as_bytes());
            let parsed = x509_cert::Certificate::from_der(&renewed).expect("cert");
            assert_eq!(
                parsed.tbs_certificate().issuer().to_string(),
                "CN=attestca Issuing CA 2,O=attestca"
            );
            let pem = tmp.path().join("renewed.pem");
            write_pem(&pem, &renewed);
            let (ok, out) = openssl_verify(&pki.join("ca-chain2.pem"), &pem);
            assert!(ok, "the renewal chains to the new issuing CA: {out}");
        }
        server.stop();
    }
}

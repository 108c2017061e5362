//! Production CA set-up with an offline root: `attestca init --csr-out` generates a P-384
//! issuing key inside SoftHSM and a CSR; openssl plays the offline root and signs it;
//! `attestca import-ca` refuses a certificate for another key and accepts the right one; the
//! CA then enrolls devices with certificates that chain to that root.

use attestca_testkit as common;

use std::path::Path;

use common::*;
use der::Decode;

const PIN: &str = "2468";

fn openssl(args: &[&str]) {
    let (ok, out) = run("openssl", args, &[]);
    assert!(ok, "openssl {}: {out}", args.join(" "));
}

/// A fresh EC key (PKCS#8 PEM) and a CSR for it.
fn key_and_csr(curve: &str, subject: &str, key: &str, csr: &str) {
    let curve = format!("ec_paramgen_curve:{curve}");
    openssl(&[
        "req", "-new", "-newkey", "ec", "-pkeyopt", &curve, "-nodes", "-subj", subject, "-keyout",
        key, "-out", csr,
    ]);
}

/// A self-signed P-256 CA certificate and its key.
fn self_signed_ca(subject: &str, key: &str, cert: &str) {
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        subject,
        "-days",
        "3650",
        "-keyout",
        key,
        "-out",
        cert,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
}

/// `openssl x509 -req`: the CA `(cert, key)` signs `csr` with the extensions in `ext`.
fn sign(csr: &str, ca: &(String, String), serial: &str, ext: &std::path::Path, out: &str) {
    let ext = ext.display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        &ca.0,
        "-CAkey",
        &ca.1,
        "-set_serial",
        serial,
        "-days",
        "365",
        "-extfile",
        &ext,
        "-out",
        out,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_softhsm,
    ignore = "needs SoftHSM (ATTESTCA_TEST_PKCS11_MODULE); tests/run.sh provides it"
)]
async fn offline_root_signs_a_p384_issuing_key_held_in_softhsm() {
    let module = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE");
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = |name: &str| tmp.path().join(name).display().to_string();
    let token = SoftHsmToken::create(&tmp.path().join("softhsm"), "offline-test", PIN);
    let (est, http) = addresses();
    let config = tmp.path().join("attestca.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
est_addr = "{est}"
http_addr = "{http}"
data_dir = "{data}"
[tls]
certificate_file = "{server_crt}"
key_file = "{server_key}"
[database]
url = "sqlite://{data}/attestca.db"
[signer]
backend = "pkcs11"
algorithm = "ecdsa-p384"
module = "{module}"
token_label = "offline-test"
key_label = "issuing-p384"
sessions = 2
[ca]
chain_file = "pki/ca-chain.pem"
subject = "CN=Offline Test Issuing CA,O=attestca tests"
[rigs]
trust_anchor_files = ["{rig_ca}"]
[profiles.default]
validity_days = 30
"#,
            data = t("data"),
            server_crt = t("server.crt"),
            server_key = t("server.key"),
            rig_ca = t("rig-ca.pem"),
        ),
    )
    .expect("config");
    let env = vec![
        ("SOFTHSM2_CONF", token.conf.display().to_string()),
        ("ATTESTCA_SIGNER_PIN", PIN.to_owned()),
    ];
    let attestca = env!("CARGO_BIN_EXE_attestca");
    let cfg = config.display().to_string();

    // 1. The issuing key is generated in the token; a CSR comes out.
    let (ok, out) = run(
        attestca,
        &["init", "--config", &cfg, "--csr-out", &t("issuing.csr")],
        &env,
    );
    assert!(ok, "init --csr-out: {out}");
    openssl(&["req", "-in", &t("issuing.csr"), "-verify", "-noout"]);
    let (_, csr_text) = run(
        "openssl",
        &["req", "-in", &t("issuing.csr"), "-noout", "-text"],
        &[],
    );
    assert!(
        csr_text.contains("NIST CURVE: P-384") || csr_text.contains("secp384r1"),
        "{csr_text}"
    );
    let (ok, out) = run(
        attestca,
        &["init", "--config", &cfg, "--csr-out", &t("again.csr")],
        &env,
    );
    assert!(
        !ok && out.contains("refusing to replace"),
        "a second init must not replace the key: {out}"
    );

    // 2. openssl is the offline root.
    self_signed_ca("/CN=Offline Test Root", &t("root.key"), &t("root.pem"));
    let ca_ext = tmp.path().join("ca.ext");
    std::fs::write(
        &ca_ext,
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .expect("ext");
    let root = (t("root.pem"), t("root.key"));
    sign(
        &t("issuing.csr"),
        &root,
        "0x1001",
        &ca_ext,
        &t("issuing.crt"),
    );

    // A certificate for some other key is refused.
    key_and_csr("P-384", "/CN=Impostor", &t("other.key"), &t("other.csr"));
    sign(&t("other.csr"), &root, "0x1002", &ca_ext, &t("other.crt"));
    let (ok, out) = run(
        attestca,
        &[
            "import-ca",
            "--config",
            &cfg,
            "--cert",
            &t("other.crt"),
            "--chain",
            &t("root.pem"),
        ],
        &env,
    );
    assert!(
        !ok && out.contains("does not match the signing key"),
        "import of a foreign certificate: {out}"
    );

    // 3. The right certificate is installed.
    let (ok, out) = run(
        attestca,
        &[
            "import-ca",
            "--config",
            &cfg,
            "--cert",
            &t("issuing.crt"),
            "--chain",
            &t("root.pem"),
        ],
        &env,
    );
    assert!(ok, "import-ca: {out}");

    // TLS server and rig credentials, made with openssl as an operator would.
    let server_ext = tmp.path().join("server.ext");
    std::fs::write(
        &server_ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("ext");
    key_and_csr("P-256", "/CN=127.0.0.1", &t("server.key"), &t("server.csr"));
    sign(
        &t("server.csr"),
        &root,
        "0x2001",
        &server_ext,
        &t("server.crt"),
    );
    self_signed_ca("/CN=Line Rig CA", &t("rig-ca.key"), &t("rig-ca.pem"));
    let rig_ext = tmp.path().join("rig.ext");
    std::fs::write(&rig_ext, "extendedKeyUsage=clientAuth\n").expect("ext");
    key_and_csr("P-256", "/CN=rig-offline-1", &t("rig.key"), &t("rig.csr"));
    let rig_ca = (t("rig-ca.pem"), t("rig-ca.key"));
    sign(&t("rig.csr"), &rig_ca, "0x3001", &rig_ext, &t("rig.crt"));

    // 4. Serve and enroll.
    let mut server = ServerProcess::spawn(
        &["serve", "--config", &cfg],
        &env,
        &tmp.path().join("server.log"),
        est,
        http,
    );
    server.wait_ready().await;
    let chain = tmp.path().join("data/pki/ca-chain.pem");
    let rig = https_client(
        Path::new(&t("root.pem")),
        Some((Path::new(&t("rig.crt")), Path::new(&t("rig.key")))),
    );
    let response = rig
        .post(format!("{}/.well-known/est/simpleenroll", server.est_url()))
        .header("Content-Type", "application/pkcs10")
        .body(body(&csr("offline-device-1")))
        .send()
        .await
        .expect("enroll");
    assert_eq!(response.status(), 200, "{}", server.log_text());
    let cert = certificate_from_response(&response.bytes().await.expect("body"));
    let parsed = x509_cert::Certificate::from_der(&cert).expect("certificate");
    assert_eq!(
        parsed.signature_algorithm().oid,
        const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
        "a P-384 CA signs with ecdsa-with-SHA384"
    );
    let pem = tmp.path().join("device.pem");
    write_pem(&pem, &cert);
    let (ok, out) = openssl_verify(&chain, &pem);
    assert!(ok, "openssl verify against the imported chain: {out}");
    let (ok, out) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &t("root.pem"),
            "-untrusted",
            &t("issuing.crt"),
            &pem.display().to_string(),
        ],
        &[],
    );
    assert!(ok, "openssl verify against the offline root: {out}");
}

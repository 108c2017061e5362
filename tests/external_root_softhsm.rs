//! Production CA set-up with an offline root: `attestca init --csr-out` generates a P-384
//! issuing key inside SoftHSM and a CSR; openssl plays the offline root and signs it;
//! `attestca import-ca` refuses a certificate for another key and accepts the right one; the
//! CA then enrolls devices with certificates that chain to that root.

mod common;

use std::path::Path;

use common::*;
use der::Decode;

const PIN: &str = "2468";

fn openssl(args: &[&str]) {
    let (ok, out) = run("openssl", args, &[]);
    assert!(ok, "openssl {}: {out}", args.join(" "));
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_root_signs_a_p384_issuing_key_held_in_softhsm() {
    let Some(module) = require("SoftHSM", "ATTESTCA_TEST_PKCS11_MODULE") else {
        return;
    };
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
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Offline Test Root",
        "-days",
        "3650",
        "-keyout",
        &t("root.key"),
        "-out",
        &t("root.pem"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    std::fs::write(
        tmp.path().join("ca.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &t("issuing.csr"),
        "-CA",
        &t("root.pem"),
        "-CAkey",
        &t("root.key"),
        "-set_serial",
        "0x1001",
        "-days",
        "1825",
        "-extfile",
        &t("ca.ext"),
        "-out",
        &t("issuing.crt"),
    ]);

    // A certificate for some other key is refused.
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-subj",
        "/CN=Impostor",
        "-keyout",
        &t("other.key"),
        "-out",
        &t("other.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &t("other.csr"),
        "-CA",
        &t("root.pem"),
        "-CAkey",
        &t("root.key"),
        "-set_serial",
        "0x1002",
        "-days",
        "30",
        "-extfile",
        &t("ca.ext"),
        "-out",
        &t("other.crt"),
    ]);
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
    std::fs::write(
        tmp.path().join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .expect("ext");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &t("server.key"),
        "-out",
        &t("server.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &t("server.csr"),
        "-CA",
        &t("root.pem"),
        "-CAkey",
        &t("root.key"),
        "-set_serial",
        "0x2001",
        "-days",
        "30",
        "-extfile",
        &t("server.ext"),
        "-out",
        &t("server.crt"),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Line Rig CA",
        "-days",
        "30",
        "-keyout",
        &t("rig-ca.key"),
        "-out",
        &t("rig-ca.pem"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    std::fs::write(tmp.path().join("rig.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=rig-offline-1",
        "-keyout",
        &t("rig.key"),
        "-out",
        &t("rig.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &t("rig.csr"),
        "-CA",
        &t("rig-ca.pem"),
        "-CAkey",
        &t("rig-ca.key"),
        "-set_serial",
        "0x3001",
        "-days",
        "30",
        "-extfile",
        &t("rig.ext"),
        "-out",
        &t("rig.crt"),
    ]);
    // openssl writes traditional EC keys; attestca-rig and rustls want PKCS#8.
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        &t("rig.key"),
        "-out",
        &t("rig.p8"),
    ]);

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
        Some((Path::new(&t("rig.crt")), Path::new(&t("rig.p8")))),
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

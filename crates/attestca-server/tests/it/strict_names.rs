//! Names the CA signs are valid names: against a real `attestca serve --dev`, CSRs with hostile
//! subjects, subjectAltNames and key encodings get 400 with their `csr.*` reason code (in the
//! body and in the recorded event), and the widest names the CA accepts come back in
//! certificates that Python `cryptography` and OpenSSL parse strictly and pkilint finds clean.

use attestca_testkit as common;

use std::path::Path;
use std::str::FromStr;

use common::*;
use der::asn1::{Any, Ia5String};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

/// A CSR from attestca's own encoder with any subject (RFC 4514 text; `#hex` gives any string
/// type and content) and subjectAltNames: the bad cases openssl will not make.
fn crafted(subject: &str, alt_names: &[GeneralName]) -> Vec<u8> {
    let subject = Name::from_str(subject).expect("subject");
    attestca_sim::device::DeviceKey::generate()
        .and_then(|key| key.csr_with_alt_names(subject, alt_names))
        .expect("CSR")
}

/// `#` and the hex of a DER string of `tag` holding `bytes`, for [`crafted`].
fn hex_value(tag: Tag, bytes: &[u8]) -> String {
    let any = Any::new(tag, bytes).expect("value");
    format!("#{}", hex::encode(any.to_der().expect("DER")))
}

fn ia5(text: &str) -> Ia5String {
    Ia5String::new(text).expect("IA5")
}

/// `openssl req` in `dir` with these arguments, writing a DER CSR; returns it.
fn openssl_csr(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{name}.csr"));
    let key_out = dir.join(format!("{name}.key"));
    let (out_s, key_s) = (out.display().to_string(), key_out.display().to_string());
    let mut all = vec!["req", "-new", "-nodes", "-outform", "DER"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-out", &out_s, "-keyout", &key_s]);
    let (ok, log) = run("openssl", &all, &[]);
    assert!(ok, "openssl req: {log}");
    std::fs::read(out).expect("CSR")
}

/// A CSR for a P-256 key whose public point is written compressed (`openssl ec -conv_form`).
fn compressed_point_csr(dir: &Path) -> Vec<u8> {
    let plain = dir.join("plain.pem").display().to_string();
    let compressed = dir.join("compressed.pem").display().to_string();
    let (ok, log) = run(
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &plain,
        ],
        &[],
    );
    assert!(ok, "{log}");
    let (ok, log) = run(
        "openssl",
        &[
            "ec",
            "-in",
            &plain,
            "-conv_form",
            "compressed",
            "-out",
            &compressed,
        ],
        &[],
    );
    assert!(ok, "{log}");
    openssl_csr(
        dir,
        "compressed",
        &["-key", &compressed, "-subj", "/CN=dev"],
    )
}

/// The rig client of a dev data directory and the URL of the `lab` profile's simpleenroll.
fn lab(server: &ServerProcess, data: &Path) -> (reqwest::Client, String) {
    let pki = data.join("pki");
    (
        client_as(&pki.join("ca-chain.pem"), &pki, "rig"),
        format!("{}/.well-known/est/lab/simpleenroll", server.est_url()),
    )
}

async fn post(client: &reqwest::Client, url: &str, csr: &[u8]) -> (u16, Vec<u8>) {
    let response = client
        .post(url)
        .header("Content-Type", "application/pkcs10")
        .body(body(csr))
        .send()
        .await
        .expect("simpleenroll");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_names_are_refused_with_their_reason_codes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = ServerProcess::dev(&data, &tmp.path().join("server.log"));
    server.wait_ready().await;
    let (rig, url) = lab(&server, &data);
    let csrs = tmp.path().join("csrs");
    std::fs::create_dir_all(&csrs).expect("dir");

    let utf8 = |text: &str| hex_value(Tag::Utf8String, text.as_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "PrintableString with '*'",
            crafted(
                &format!("CN={}", hex_value(Tag::PrintableString, b"dev*1")),
                &[],
            ),
            "csr.subject_encoding",
        ),
        (
            "NUL in the CN",
            crafted(&format!("CN={}", utf8("dev\u{0}.evil.example")), &[]),
            "csr.subject_encoding",
        ),
        (
            "CR-LF in the CN",
            crafted(&format!("CN={}", utf8("dev\r\nX-Injected: 1")), &[]),
            "csr.subject_encoding",
        ),
        (
            "right-to-left override in O",
            crafted(&format!("CN=dev,O={}", utf8("Acme\u{202e}gnp.exe")), &[]),
            "csr.subject_encoding",
        ),
        (
            "CN of 65 characters",
            crafted(&format!("CN={}", "a".repeat(65)), &[]),
            "csr.subject_encoding",
        ),
        (
            "multi-valued RDN",
            openssl_csr(
                &csrs,
                "multi",
                &[
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-multivalue-rdn",
                    "-subj",
                    "/CN=dev+O=Acme",
                ],
            ),
            "csr.subject_rejected",
        ),
        (
            "street is no subject attribute attestca copies",
            crafted("CN=dev,street=Main St", &[]),
            "csr.subject_attribute_not_allowed",
        ),
        (
            "NUL in a dNSName",
            crafted("CN=dev", &[GeneralName::DnsName(ia5("dev\0.example.com"))]),
            "csr.san_malformed",
        ),
        (
            "CR-LF in a dNSName",
            crafted(
                "CN=dev",
                &[GeneralName::DnsName(ia5("dev.example.com\r\nevil.example"))],
            ),
            "csr.san_malformed",
        ),
        (
            "space in a dNSName",
            crafted("CN=dev", &[GeneralName::DnsName(ia5("dev 1.example.com"))]),
            "csr.san_malformed",
        ),
        (
            "URI without a scheme",
            crafted(
                "CN=dev",
                &[GeneralName::UniformResourceIdentifier(ia5("/relative"))],
            ),
            "csr.san_malformed",
        ),
        (
            "e-mail on a profile without email",
            crafted("CN=dev", &[GeneralName::Rfc822Name(ia5("a@example.com"))]),
            "csr.san_type_not_allowed",
        ),
        (
            "compressed EC point",
            compressed_point_csr(&csrs),
            "csr.key_encoding",
        ),
    ];
    for (what, csr, code) in &cases {
        let (status, text) = post(&rig, &url, csr).await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 400, "{what}: {text}");
        assert!(
            text.starts_with(&format!("{code}: ")),
            "{what}: want {code}, got {text}"
        );
        assert_eq!(
            text.trim_end().lines().count(),
            1,
            "{what}: the explanation is one line, whatever the CSR held: {text:?}"
        );
    }

    // Each refusal is recorded with its reason code; nothing was issued.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=ro",
        data.join("attestca.db").display()
    ))
    .await
    .expect("open the SQLite file");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM enrollment_events WHERE outcome = 'refused' ORDER BY occurred_at",
    )
    .fetch_all(&db)
    .await
    .expect("events");
    let mut want: Vec<String> = cases.iter().map(|(_, _, c)| c.to_string()).collect();
    let mut got = reasons.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "refusal events");
    let issued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM certificates WHERE profile <> 'ocsp-responder'")
            .fetch_one(&db)
            .await
            .expect("certificates");
    assert_eq!(issued, 0);
    db.close().await;
}

/// Python `cryptography`, strictly: load the DER, then read the subject, every extension and
/// the subjectAltName values; prints them one a line.
const PARSE_STRICTLY: &str = r#"
import sys
from cryptography import x509
cert = x509.load_der_x509_certificate(open(sys.argv[1], "rb").read())
for rdn in cert.subject.rdns:
    for attribute in rdn:
        print(f"{attribute.oid.dotted_string}={attribute.value}")
for extension in cert.extensions:
    print(f"extension {extension.oid.dotted_string}")
san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
for name in san:
    print(f"san {type(name).__name__} {name.value}")
print(cert.subject.rfc4514_string())
"#;

/// An openssl configuration for the widest names the CA accepts: every subject attribute at
/// its upper bound, PrintableString where the value allows it and UTF8String otherwise, every
/// subjectAltName type.
fn widest_names_config(path: &Path, names: &Widest, uris: &str) {
    // openssl's configuration reads ' as a quote unless escaped.
    let cn = names.cn.replace('\'', "\\'");
    let Widest { o, ou, l, st, .. } = names;
    let serial = "S".repeat(64);
    std::fs::write(
        path,
        format!(
            "[req]\nstring_mask = MASK:0x2002\nutf8 = yes\nprompt = no\n\
             distinguished_name = dn\nreq_extensions = ext\n[dn]\n\
             CN = {cn}\nO = {o}\nOU = {ou}\nC = DE\nL = {l}\nST = {st}\n\
             serialNumber = {serial}\n[ext]\nsubjectAltName = \
             DNS:dev-1.example.com, DNS:xn--bcher-kva.example, IP:10.0.0.7, IP:2001:db8::7, \
             email:first.last+tag@mail.example, {uris}\n",
        ),
    )
    .expect("openssl config");
}

/// `prefix` filled up to `chars` characters with `fill`.
fn padded(prefix: &str, fill: char, chars: usize) -> String {
    let mut text = prefix.to_owned();
    text.extend(std::iter::repeat_n(
        fill,
        chars.saturating_sub(prefix.chars().count()),
    ));
    text
}

/// The subject values, each at its RFC 5280 upper bound: a PrintableString with its whole
/// alphabet but letters and digits (CN), UTF8Strings of two-byte characters (O, L, ST) and of
/// several scripts with an emoji, four bytes (OU).
struct Widest {
    cn: String,
    o: String,
    ou: String,
    l: String,
    st: String,
}

impl Widest {
    fn new() -> Self {
        Self {
            cn: padded("Device (1) +2, a-b./c:d=e?'f ", 'x', 64),
            o: padded("", 'Ä', 64),
            ou: padded("Línea 2 — Ωμέγα 中文 😀 ", 'u', 64),
            l: padded("Zürich ", 'ü', 128),
            st: padded("Île-de-France ", 'é', 128),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    missing_pkilint,
    ignore = "needs pkilint (ATTESTCA_TEST_PKILINT); tests/run.sh provides it"
)]
async fn the_widest_valid_names_parse_strictly_and_lint_clean() {
    // Fail, not skip, under tests/run.sh when a tool is missing.
    let python = python_with_cryptography();
    let names = Widest::new();
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = ServerProcess::dev_with(
        &data,
        &tmp.path().join("server.log"),
        &[(
            "ATTESTCA_PROFILES__LAB__SAN_TYPES",
            "[\"dns\", \"ip\", \"uri\", \"email\"]".to_owned(),
        )],
    );
    server.wait_ready().await;
    let (rig, url) = lab(&server, &data);

    // The https URI passes pkilint's URI check; urn: and spiffe: URIs are valid (RFC 3986) and
    // accepted, but pkilint's check knows only URL schemes (docs/est-profile.md).
    for (name, uris, only_finding) in [
        (
            "https",
            "URI:https://dev-1.example.com:8443/id/42?x=1",
            None,
        ),
        (
            "urn",
            "URI:urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6, URI:spiffe://factory.example/line/2",
            Some("pkix.invalid_uri_syntax"),
        ),
    ] {
        let config = tmp.path().join(format!("{name}.cnf"));
        widest_names_config(&config, &names, uris);
        let csr = openssl_csr(
            tmp.path(),
            name,
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-config",
                &config.display().to_string(),
            ],
        );
        let request = x509_cert::request::CertReq::from_der(&csr).expect("CSR");
        let tags: Vec<Tag> = request
            .info
            .subject
            .iter()
            .map(|atv| atv.value.tag())
            .collect();
        assert!(
            tags.contains(&Tag::PrintableString) && tags.contains(&Tag::Utf8String),
            "{tags:?}"
        );
        let (status, response) = post(&rig, &url, &csr).await;
        assert_eq!(
            status,
            200,
            "{name}: {}\n{}",
            String::from_utf8_lossy(&response),
            server.log_text()
        );
        let der = certificate_from_response(&response);
        let cert = x509_cert::Certificate::from_der(&der).expect("certificate");
        assert_eq!(
            cert.tbs_certificate().subject().to_der().expect("DER"),
            request.info.subject.to_der().expect("DER"),
            "the subject is copied as the CSR wrote it"
        );

        let der_path = tmp.path().join(format!("{name}.der"));
        let pem_path = tmp.path().join(format!("{name}.pem"));
        std::fs::write(&der_path, &der).expect("write DER");
        write_pem(&pem_path, &der);

        let (ok, parsed) = run(
            &python,
            &["-c", PARSE_STRICTLY, &der_path.display().to_string()],
            &[("PYTHONIOENCODING", "utf-8".to_owned())],
        );
        assert!(ok, "{name}: Python cryptography: {parsed}");
        for want in [
            format!("2.5.4.3={}", names.cn),
            format!("2.5.4.10={}", names.o),
            format!("2.5.4.11={}", names.ou),
            "2.5.4.6=DE".to_owned(),
            format!("2.5.4.7={}", names.l),
            format!("2.5.4.8={}", names.st),
            format!("2.5.4.5={}", "S".repeat(64)),
            "san DNSName dev-1.example.com".to_owned(),
            "san DNSName xn--bcher-kva.example".to_owned(),
            "san IPAddress 10.0.0.7".to_owned(),
            "san IPAddress 2001:db8::7".to_owned(),
            "san RFC822Name first.last+tag@mail.example".to_owned(),
        ] {
            assert!(
                parsed.lines().any(|l| l == want),
                "{name}: {want:?} not in\n{parsed}"
            );
        }
        let uri_count = parsed
            .lines()
            .filter(|l| l.starts_with("san UniformResourceIdentifier "))
            .count();
        assert_eq!(uri_count, uris.matches("URI:").count(), "{parsed}");

        let (ok, text) = run(
            "openssl",
            &[
                "x509",
                "-in",
                &pem_path.display().to_string(),
                "-noout",
                "-text",
                "-nameopt",
                "utf8,sep_comma_plus",
            ],
            &[],
        );
        assert!(ok, "{name}: openssl x509: {text}");
        for want in [
            "DNS:dev-1.example.com",
            "IP Address:2001:DB8:0:0:0:0:0:7",
            "email:first.last+tag@mail.example",
            &names.o,
            &names.l,
        ] {
            assert!(text.contains(want), "{name}: {want:?} not in\n{text}");
        }

        let (clean, findings) = lint_certificate(&pem_path);
        match only_finding {
            None => assert!(clean, "{name}: pkilint: {findings}"),
            Some(expected) => {
                let listed: Vec<&str> = findings
                    .lines()
                    .filter(|l| {
                        l.contains("(ERROR)") || l.contains("(WARNING)") || l.contains("(FATAL)")
                    })
                    .collect();
                assert!(
                    !listed.is_empty() && listed.iter().all(|l| l.contains(expected)),
                    "{name}: pkilint should report only {expected}: {findings}"
                );
            }
        }
    }
}

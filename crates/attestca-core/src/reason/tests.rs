//! [`Reason`] against the documentation: every code is documented (or listed below with why it
//! is not yet), and every code the docs' tables and the OpenAPI document name is a [`Reason`].
//! The table parsing is shared with the policy's tests ([`table_codes`]).

use std::collections::BTreeSet;

use super::Reason;

const EST_PROFILE: &str = include_str!("../../../../docs/est-profile.md");
const ATTESTATION: &str = include_str!("../../../../docs/attestation.md");
const RENEWAL: &str = include_str!("../../../../docs/renewal.md");
const OPERATOR_API: &str = include_str!("../../../../docs/operator-api.md");
const OPERATIONS: &str = include_str!("../../../../docs/operations.md");
const TRANSPARENCY: &str = include_str!("../../../../docs/transparency.md");
const OPENAPI: &str = include_str!("../../../../openapi/attestca.yaml");

/// The namespaces of reason codes, to tell a code (`csr.malformed`) from a configuration key
/// (`server.body_read_timeout_secs`) in a table.
const PREFIXES: &[&str] = &[
    "auth",
    "profile",
    "csr",
    "attestation",
    "reenroll",
    "enroll",
    "nonce",
    "request",
    "overload",
    "service",
    "storage",
    "signer",
    "certificate",
    "device",
    "route",
    "ocsp",
    "issuance",
    "ak",
    "log",
];

/// Codes the server produces that no document lists yet, and where they come from. A code
/// leaves this list when it is documented (the test fails while it is on both).
const UNDOCUMENTED: &[(Reason, &str)] = &[];

/// Whether `token` looks like a reason code: `<known prefix>.<lower_snake>`.
pub(crate) fn is_code(token: &str) -> bool {
    token.split_once('.').is_some_and(|(prefix, rest)| {
        PREFIXES.contains(&prefix)
            && !rest.is_empty()
            && rest.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The back-ticked codes of `text`.
pub(crate) fn backticked_codes(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| is_code(t))
        .map(str::to_owned)
        .collect()
}

/// The back-ticked codes in the table rows of a Markdown document.
pub(crate) fn table_codes(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter(|l| l.starts_with('|'))
        .flat_map(backticked_codes)
        .collect()
}

/// The codes the OpenAPI document gives the operator API's `error.code`: its `const`s and
/// `enum`s, its examples, and the list in `ErrorDocument`'s description.
fn openapi_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let mut take = |list: &str| {
        codes.extend(
            list.split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace())
                .filter(|t| is_code(t))
                .map(str::to_owned),
        )
    };
    for line in OPENAPI.lines() {
        // `code: {const: x}`, `code: {enum: [x, y]}`, `code: {type: string, examples: [x]}`.
        let Some((_, rest)) = line.split_once("code: {") else {
            continue;
        };
        for marker in ["const: ", "enum: [", "examples: ["] {
            if let Some((_, rest)) = rest.split_once(marker) {
                take(rest.split(['}', ']']).next().unwrap_or(""));
            }
        }
    }
    let stable = OPENAPI
        .split_once("`code` is stable (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list)
        .expect("ErrorDocument lists its codes");
    take(stable);
    codes
}

/// Every code the docs' reason-code tables name (EST, attestation, renewal, operator API), the
/// `overload.*` codes of operations.md's limits table (its other tables name configuration keys
/// such as `signer.pin_file`), the `reenroll.*` codes of renewal.md's prose, and the OpenAPI
/// document's codes.
fn documented_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for doc in [EST_PROFILE, ATTESTATION, RENEWAL, OPERATOR_API] {
        codes.extend(table_codes(doc));
    }
    codes.extend(
        table_codes(OPERATIONS)
            .into_iter()
            .filter(|c| c.starts_with("overload.")),
    );
    codes.extend(
        backticked_codes(RENEWAL)
            .into_iter()
            .filter(|c| c.starts_with("reenroll.")),
    );
    codes.extend(openapi_codes());
    codes
}

/// Whether the docs mention `code` anywhere (tables, prose, OpenAPI).
fn mentioned(code: &str) -> bool {
    let quoted = format!("`{code}`");
    [
        EST_PROFILE,
        ATTESTATION,
        RENEWAL,
        OPERATOR_API,
        OPERATIONS,
        TRANSPARENCY,
    ]
    .iter()
    .any(|doc| doc.contains(&quoted))
        || openapi_codes().contains(code)
}

#[test]
fn every_documented_code_is_a_reason() {
    let documented = documented_codes();
    assert!(documented.len() > 80, "tables not found: {documented:?}");
    let unknown: Vec<&String> = documented
        .iter()
        .filter(|c| Reason::parse(c).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "documented codes that are not a Reason: {unknown:?}"
    );
}

#[test]
fn every_reason_is_documented() {
    let undocumented: BTreeSet<Reason> = UNDOCUMENTED.iter().map(|(r, _)| *r).collect();
    for reason in Reason::ALL {
        let documented = mentioned(reason.as_str());
        if undocumented.contains(reason) {
            assert!(
                !documented,
                "{reason} is documented now: take it off UNDOCUMENTED"
            );
        } else {
            assert!(documented, "{reason} is not in the docs");
        }
    }
}

#[test]
fn the_operator_api_codes_agree_with_openapi() {
    let tables = table_codes(OPERATOR_API);
    let openapi = openapi_codes();
    assert!(tables.len() >= 15, "operator-api.md's table: {tables:?}");
    assert_eq!(tables, openapi, "operator-api.md's table and openapi");
}

#[test]
fn codes_are_distinct_and_parse_back() {
    let strings: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        strings.len(),
        Reason::ALL.len(),
        "no two codes share a string"
    );
    for reason in Reason::ALL {
        assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
        assert_eq!(reason.to_string(), reason.as_str());
        assert!(is_code(reason.as_str()), "{reason} has a known namespace");
        assert_eq!(
            reason.namespace(),
            reason.as_str().split('.').next().unwrap_or_default()
        );
    }
    assert_eq!(Reason::parse("csr.malformed "), None);
    assert_eq!(Reason::parse(""), None);
}

/// A variant's name is its code in CamelCase, so reading one tells the other.
#[test]
fn variant_names_spell_their_codes() {
    for reason in Reason::ALL {
        let camel: String = reason
            .as_str()
            .split(['.', '_'])
            .map(|word| {
                let mut chars = word.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect();
        assert_eq!(format!("{reason:?}"), camel);
    }
}

//! The evidence carrier: the CSR attribute id-aa-attestation holding an AttestationBundle
//! (draft-ietf-lamps-csr-attestation), or the older EvidenceBundle whose statements end in an
//! optional `hint` string; the bytes are otherwise identical, so one decoder reads both. The
//! hint was an IA5String in the drafts and a UTF8String in the IETF's own TPM sample: either
//! is accepted (and ignored: it only told a verifier which service to ask).

use super::EvidenceCertificate;
use const_oid::ObjectIdentifier;
use der::asn1::Any;
use der::{Decode, Encode, Sequence, Tag, Tagged};
use sha2::{Digest, Sha256};
use x509_cert::request::CertReq;

use super::{
    AttestationError, ID_AA_ATTESTATION, MAX_POOL_CERTIFICATES, MAX_STATEMENTS, too_complex,
};
use crate::reason::Reason;

/// `AttestationStatement ::= SEQUENCE { type OID, stmt ANY, hint <string> OPTIONAL }`.
#[derive(Clone, Debug, Sequence)]
pub struct AttestationStatement {
    pub statement_type: ObjectIdentifier,
    pub stmt: Any,
    /// IA5String or UTF8String (checked by [`decode`]).
    #[asn1(optional = "true")]
    pub hint: Option<Any>,
}

/// `AttestationBundle ::= SEQUENCE { attestations SEQUENCE OF AttestationStatement,
/// certs SEQUENCE OF LimitedCertChoices OPTIONAL }`.
#[derive(Clone, Debug, Sequence)]
pub struct AttestationBundle {
    pub attestations: Vec<AttestationStatement>,
    #[asn1(optional = "true")]
    pub certs: Option<Vec<Any>>,
}

/// A decoded bundle: statements, the certificate pool, and the hash the audit record keeps.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// `(type, DER of stmt)` in bundle order.
    pub statements: Vec<(ObjectIdentifier, Vec<u8>)>,
    pub certificates: Vec<EvidenceCertificate>,
    /// SHA-256 of the bundle's DER.
    pub sha256: Vec<u8>,
}

/// Finds and decodes the evidence in a CSR; `Ok(None)` when the CSR carries none.
pub fn from_csr(request: &CertReq) -> Result<Option<Evidence>, AttestationError> {
    let mut found = request
        .info
        .attributes
        .iter()
        .filter(|a| a.oid == ID_AA_ATTESTATION);
    let Some(attribute) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(AttestationError::malformed(
            Reason::AttestationMultipleAttributes,
            "the CSR carries more than one attestation attribute",
        ));
    }
    if attribute.values.len() != 1 {
        return Err(AttestationError::malformed(
            Reason::AttestationMalformed,
            "the attestation attribute must hold exactly one value",
        ));
    }
    let Some(value) = attribute.values.iter().next() else {
        return Ok(None);
    };
    let der = value
        .to_der()
        .map_err(|e| AttestationError::malformed(Reason::AttestationMalformed, e.to_string()))?;
    decode(&der).map(Some)
}

/// Decodes the DER of an AttestationBundle / EvidenceBundle.
pub fn decode(der: &[u8]) -> Result<Evidence, AttestationError> {
    let bundle = AttestationBundle::from_der(der).map_err(|e| {
        AttestationError::malformed(
            Reason::AttestationMalformed,
            format!("the attestation attribute is not an AttestationBundle: {e}"),
        )
    })?;
    if bundle.attestations.is_empty() {
        return Err(AttestationError::malformed(
            Reason::AttestationMalformed,
            "the AttestationBundle holds no statement",
        ));
    }
    // Decoding is linear in the body (64 KiB at most); what follows costs per statement and
    // per certificate, so both are bounded before anything is verified.
    if bundle.attestations.len() > MAX_STATEMENTS {
        return Err(too_complex(format!(
            "the AttestationBundle holds {} statements; at most {MAX_STATEMENTS} are accepted",
            bundle.attestations.len()
        )));
    }
    if let Some(hint) = bundle.attestations.iter().find_map(|s| {
        s.hint
            .as_ref()
            .filter(|h| !matches!(h.tag(), Tag::Ia5String | Tag::Utf8String))
    }) {
        return Err(AttestationError::malformed(
            Reason::AttestationMalformed,
            format!(
                "a statement's hint is a {}, not an IA5String or UTF8String",
                hint.tag()
            ),
        ));
    }
    let certs = bundle.certs.unwrap_or_default();
    if certs.len() > MAX_POOL_CERTIFICATES {
        return Err(too_complex(format!(
            "the AttestationBundle brings {} certificates; at most {MAX_POOL_CERTIFICATES} are accepted",
            certs.len()
        )));
    }
    let mut certificates = Vec::new();
    for choice in certs {
        // LimitedCertChoices: a plain Certificate, or `other` ([3]), which no format here uses.
        if choice.tag() == Tag::Sequence {
            let der = choice.to_der().map_err(|e| {
                AttestationError::malformed(Reason::AttestationMalformed, e.to_string())
            })?;
            certificates.push(EvidenceCertificate::from_der(&der).map_err(|e| {
                AttestationError::malformed(
                    Reason::AttestationMalformed,
                    format!("a certificate in the bundle does not decode: {e}"),
                )
            })?);
        }
    }
    let statements = bundle
        .attestations
        .iter()
        .map(|s| Ok((s.statement_type, s.stmt.to_der()?)))
        .collect::<Result<Vec<_>, der::Error>>()
        .map_err(|e| AttestationError::malformed(Reason::AttestationMalformed, e.to_string()))?;
    Ok(Evidence {
        statements,
        certificates,
        sha256: Sha256::digest(der).to_vec(),
    })
}

/// Encodes a bundle (for the simulated secure element and tests).
pub fn encode(
    statements: &[(ObjectIdentifier, Vec<u8>)],
    certs: &[Vec<u8>],
) -> der::Result<Vec<u8>> {
    let attestations = statements
        .iter()
        .map(|(t, stmt)| {
            Ok(AttestationStatement {
                statement_type: *t,
                stmt: Any::from_der(stmt)?,
                hint: None,
            })
        })
        .collect::<der::Result<Vec<_>>>()?;
    let certs = certs
        .iter()
        .map(|c| Any::from_der(c))
        .collect::<der::Result<Vec<_>>>()?;
    AttestationBundle {
        attestations,
        certs: if certs.is_empty() { None } else { Some(certs) },
    }
    .to_der()
}

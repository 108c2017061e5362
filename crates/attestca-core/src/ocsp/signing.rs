//! Building and signing OCSP responses with the delegated responder's key, and the signed
//! bytes as they are kept and served.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC;
use der::asn1::{Any, BitString, ContextSpecific, GeneralizedTime, Null, OctetString};
use der::{Decode, Encode, TagMode, TagNumber};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;

use super::OcspError;
use super::asn1::{
    BasicOcspResponse, CertId, CertStatus, OCSP_V1, OcspResponse, OcspResponseStatus, ResponderId,
    ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
};
use crate::record::CertStatus as StoredStatus;
use crate::serial::Serial;
use crate::signer::Signer;

/// What the CA says about one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertState {
    Good,
    Revoked {
        /// Unix seconds.
        at: i64,
        /// Left out for `unspecified`, as in the CRL (RFC 5280 5.3.1).
        reason: Option<CrlReason>,
    },
    /// Never issued by this CA.
    Unknown,
}

impl CertState {
    /// The state of a stored certificate (`status` and revocation columns of the store).
    pub fn from_store(status: StoredStatus, revoked_at: Option<i64>, reason: Option<&str>) -> Self {
        if status == StoredStatus::Revoked {
            CertState::Revoked {
                at: revoked_at.unwrap_or(0),
                reason: reason.and_then(crate::revocation::reason_code),
            }
        } else {
            CertState::Good
        }
    }
}

/// One answer of a response.
#[derive(Clone, Debug)]
pub struct SingleAnswer {
    pub cert_id: CertId,
    pub state: CertState,
}

/// The delegated responder as responses name it: its key, its certificate, and the encoded
/// `certs` field every response carries so that clients can verify the delegation.
pub struct ResponderIdentity {
    signer: Arc<dyn Signer>,
    certificate: Any,
    key_hash: OctetString,
    certs_field: Bytes,
    /// Serial of the responder certificate.
    pub serial: Serial,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds: no response signed with this identity is valid beyond it.
    pub not_after: i64,
}

impl ResponderIdentity {
    /// Binds a responder certificate to its key.
    pub fn new(
        signer: Arc<dyn Signer>,
        certificate_der: &[u8],
        serial: Serial,
        not_before: i64,
        not_after: i64,
    ) -> Result<Self, OcspError> {
        let encoding = |e: der::Error| OcspError::Internal(format!("responder certificate: {e}"));
        let certificate = Any::from_der(certificate_der).map_err(encoding)?;
        let key_hash = OctetString::new(
            super::request::CertIdHash::Sha1
                .digest(signer.public_key().subject_public_key.raw_bytes()),
        )
        .map_err(encoding)?;
        let certs_field = ContextSpecific {
            tag_number: TagNumber(0),
            tag_mode: TagMode::Explicit,
            value: vec![certificate.clone()],
        }
        .to_der()
        .map_err(encoding)?;
        Ok(Self {
            signer,
            certificate,
            key_hash,
            certs_field: Bytes::from(certs_field),
            serial,
            not_before,
            not_after,
        })
    }

    /// The signing key.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// DER of the responder certificate.
    pub fn certificate_der(&self) -> Result<Vec<u8>, der::Error> {
        self.certificate.to_der()
    }
}

/// A signed `OCSPResponse`, kept as the bytes of its own part and the `certs` field it shares
/// with every response of the same responder certificate (so that a million cached responses
/// do not hold a million copies of that certificate).
#[derive(Clone, Debug)]
pub struct SignedResponse {
    head: Bytes,
    tail: Bytes,
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds.
    pub next_update: i64,
    /// A hash of the whole response, for `ETag`.
    pub etag: u64,
}

impl SignedResponse {
    /// The DER of the whole `OCSPResponse`.
    pub fn body(&self) -> Bytes {
        if self.tail.is_empty() {
            return self.head.clone();
        }
        let mut body = Vec::with_capacity(self.head.len() + self.tail.len());
        body.extend_from_slice(&self.head);
        body.extend_from_slice(&self.tail);
        Bytes::from(body)
    }
}

fn generalized_time(unix: i64) -> Result<GeneralizedTime, OcspError> {
    GeneralizedTime::from_unix_duration(Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
        .map_err(|e| OcspError::Internal(format!("time {unix}: {e}")))
}

fn cert_status(state: CertState) -> Result<CertStatus, OcspError> {
    Ok(match state {
        CertState::Good => CertStatus::Good(Null),
        CertState::Unknown => CertStatus::Unknown(Null),
        CertState::Revoked { at, reason } => CertStatus::Revoked(RevokedInfo {
            revocation_time: generalized_time(at)?,
            revocation_reason: reason,
        }),
    })
}

/// Signs a response with `answers`, whose statuses were known at `this_update`, valid for
/// `validity_secs` from then (never beyond the responder certificate), echoing `nonce` if
/// given; producedAt is the signing time.
pub fn sign(
    identity: &ResponderIdentity,
    answers: &[SingleAnswer],
    this_update: i64,
    validity_secs: i64,
    nonce: Option<&Extension>,
) -> Result<SignedResponse, OcspError> {
    let encoding = |e: der::Error| OcspError::Internal(format!("encoding a response: {e}"));
    let next_update = (this_update + validity_secs).min(identity.not_after);
    let produced_at = generalized_time(crate::time::unix_now().max(this_update))?;
    let (this, next) = (
        generalized_time(this_update)?,
        generalized_time(next_update)?,
    );
    let responses = answers
        .iter()
        .map(|a| {
            Ok(SingleResponse {
                cert_id: a.cert_id.clone(),
                cert_status: cert_status(a.state)?,
                this_update: this,
                next_update: Some(next),
                single_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, OcspError>>()?;
    let tbs = ResponseData {
        version: OCSP_V1,
        responder_id: ResponderId::ByKey(identity.key_hash.clone()),
        produced_at,
        responses,
        response_extensions: nonce.map(|n| vec![n.clone()]),
    }
    .to_der()
    .map_err(encoding)?;
    let signature = identity.signer.sign(&tbs)?;
    let basic = BasicOcspResponse {
        tbs_response_data: Any::from_der(&tbs).map_err(encoding)?,
        signature_algorithm: identity.signer.algorithm().signature_algorithm(),
        signature: BitString::from_bytes(&signature).map_err(encoding)?,
        certs: Some(vec![identity.certificate.clone()]),
    }
    .to_der()
    .map_err(encoding)?;
    let full = OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic).map_err(encoding)?,
        }),
    }
    .to_der()
    .map_err(encoding)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &full);
    let mut etag = [0u8; 8];
    etag.copy_from_slice(&digest.as_ref()[..8]);
    let tail = &identity.certs_field;
    let (head, tail) = if full.ends_with(tail) {
        (
            Bytes::copy_from_slice(&full[..full.len() - tail.len()]),
            tail.clone(),
        )
    } else {
        (Bytes::from(full), Bytes::new())
    };
    Ok(SignedResponse {
        head,
        tail,
        this_update,
        next_update,
        etag: u64::from_be_bytes(etag),
    })
}

/// The unsigned response of an error status (RFC 6960 2.3): no responseBytes.
pub fn error_response(status: OcspResponseStatus) -> Bytes {
    // SEQUENCE { ENUMERATED status }: five fixed bytes.
    Bytes::from(vec![0x30, 0x03, 0x0a, 0x01, status as u8])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::asn1::{CertStatus, ResponseData};
    use super::super::request::{CertIdHash, IssuerHashes, SerialKey};
    use super::*;
    use crate::issuance::software_ca::SoftwareCa;

    /// A responder identity certified by a throwaway CA, valid until `not_after`.
    pub(crate) fn identity(not_after: i64) -> (SoftwareCa, ResponderIdentity) {
        let ca = SoftwareCa::self_signed("CN=Signing Test CA", 1).expect("CA");
        let (key, _) = crate::issuance::software_ca::new_key().expect("key");
        let der = ca
            .issue(
                crate::issuance::software_ca::name("CN=Test Responder").expect("name"),
                key.public_key(),
                86_400,
                Vec::new(),
            )
            .expect("responder certificate");
        let identity =
            ResponderIdentity::new(Arc::new(key), &der, Serial::from_octets(&[1]), 0, not_after)
                .expect("id");
        (ca, identity)
    }

    fn decode(full: &[u8]) -> (BasicOcspResponse, ResponseData) {
        let response = OcspResponse::from_der(full).expect("OCSPResponse");
        assert_eq!(response.response_status, OcspResponseStatus::Successful);
        let bytes = response.response_bytes.expect("responseBytes");
        assert_eq!(bytes.response_type, ID_PKIX_OCSP_BASIC);
        let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic");
        let data = ResponseData::from_der(&basic.tbs_response_data.to_der().expect("tbs"))
            .expect("ResponseData");
        (basic, data)
    }

    #[test]
    fn signed_response_verifies_and_splits_around_the_shared_certificate() {
        let (ca, identity) = identity(i64::MAX / 2);
        let issuer = IssuerHashes::of(ca.certificate()).expect("hashes");
        let serial = SerialKey::new(&[0x42; 16]).expect("serial");
        let answers = [SingleAnswer {
            cert_id: issuer.cert_id(CertIdHash::Sha1, &serial).expect("id"),
            state: CertState::Revoked {
                at: 1_800_000_000,
                reason: Some(CrlReason::KeyCompromise),
            },
        }];
        let signed = sign(&identity, &answers, 1_800_000_100, 3600, None).expect("sign");
        assert_eq!(
            (signed.this_update, signed.next_update),
            (1_800_000_100, 1_800_003_700)
        );
        let full = signed.body();
        assert!(!signed.tail.is_empty(), "the certificate is shared");
        assert_eq!(full.len(), signed.head.len() + signed.tail.len());
        let (basic, data) = decode(&full);
        let tbs = basic.tbs_response_data.to_der().expect("tbs");
        assert!(crate::verify::verify(
            identity.signer().public_key(),
            basic.signature_algorithm.oid,
            &tbs,
            basic.signature.raw_bytes(),
        ));
        assert_eq!(
            basic.certs.expect("certs")[0].to_der().expect("der"),
            identity.certificate_der().expect("der")
        );
        assert!(data.response_extensions.is_none());
        assert_eq!(data.responses.len(), 1);
        assert_eq!(data.responses[0].cert_id, answers[0].cert_id);
        match &data.responses[0].cert_status {
            CertStatus::Revoked(info) => {
                assert_eq!(info.revocation_reason, Some(CrlReason::KeyCompromise));
                assert_eq!(
                    info.revocation_time.to_unix_duration().as_secs(),
                    1_800_000_000
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn next_update_never_passes_the_responder_certificate_and_nonces_are_echoed() {
        let (ca, identity) = identity(1_800_000_600);
        let issuer = IssuerHashes::of(ca.certificate()).expect("hashes");
        let nonce = Extension {
            extn_id: const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new([4, 2, 0xab, 0xcd]).expect("nonce"),
        };
        let answers = [SingleAnswer {
            cert_id: issuer
                .cert_id(CertIdHash::Sha256, &SerialKey::new(&[1]).expect("serial"))
                .expect("id"),
            state: CertState::Unknown,
        }];
        let signed = sign(&identity, &answers, 1_800_000_000, 3600, Some(&nonce)).expect("sign");
        assert_eq!(signed.next_update, 1_800_000_600);
        let (_, data) = decode(&signed.body());
        assert_eq!(data.response_extensions, Some(vec![nonce]));
        assert_eq!(data.responses[0].cert_status, CertStatus::Unknown(Null));
    }

    #[test]
    fn unspecified_reasons_are_left_out_as_in_the_crl() {
        assert_eq!(
            CertState::from_store(
                crate::record::CertStatus::Revoked,
                Some(5),
                Some("unspecified")
            ),
            CertState::Revoked {
                at: 5,
                reason: None
            }
        );
        assert_eq!(
            CertState::from_store(
                crate::record::CertStatus::Revoked,
                Some(5),
                Some("superseded")
            ),
            CertState::Revoked {
                at: 5,
                reason: Some(CrlReason::Superseded)
            }
        );
        assert_eq!(
            CertState::from_store(crate::record::CertStatus::Active, None, None),
            CertState::Good
        );
    }
}

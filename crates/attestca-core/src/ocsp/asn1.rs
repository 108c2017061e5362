//! The RFC 6960 OCSP structures (module `OCSP-2013-88`, EXPLICIT TAGS), written with `der`'s
//! derive macros: no released x509-ocsp speaks der 0.8.

use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, GeneralizedTime, Int, Null, OctetString};
use der::{Choice, Enumerated, Sequence};
use x509_cert::AlgorithmIdentifier;
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

/// `Version ::= INTEGER { v1(0) }`: the only version there is.
pub const OCSP_V1: u8 = 0;

fn v1() -> u8 {
    OCSP_V1
}

/// `OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspRequest {
    pub tbs_request: TbsRequest,
    #[asn1(context_specific = "0", optional = "true")]
    pub optional_signature: Option<RequestSignature>,
}

/// `TBSRequest`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TbsRequest {
    #[asn1(context_specific = "0", default = "v1")]
    pub version: u8,
    #[asn1(context_specific = "1", optional = "true")]
    pub requestor_name: Option<GeneralName>,
    pub request_list: Vec<Request>,
    #[asn1(context_specific = "2", optional = "true")]
    pub request_extensions: Option<Extensions>,
}

/// `Signature` of a signed request (accepted, not verified: attestca answers anyone).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RequestSignature {
    pub signature_algorithm: AlgorithmIdentifier,
    pub signature: BitString,
    #[asn1(context_specific = "0", optional = "true")]
    pub certs: Option<Vec<Any>>,
}

/// `Request ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT OPTIONAL }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct Request {
    pub req_cert: CertId,
    #[asn1(context_specific = "0", optional = "true")]
    pub single_request_extensions: Option<Extensions>,
}

/// `CertID`: which certificate, named by hashes of its issuer and its serial number.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct CertId {
    pub hash_algorithm: AlgorithmIdentifier,
    pub issuer_name_hash: OctetString,
    pub issuer_key_hash: OctetString,
    pub serial_number: Int,
}

/// `OCSPResponseStatus`.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[repr(u32)]
pub enum OcspResponseStatus {
    Successful = 0,
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    SigRequired = 5,
    Unauthorized = 6,
}

/// `OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT OPTIONAL }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspResponse {
    pub response_status: OcspResponseStatus,
    #[asn1(context_specific = "0", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// `ResponseBytes`: the type (id-pkix-ocsp-basic) and the DER of the response.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseBytes {
    pub response_type: ObjectIdentifier,
    pub response: OctetString,
}

/// `BasicOCSPResponse`. The signed part is carried as DER (`Any`) so that what was signed is
/// exactly what is sent.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct BasicOcspResponse {
    pub tbs_response_data: Any,
    pub signature_algorithm: AlgorithmIdentifier,
    pub signature: BitString,
    #[asn1(context_specific = "0", optional = "true")]
    pub certs: Option<Vec<Any>>,
}

/// `ResponseData`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseData {
    #[asn1(context_specific = "0", default = "v1")]
    pub version: u8,
    pub responder_id: ResponderId,
    pub produced_at: GeneralizedTime,
    pub responses: Vec<SingleResponse>,
    #[asn1(context_specific = "1", optional = "true")]
    pub response_extensions: Option<Extensions>,
}

/// `ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash }` (explicitly tagged).
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum ResponderId {
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    ByName(Name),
    /// SHA-1 of the responder's subjectPublicKey bits.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

/// `SingleResponse`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SingleResponse {
    pub cert_id: CertId,
    pub cert_status: CertStatus,
    pub this_update: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", optional = "true")]
    pub single_extensions: Option<Extensions>,
}

/// `CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo,
/// unknown [2] IMPLICIT UnknownInfo }`
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

/// `RevokedInfo ::= SEQUENCE { revocationTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RevokedInfo {
    pub revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true")]
    pub revocation_reason: Option<CrlReason>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Decode, Encode};

    fn cert_id(serial: &[u8]) -> CertId {
        CertId {
            hash_algorithm: AlgorithmIdentifier {
                oid: const_oid::db::rfc5912::ID_SHA_1,
                parameters: Some(Any::from(Null)),
            },
            issuer_name_hash: OctetString::new([1u8; 20]).expect("hash"),
            issuer_key_hash: OctetString::new([2u8; 20]).expect("hash"),
            serial_number: Int::new(serial).expect("serial"),
        }
    }

    #[test]
    fn request_round_trips_and_omits_the_default_version() {
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: OCSP_V1,
                requestor_name: None,
                request_list: vec![
                    Request {
                        req_cert: cert_id(&[0x12, 0x34]),
                        single_request_extensions: None,
                    },
                    Request {
                        req_cert: cert_id(&[0x40; 16]),
                        single_request_extensions: None,
                    },
                ],
                request_extensions: None,
            },
            optional_signature: None,
        };
        let der = request.to_der().expect("encode");
        // SEQUENCE { SEQUENCE { SEQUENCE OF ... } }: no [0] version in DER.
        assert_eq!(der[0], 0x30);
        assert!(!der.windows(2).any(|w| w == [0xa0, 0x03]));
        assert_eq!(OcspRequest::from_der(&der).expect("decode"), request);
    }

    #[test]
    fn cert_status_uses_implicit_context_tags() {
        assert_eq!(CertStatus::Good(Null).to_der().expect("good"), [0x80, 0x00]);
        assert_eq!(
            CertStatus::Unknown(Null).to_der().expect("unknown"),
            [0x82, 0x00]
        );
        let revoked = CertStatus::Revoked(RevokedInfo {
            revocation_time: GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(
                1_700_000_000,
            ))
            .expect("time"),
            revocation_reason: Some(CrlReason::KeyCompromise),
        });
        let der = revoked.to_der().expect("revoked");
        assert_eq!(der[0], 0xa1, "[1] IMPLICIT, constructed");
        // GeneralizedTime, then [0] EXPLICIT ENUMERATED 1.
        assert_eq!(&der[der.len() - 5..], [0xa0, 0x03, 0x0a, 0x01, 0x01]);
        assert_eq!(CertStatus::from_der(&der).expect("decode"), revoked);
    }

    #[test]
    fn responder_id_by_key_is_explicitly_tagged() {
        let id = ResponderId::ByKey(OctetString::new([7u8; 20]).expect("hash"));
        let der = id.to_der().expect("encode");
        assert_eq!(&der[..4], [0xa2, 22, 0x04, 20]);
        assert_eq!(ResponderId::from_der(&der).expect("decode"), id);
    }

    #[test]
    fn error_response_is_five_bytes() {
        let response = OcspResponse {
            response_status: OcspResponseStatus::MalformedRequest,
            response_bytes: None,
        };
        assert_eq!(
            response.to_der().expect("encode"),
            [0x30, 0x03, 0x0a, 0x01, 0x01]
        );
    }
}

//! Signature verification for X.509 structures (CSRs, certificates) with aws-lc.

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, ID_EC_PUBLIC_KEY, RSA_ENCRYPTION,
    SECP_256_R_1, SECP_384_R_1, SHA_256_WITH_RSA_ENCRYPTION, SHA_384_WITH_RSA_ENCRYPTION,
    SHA_512_WITH_RSA_ENCRYPTION,
};
use der::Decode;
use der::asn1::ObjectIdentifier as Oid;
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::certificate::{CertificateInner, Profile, Raw};

use crate::asn1::SignedEnvelope;

/// The kinds of public key attestca verifies signatures with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicKeyKind {
    P256,
    P384,
    Rsa,
}

/// The kind of a public key, if it is one attestca handles.
pub fn key_kind(spki: &SubjectPublicKeyInfo) -> Option<PublicKeyKind> {
    match spki.algorithm.oid {
        ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()?
                .decode_as::<Oid>()
                .ok()?;
            match curve {
                SECP_256_R_1 => Some(PublicKeyKind::P256),
                SECP_384_R_1 => Some(PublicKeyKind::P384),
                _ => None,
            }
        }
        RSA_ENCRYPTION => Some(PublicKeyKind::Rsa),
        _ => None,
    }
}

/// The aws-lc algorithm for a key kind and a signature algorithm OID, if the pair is accepted.
pub fn algorithm(
    key: PublicKeyKind,
    signature_algorithm: ObjectIdentifier,
) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match (key, signature_algorithm) {
        (PublicKeyKind::P256, ECDSA_WITH_SHA_256) => &sig::ECDSA_P256_SHA256_ASN1,
        (PublicKeyKind::P256, ECDSA_WITH_SHA_384) => &sig::ECDSA_P256_SHA384_ASN1,
        (PublicKeyKind::P256, ECDSA_WITH_SHA_512) => &sig::ECDSA_P256_SHA512_ASN1,
        (PublicKeyKind::P384, ECDSA_WITH_SHA_256) => &sig::ECDSA_P384_SHA256_ASN1,
        (PublicKeyKind::P384, ECDSA_WITH_SHA_384) => &sig::ECDSA_P384_SHA384_ASN1,
        (PublicKeyKind::P384, ECDSA_WITH_SHA_512) => &sig::ECDSA_P384_SHA512_ASN1,
        (PublicKeyKind::Rsa, SHA_256_WITH_RSA_ENCRYPTION) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (PublicKeyKind::Rsa, SHA_384_WITH_RSA_ENCRYPTION) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (PublicKeyKind::Rsa, SHA_512_WITH_RSA_ENCRYPTION) => &sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    })
}

/// Verifies `signature` over `message` with `spki` under `signature_algorithm`.
pub fn verify(
    spki: &SubjectPublicKeyInfo,
    signature_algorithm: ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Some(alg) = key_kind(spki).and_then(|k| algorithm(k, signature_algorithm)) else {
        return false;
    };
    UnparsedPublicKey::new(alg, spki.subject_public_key.raw_bytes())
        .verify(message, signature)
        .is_ok()
}

/// Whether the certificate `child_der` carries a valid signature by `issuer`'s key, over its
/// own TBS bytes (as given, never re-encoded).
pub fn issued_by<P: Profile>(child_der: &[u8], issuer: &CertificateInner<P>) -> bool {
    let (Ok(envelope), Ok(child)) = (
        SignedEnvelope::from_der(child_der),
        CertificateInner::<Raw>::from_der(child_der),
    ) else {
        return false;
    };
    let Ok(tbs) = der::Encode::to_der(&envelope.tbs) else {
        return false;
    };
    let Some(signature) = child.signature().as_bytes() else {
        return false;
    };
    verify(
        issuer.tbs_certificate().subject_public_key_info(),
        child.signature_algorithm().oid,
        &tbs,
        signature,
    )
}

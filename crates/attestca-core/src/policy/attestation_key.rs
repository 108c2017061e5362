//! The registration authority's rules for certifying a TPM's attestation key (AK): attestca as
//! the manufacturer's attestation CA (TCG "TPM 2.0 Keys for Device Identity and Attestation").
//!
//! A rig presents the TPM's endorsement-key (EK) certificate and the public area of an AK it
//! created in the same TPM. The CA certifies the AK only when
//! 1. the EK certificate chains to a trusted TPM vendor's EK root (the TPM is genuine),
//! 2. the AK is a restricted signing key that never leaves that TPM (it signs only
//!    TPM-generated structures such as TPM2_Certify's, and its private key is the TPM's),
//! 3. the TPM proved it holds both keys: it recovered a secret the CA encrypted to the EK and
//!    bound to the AK's name (TPM2_MakeCredential / TPM2_ActivateCredential), answered once,
//!    in time, by the rig that asked,
//! 4. the EK has no AK certificate yet, unless the policy allows another.
//!
//! Everything here is pure: the server looks up the trust anchors, the challenge and earlier
//! certificates, and this module decides.

use std::time::SystemTime;

use der::Decode;
use sha2::{Digest, Sha256};

use super::Refusal;
use super::attestation::NonceCheck;
use crate::attestation::chain::{self, PathOptions};
use crate::attestation::tpm::{self, PublicArea, TpmDescription, object_attributes as attr};
use crate::attestation::{EvidenceCertificate, VerificationBudget};
use crate::reason::Reason;

/// The certificate profile attestation-key certificates are recorded under.
pub const PROFILE: &str = "attestation-key";

/// A verified endorsement-key certificate: the TPM it names.
#[derive(Clone, Debug)]
pub struct Endorsement {
    pub certificate: EvidenceCertificate,
    /// The TPM's identity: the EK certificate's serial number, as the AK certificate's
    /// hardwareModuleName carries it.
    pub serial: Vec<u8>,
    /// `<EK issuer CN>/<EK serial, upper-case hex>`, as events and device identities show it.
    pub display: String,
    /// Manufacturer, model and version from the EK certificate's subjectAltName.
    pub tpm: Option<TpmDescription>,
}

/// Decodes the EK certificate and checks that it chains to one of `roots` at `at`, and that
/// its key is one the CA can encrypt a challenge to (RSA 2048).
pub fn check_endorsement(
    der: &[u8],
    roots: &[EvidenceCertificate],
    at: SystemTime,
) -> Result<Endorsement, Refusal> {
    let certificate = EvidenceCertificate::from_der(der).map_err(|e| {
        Refusal::new(
            Reason::AkEndorsementMalformed,
            format!("the EK certificate does not decode: {e}"),
        )
    })?;
    let tbs = certificate.tbs_certificate();
    let rsa_bits = match tbs.subject_public_key_info().algorithm.oid {
        const_oid::db::rfc5912::RSA_ENCRYPTION => crate::asn1::RsaPublicKey::from_der(
            tbs.subject_public_key_info().subject_public_key.raw_bytes(),
        )
        .ok()
        .map(|k| k.modulus_bits()),
        _ => None,
    };
    if rsa_bits != Some(2048) {
        return Err(Refusal::new(
            Reason::AkEndorsementMalformed,
            "the EK certificate's key is not RSA 2048 (the TCG default EK template)",
        ));
    }
    chain::build(
        &certificate,
        &[],
        roots,
        at,
        PathOptions::default(),
        &VerificationBudget::per_request(),
    )
    .map_err(|e| {
        Refusal::new(
            Reason::AkEndorsementUntrusted,
            format!(
                "the EK certificate is not under a trusted TPM vendor root: {}",
                e.detail
            ),
        )
    })?;
    let serial = tbs.serial_number().as_bytes().to_vec();
    let issuer = match tbs.issuer().common_name() {
        Ok(Some(cn)) => cn.value().into_owned(),
        _ => tbs.issuer().to_string(),
    };
    Ok(Endorsement {
        display: format!("{issuer}/{}", hex::encode_upper(&serial)),
        serial,
        tpm: TpmDescription::of_certificate(&certificate),
        certificate,
    })
}

/// Reads the AK's TPMT_PUBLIC and checks it is a restricted signing key generated in and
/// bound to its TPM, not a decryption key.
pub fn check_attestation_key(public_area: &[u8]) -> Result<PublicArea, Refusal> {
    let public = tpm::read_public_area(public_area).map_err(|e| {
        Refusal::new(
            Reason::AkPublicMalformed,
            format!("the AK public area: {}", e.detail),
        )
    })?;
    let required = [
        (attr::FIXED_TPM, "fixedTPM"),
        (attr::FIXED_PARENT, "fixedParent"),
        (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (attr::RESTRICTED, "restricted"),
        (attr::SIGN, "sign"),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(bit, _)| public.object_attributes & bit == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(Refusal::new(
            Reason::AkAttributes,
            format!(
                "an attestation key must be a restricted signing key bound to its TPM; it lacks {}",
                missing.join(", ")
            ),
        ));
    }
    if public.object_attributes & attr::DECRYPT != 0 {
        return Err(Refusal::new(
            Reason::AkAttributes,
            "an attestation key must not also be a decryption key",
        ));
    }
    Ok(public)
}

/// What a challenge is bound to: this EK certificate and this AK public area.
pub fn challenge_binding(endorsement_der: &[u8], ak_public_area: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(b"attestca attestation-key challenge v1\0");
    hash.update(Sha256::digest(endorsement_der));
    hash.update(Sha256::digest(ak_public_area));
    hash.finalize().to_vec()
}

/// What answering a challenge found.
pub fn challenge_verdict(found: NonceCheck) -> Result<(), Refusal> {
    match found {
        NonceCheck::Consumed => Ok(()),
        NonceCheck::Unknown => Err(Refusal::new(
            Reason::AkCredentialWrong,
            "the secret answers no challenge this CA made for this EK and AK: the TPM did not \
             prove it holds both keys",
        )),
        NonceCheck::Foreign => Err(Refusal::new(
            Reason::AkCredentialForeign,
            "the challenge was made for another rig",
        )),
        NonceCheck::Expired => Err(Refusal::new(
            Reason::AkCredentialExpired,
            "the challenge has expired: ask for a new one",
        )),
        NonceCheck::Reused | NonceCheck::Live => Err(Refusal::new(
            Reason::AkCredentialReused,
            "the challenge has already been answered",
        )),
    }
}

/// A second AK certificate for a TPM that has an active one only when the policy allows it.
pub fn reissue_verdict(existing: Option<&str>, allowed: bool) -> Result<(), Refusal> {
    match existing {
        Some(serial) if !allowed => Err(Refusal::new(
            Reason::AkAlreadyCertified,
            format!(
                "this TPM already has an attestation-key certificate (serial {serial}); \
                 attestation_keys.allow_reissue is off"
            ),
        )),
        _ => Ok(()),
    }
}

/// Fixtures for the policy's tests: an RSA 2048 EK certificate under a test EK root, and
/// TPMT_PUBLIC areas with chosen attributes.
#[cfg(test)]
pub(crate) mod fixtures {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    use der::{Decode, Encode};
    use x509_cert::SubjectPublicKeyInfo;
    use x509_cert::ext::pkix::KeyUsages;

    use crate::attestation::EvidenceCertificate;
    use crate::attestation::tpm::object_attributes as attr;
    use crate::issuance::extensions as ext;
    use crate::issuance::software_ca::{SoftwareCa, YEAR, name};

    /// The attributes TPM2_CreateAK gives an attestation key.
    pub(crate) const AK_ATTRIBUTES: u32 = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::RESTRICTED
        | attr::SIGN
        | 1 << 6; // userWithAuth

    /// A test TPM vendor: its EK root, and an EK certificate (DER) for a fresh RSA 2048 key.
    pub(crate) fn endorsement() -> (EvidenceCertificate, Vec<u8>) {
        let root = SoftwareCa::self_signed("CN=Test TPM Vendor EK Root", 10).expect("root");
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("RSA key");
        let spki_der = key.public_key().as_der().expect("SPKI");
        let spki = SubjectPublicKeyInfo::from_der(spki_der.as_ref()).expect("SPKI");
        let ek = root
            .issue(
                name("CN=unknown").expect("name"),
                &spki,
                YEAR,
                vec![
                    ext::basic_constraints(false, None).expect("bc"),
                    ext::key_usage(KeyUsages::KeyEncipherment.into()).expect("ku"),
                    ext::extended_key_usage(&[const_oid::ObjectIdentifier::new_unwrap(
                        "2.23.133.8.1",
                    )])
                    .expect("eku"),
                ],
            )
            .expect("EK certificate");
        let root = EvidenceCertificate::from_der(&root.certificate().to_der().expect("der"))
            .expect("root");
        (root, ek)
    }

    /// An RSA 2048 RSASSA-SHA256 TPMT_PUBLIC with `attributes`.
    pub(crate) fn rsa_public_area(attributes: u32) -> Vec<u8> {
        let mut area = Vec::new();
        area.extend(0x0001u16.to_be_bytes()); // TPM_ALG_RSA
        area.extend(0x000bu16.to_be_bytes()); // nameAlg SHA-256
        area.extend(attributes.to_be_bytes());
        area.extend(0u16.to_be_bytes()); // authPolicy: empty
        area.extend(0x0010u16.to_be_bytes()); // symmetric: NULL
        area.extend(0x0014u16.to_be_bytes()); // scheme: RSASSA
        area.extend(0x000bu16.to_be_bytes()); //   with SHA-256
        area.extend(2048u16.to_be_bytes());
        area.extend(0u32.to_be_bytes()); // exponent: default
        area.extend(256u16.to_be_bytes());
        let mut modulus = vec![0xc5u8; 256];
        modulus[255] |= 1;
        area.extend(modulus);
        area
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::fixtures::{AK_ATTRIBUTES, endorsement, rsa_public_area};
    use super::*;

    fn code<T: std::fmt::Debug>(result: Result<T, Refusal>) -> Option<Reason> {
        result.err().map(|r| r.code)
    }

    #[test]
    fn a_genuine_ek_and_a_restricted_ak_pass() {
        let (root, ek) = endorsement();
        let endorsement = check_endorsement(&ek, &[root], SystemTime::now()).expect("trusted EK");
        assert!(endorsement.display.starts_with("Test TPM Vendor EK Root/"));
        assert_eq!(
            endorsement.tpm, None,
            "the test EK certificate has no TPM SAN"
        );
        let area = rsa_public_area(AK_ATTRIBUTES);
        let ak = check_attestation_key(&area).expect("an AK");
        assert_eq!(ak.name[..2], [0x00, 0x0b]);
        assert_eq!(ak.name[2..], Sha256::digest(&area)[..]);
    }

    #[test]
    fn an_ek_out_of_its_validity_or_of_another_key_type_is_refused() {
        let (root, ek) = endorsement();
        let later = SystemTime::now() + Duration::from_secs(2 * 365 * 86_400);
        assert_eq!(
            code(check_endorsement(&ek, std::slice::from_ref(&root), later)),
            Some(Reason::AkEndorsementUntrusted)
        );
        // The root itself is a P-256 certificate: not an EK the CA can encrypt to.
        let p256 = der::Encode::to_der(&root).expect("der");
        assert_eq!(
            code(check_endorsement(&p256, &[root], SystemTime::now())),
            Some(Reason::AkEndorsementMalformed)
        );
    }

    #[test]
    fn an_ak_must_be_restricted_signing_and_not_decrypt() {
        for missing in [
            attr::FIXED_TPM,
            attr::FIXED_PARENT,
            attr::SENSITIVE_DATA_ORIGIN,
            attr::RESTRICTED,
            attr::SIGN,
        ] {
            assert_eq!(
                code(check_attestation_key(&rsa_public_area(
                    AK_ATTRIBUTES & !missing
                ))),
                Some(Reason::AkAttributes),
                "without {missing:#x}"
            );
        }
        assert_eq!(
            code(check_attestation_key(&rsa_public_area(
                AK_ATTRIBUTES | attr::DECRYPT
            ))),
            Some(Reason::AkAttributes)
        );
        let mut sha1_name = rsa_public_area(AK_ATTRIBUTES);
        sha1_name[2..4].copy_from_slice(&[0x00, 0x04]);
        assert_eq!(
            code(check_attestation_key(&sha1_name)),
            Some(Reason::AkPublicMalformed)
        );
    }

    #[test]
    fn a_binding_names_both_keys() {
        let a = challenge_binding(b"ek-1", b"ak-1");
        assert_ne!(a, challenge_binding(b"ek-2", b"ak-1"));
        assert_ne!(a, challenge_binding(b"ek-1", b"ak-2"));
        assert_eq!(a, challenge_binding(b"ek-1", b"ak-1"));
    }
}

//! The X.509 extensions attestca writes, each built the one way RFC 5280 wants it.

use const_oid::AssociatedOid;
use const_oid::ObjectIdentifier;
use der::Encode;
use der::asn1::{Ia5String, OctetString};
use flagset::FlagSet;
use sha2::{Digest, Sha256};
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};

/// id-ad-ocsp and id-ad-caIssuers (RFC 5280 4.2.2.1).
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const ID_AD_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");

fn extension<T: Encode + AssociatedOid>(value: &T, critical: bool) -> der::Result<Extension> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// Key identifier of a public key: the leftmost 160 bits of the SHA-256 of the
/// subjectPublicKey bits (RFC 7093 section 2, method 1).
pub fn key_identifier(spki: &SubjectPublicKeyInfo) -> Vec<u8> {
    Sha256::digest(spki.subject_public_key.raw_bytes())[..20].to_vec()
}

/// The key identifier relying parties will match an AKI against: the certificate's own
/// subjectKeyIdentifier when it has one (an external root may have used another method, e.g.
/// SHA-1), else the RFC 7093 value.
pub fn certificate_key_identifier(cert: &x509_cert::Certificate) -> Vec<u8> {
    let tbs = cert.tbs_certificate();
    match tbs.get_extension::<SubjectKeyIdentifier>() {
        Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
        _ => key_identifier(tbs.subject_public_key_info()),
    }
}

/// The otherName hardwareModuleName (RFC 4108) naming an attested device.
pub fn hardware_module_name(
    device: &crate::attestation::DeviceIdentity,
) -> der::Result<GeneralName> {
    use x509_cert::ext::pkix::name::{HardwareModuleName, OtherName};
    let name = HardwareModuleName {
        hw_type: device.hardware_type,
        hw_serial_num: OctetString::new(device.serial.clone())?,
    };
    Ok(GeneralName::OtherName(OtherName::try_from(&name)?))
}

/// A directoryName of the TCG TPM attributes (tcg-at-tpmManufacturer, -Model, -Version,
/// 2.23.133.2.1–3), one RDN each, as EK and AK certificates carry them.
pub fn tpm_directory_name(
    tpm: &crate::attestation::tpm::TpmDescription,
) -> der::Result<GeneralName> {
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
    let mut rdns = RdnSequence::default();
    for (arc, value) in [
        ("2.23.133.2.1", &tpm.manufacturer),
        ("2.23.133.2.2", &tpm.model),
        ("2.23.133.2.3", &tpm.version),
    ] {
        let mut rdn = RelativeDistinguishedName::default();
        rdn.insert(AttributeTypeAndValue {
            oid: ObjectIdentifier::new(arc)
                .map_err(|_| der::Tag::ObjectIdentifier.value_error())?,
            value: der::asn1::Any::encode_from(&der::asn1::Utf8StringRef::new(value)?)?,
        })?;
        rdns.push(rdn);
    }
    Ok(GeneralName::DirectoryName(
        x509_cert::name::Name::hazmat_from_rdn_sequence(rdns),
    ))
}

/// basicConstraints, always critical.
pub fn basic_constraints(ca: bool, path_len: Option<u8>) -> der::Result<Extension> {
    extension(
        &BasicConstraints {
            ca,
            path_len_constraint: path_len,
        },
        true,
    )
}

/// keyUsage, always critical.
pub fn key_usage(usages: FlagSet<KeyUsages>) -> der::Result<Extension> {
    extension(&KeyUsage(usages), true)
}

/// extendedKeyUsage, non-critical.
pub fn extended_key_usage(purposes: &[ObjectIdentifier]) -> der::Result<Extension> {
    extension(&ExtendedKeyUsage(purposes.to_vec()), false)
}

/// subjectKeyIdentifier of `spki`.
pub fn subject_key_identifier(spki: &SubjectPublicKeyInfo) -> der::Result<Extension> {
    extension(
        &SubjectKeyIdentifier(OctetString::new(key_identifier(spki))?),
        false,
    )
}

/// authorityKeyIdentifier holding only the issuer's key identifier.
pub fn authority_key_identifier(issuer_key_id: &[u8]) -> der::Result<Extension> {
    extension(
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(issuer_key_id)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
        false,
    )
}

/// subjectAltName; critical exactly when the subject is empty (RFC 5280 4.2.1.6).
pub fn subject_alt_name(names: &[GeneralName], subject_empty: bool) -> der::Result<Extension> {
    extension(&SubjectAltName(names.to_vec()), subject_empty)
}

fn uri(url: &str) -> der::Result<GeneralName> {
    Ok(GeneralName::UniformResourceIdentifier(Ia5String::new(url)?))
}

/// cRLDistributionPoints: one distribution point per URL.
pub fn crl_distribution_points(urls: &[String]) -> der::Result<Extension> {
    let points = urls
        .iter()
        .map(|u| {
            Ok(DistributionPoint {
                distribution_point: Some(DistributionPointName::FullName(vec![uri(u)?])),
                reasons: None,
                crl_issuer: None,
            })
        })
        .collect::<der::Result<Vec<_>>>()?;
    extension(&CrlDistributionPoints(points), false)
}

/// authorityInfoAccess with OCSP and caIssuers locations.
pub fn authority_info_access(ocsp: &[String], ca_issuers: &[String]) -> der::Result<Extension> {
    let mut descriptions = Vec::new();
    for (method, urls) in [(ID_AD_OCSP, ocsp), (ID_AD_CA_ISSUERS, ca_issuers)] {
        for u in urls {
            descriptions.push(AccessDescription {
                access_method: method,
                access_location: uri(u)?,
            });
        }
    }
    extension(&AuthorityInfoAccessSyntax(descriptions), false)
}

/// id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): relying parties need not check the revocation
/// status of a delegated OCSP responder certificate. Its value is NULL.
pub fn ocsp_no_check() -> der::Result<Extension> {
    Ok(Extension {
        extn_id: const_oid::db::rfc6960::ID_PKIX_OCSP_NOCHECK,
        critical: false,
        extn_value: OctetString::new(der::asn1::Null.to_der()?)?,
    })
}

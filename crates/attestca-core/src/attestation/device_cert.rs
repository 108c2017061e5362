//! Pre-provisioned vendor device certificates: the secure element's own key, certified by its
//! vendor at manufacture, is the key in the CSR.
//!
//! The vendor generated the key inside the part and certified it before the part left the
//! factory, so a certificate chaining to the vendor root proves the key lives in that part.
//! There is no nonce: only the part can sign the CSR with that key, and the CSR signature is
//! the freshness. Each vendor names its parts differently; the vendor's [`VendorReader`]
//! says how to read the identity from the certificate.

use std::borrow::Cow;

use super::EvidenceCertificate;
use const_oid::ObjectIdentifier;
use const_oid::db::rfc4519::{COMMON_NAME, ORGANIZATION_NAME};
use der::Decode;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::ext::pkix::name::DirectoryString;
use x509_cert::name::Name;

use super::chain::{self, PathOptions};
use super::vendors::{Vendor, VendorReader};
use super::{
    AttestationError, AttestationFormat, AttestedKey, DeviceIdentity, ID_STMT_DEVICE_CERTIFICATE,
    StatementVerifier, VerificationContext,
};
use crate::reason::Reason;

/// The organization in every Microchip Trust&Go / TrustFLEX device certificate subject.
const MICROCHIP_ORGANIZATION: &str = "Microchip Technology Inc";
/// Prefix of the Microchip device CN, followed by the part's serial in hex.
const MICROCHIP_CN_PREFIX: &str = "sn";
/// Prefix of the NXP SE050 attestation CN, followed by the chip id.
const NXP_CN_PREFIX: &str = "Attest-";

/// The device-certificate verifier (format 2).
pub struct DeviceCertificateVerifier;

impl StatementVerifier for DeviceCertificateVerifier {
    fn statement_type(&self) -> ObjectIdentifier {
        ID_STMT_DEVICE_CERTIFICATE
    }

    fn format(&self) -> AttestationFormat {
        AttestationFormat::DeviceCertificate
    }

    fn verify(
        &self,
        statement: &[u8],
        context: &VerificationContext<'_>,
    ) -> Result<AttestedKey, AttestationError> {
        let device = EvidenceCertificate::from_der(statement).map_err(|e| {
            AttestationError::malformed(
                Reason::AttestationMalformed,
                format!("the device-certificate statement is not a certificate: {e}"),
            )
        })?;
        verify_device_certificate(&device, context)
    }
}

/// Verifies a vendor device certificate for the CSR's key against the vendors that use
/// format 2, and reads the device identity the way the anchoring vendor names its parts.
pub fn verify_device_certificate(
    device: &EvidenceCertificate,
    context: &VerificationContext<'_>,
) -> Result<AttestedKey, AttestationError> {
    if !super::same_key(
        device.tbs_certificate().subject_public_key_info(),
        context.csr_key,
    ) {
        return Err(AttestationError::refused(
            Reason::AttestationKeyMismatch,
            "the device certificate is for another key than the CSR's",
        ));
    }
    check_not_ca(device)?;
    let mut last = AttestationError::refused(
        Reason::AttestationUntrustedRoot,
        "the device certificate does not chain to a trusted vendor root",
    );
    for vendor in context
        .vendors
        .for_format(AttestationFormat::DeviceCertificate)
    {
        match chain::build(
            device,
            context.pool,
            &vendor.roots,
            context.at,
            PathOptions::default(),
            &context.budget,
        ) {
            Ok(_) => return attested(vendor, device),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A CA certificate's key signs certificates, not CSRs of a device: it cannot be a part's key.
fn check_not_ca(device: &EvidenceCertificate) -> Result<(), AttestationError> {
    let constraints = device
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
        .map_err(|e| {
            AttestationError::malformed(
                Reason::AttestationMalformed,
                format!("basicConstraints: {e}"),
            )
        })?;
    match constraints {
        Some((_, bc)) if bc.ca => Err(AttestationError::refused(
            Reason::AttestationChainInvalid,
            format!(
                "{} is a CA certificate, not a device certificate",
                chain::subject(device)
            ),
        )),
        _ => Ok(()),
    }
}

/// What a verified device certificate attests, with the identity read per vendor.
fn attested(
    vendor: &Vendor,
    device: &EvidenceCertificate,
) -> Result<AttestedKey, AttestationError> {
    let (serial, display) = identity(vendor, device)?;
    Ok(AttestedKey {
        format: AttestationFormat::DeviceCertificate,
        vendor: vendor.name.clone(),
        device: DeviceIdentity {
            hardware_type: vendor.hardware_type,
            serial,
            display,
        },
        // The vendor certified a key it generated in the part; the part never releases it.
        nonce: None,
        generated_on_device: Some(true),
        exportable: Some(false),
        tpm: None,
    })
}

/// The device serial (bytes, display form) by the vendor's naming rule.
fn identity(
    vendor: &Vendor,
    device: &EvidenceCertificate,
) -> Result<(Vec<u8>, String), AttestationError> {
    match vendor.reader {
        VendorReader::Microchip => microchip_identity(device),
        VendorReader::Infineon => infineon_identity(device),
        VendorReader::Nxp => nxp_identity(device),
        VendorReader::St => {
            let cn = required_cn(device.tbs_certificate().subject(), "subject")?;
            Ok((cn.as_bytes().to_vec(), cn))
        }
        other => Err(AttestationError::refused(
            Reason::AttestationFormatNotAllowed,
            format!(
                "vendor {} ({other:?}) does not issue device-certificate evidence",
                vendor.name
            ),
        )),
    }
}

/// Microchip: `O=Microchip Technology Inc, CN=sn<serial hex>`; the serial is the part's
/// uniqueId, the same value the reel manifest lists.
fn microchip_identity(device: &EvidenceCertificate) -> Result<(Vec<u8>, String), AttestationError> {
    let subject = device.tbs_certificate().subject();
    let organization = single_attribute(subject, ORGANIZATION_NAME, "O")?;
    if organization.as_deref() != Some(MICROCHIP_ORGANIZATION) {
        return Err(identity_error(format!(
            "a Microchip device certificate must have O={MICROCHIP_ORGANIZATION}, not {organization:?}"
        )));
    }
    let cn = required_cn(subject, "subject")?;
    let serial = cn
        .strip_prefix(MICROCHIP_CN_PREFIX)
        .and_then(|hex_serial| hex::decode(hex_serial).ok())
        .filter(|bytes| !bytes.is_empty())
        .ok_or_else(|| {
            identity_error(format!(
                "a Microchip device CN must be sn<serial in hex>, not {cn:?}"
            ))
        })?;
    Ok((serial.clone(), hex::encode_upper(serial)))
}

/// Infineon OPTIGA Trust M: every chip has the same subject, so the identity is the issuing
/// CA plus the serial number it gave the certificate (unique per issuer, RFC 5280).
fn infineon_identity(device: &EvidenceCertificate) -> Result<(Vec<u8>, String), AttestationError> {
    let tbs = device.tbs_certificate();
    let issuer = required_cn(tbs.issuer(), "issuer")?;
    let serial = magnitude(tbs.serial_number().as_bytes()).to_vec();
    let display = format!("{issuer}/{}", hex::encode_upper(&serial));
    Ok((serial, display))
}

/// NXP SE050: `CN=Attest-<chipId>` gives the chip id; other CNs are taken whole.
fn nxp_identity(device: &EvidenceCertificate) -> Result<(Vec<u8>, String), AttestationError> {
    let cn = required_cn(device.tbs_certificate().subject(), "subject")?;
    let id = match cn.strip_prefix(NXP_CN_PREFIX) {
        Some("") => {
            return Err(identity_error(format!("an NXP CN {cn:?} names no chip id")));
        }
        Some(chip_id) => chip_id.to_string(),
        None => cn,
    };
    Ok((id.as_bytes().to_vec(), id))
}

/// An INTEGER's content bytes without the sign byte DER adds before a high first bit.
fn magnitude(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    }
}

/// The single, non-empty CN of `name`; `which` says whose name it is for messages.
fn required_cn(name: &Name, which: &str) -> Result<String, AttestationError> {
    match single_attribute(name, COMMON_NAME, "CN")? {
        Some(cn) if !cn.is_empty() => Ok(cn),
        _ => Err(identity_error(format!(
            "the device certificate's {which} has no CN to identify the device by"
        ))),
    }
}

/// The value of the attribute `oid` in `name`, refusing a name that has two: an identity
/// must not depend on which of them a reader happens to pick.
fn single_attribute(
    name: &Name,
    oid: ObjectIdentifier,
    label: &str,
) -> Result<Option<String>, AttestationError> {
    let mut values = name.iter().filter(|atv| atv.oid == oid);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(identity_error(format!(
            "the name {name} has more than one {label}"
        )));
    }
    let value = DirectoryString::try_from(&first.value).map_err(|e| {
        AttestationError::malformed(
            Reason::AttestationMalformed,
            format!("{label} of {name}: {e}"),
        )
    })?;
    Ok(Some(Cow::into_owned(value.value())))
}

fn identity_error(detail: String) -> AttestationError {
    AttestationError::refused(Reason::AttestationDeviceIdentity, detail)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::Path;
    use std::time::SystemTime;

    use x509_cert::SubjectPublicKeyInfo;

    use super::*;
    use crate::attestation::manifest::ManifestPart;
    use crate::attestation::manifest::tests::{ROOT, SIGNER, microchip_vectors, real_parts};
    use crate::attestation::{VendorTrustStore, VerificationBudget};

    /// Any OID will do: the tests check that it is passed through.
    const TEST_HW_TYPE: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.7030.99");

    fn vendor(name: &str, roots: Vec<EvidenceCertificate>, reader: VendorReader) -> Vendor {
        Vendor {
            name: name.into(),
            roots,
            formats: vec![AttestationFormat::DeviceCertificate],
            reader,
            hardware_type: TEST_HW_TYPE,
            denied_serials: HashSet::new(),
            allow_sha1: false,
        }
    }

    fn certificates(path: &Path) -> Vec<EvidenceCertificate> {
        crate::pem::read_evidence_certificates(path).expect("read vector certificates")
    }

    fn microchip(dir: &Path) -> VendorTrustStore {
        VendorTrustStore::new(vec![vendor(
            "microchip",
            certificates(&dir.join(ROOT)),
            VendorReader::Microchip,
        )])
    }

    fn device(part: &ManifestPart) -> EvidenceCertificate {
        EvidenceCertificate::from_der(part.device_certificate.as_ref().unwrap()).unwrap()
    }

    fn pool(part: &ManifestPart) -> Vec<EvidenceCertificate> {
        part.chain
            .iter()
            .map(|der| EvidenceCertificate::from_der(der).unwrap())
            .collect()
    }

    fn key(cert: &EvidenceCertificate) -> SubjectPublicKeyInfo {
        cert.tbs_certificate().subject_public_key_info().clone()
    }

    fn check(
        device: &EvidenceCertificate,
        csr_key: &SubjectPublicKeyInfo,
        pool: &[EvidenceCertificate],
        vendors: &VendorTrustStore,
    ) -> Result<AttestedKey, AttestationError> {
        let context = VerificationContext {
            csr_key,
            pool,
            vendors,
            at: SystemTime::now(),
            budget: VerificationBudget::per_request(),
        };
        verify_device_certificate(device, &context)
    }

    #[test]
    fn every_manifest_part_verifies_as_microchip() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let vendors = microchip(&dir);
        for part in real_parts(&dir) {
            let device = device(&part);
            let attested = check(&device, &key(&device), &pool(&part), &vendors)
                .unwrap_or_else(|e| panic!("{}: {e:?}", part.unique_id));
            assert_eq!(attested.format, AttestationFormat::DeviceCertificate);
            assert_eq!(attested.vendor, "microchip");
            assert_eq!(attested.device.display, part.unique_id.to_ascii_uppercase());
            assert_eq!(
                attested.device.serial,
                hex::decode(&part.unique_id).unwrap()
            );
            assert_eq!(attested.device.hardware_type, TEST_HW_TYPE);
            assert_eq!(attested.nonce, None);
            assert_eq!(attested.generated_on_device, Some(true));
            assert_eq!(attested.exportable, Some(false));
        }
        let first = &real_parts(&dir)[0];
        let attested = check(&device(first), &key(&device(first)), &pool(first), &vendors).unwrap();
        assert_eq!(attested.device.display, "0123F2408EA1FCF201");
        assert_eq!(attested.device_key(), "microchip:0123F2408EA1FCF201");
    }

    /// Microchip's "Crypto Authentication Signer 2A00" writes its 2049 notAfter as
    /// GeneralizedTime. x509-cert's RFC 5280 profile re-encodes that as UTCTime, so a path
    /// check that verifies signatures over re-encoded certificates refuses every real part.
    #[test]
    fn the_signer_2a00_chains_to_root_ca_002_despite_its_generalized_time() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let issuer = pool(&real_parts(&dir)[0]).remove(0);
        let roots = certificates(&dir.join(ROOT));
        let path = chain::build(
            &issuer,
            &[],
            &roots,
            SystemTime::now(),
            PathOptions::default(),
            &VerificationBudget::per_request(),
        );
        assert!(path.is_ok(), "{path:?}");
    }

    #[test]
    fn another_parts_key_is_a_key_mismatch() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let parts = real_parts(&dir);
        let other_key = key(&device(&parts[1]));
        let err = check(
            &device(&parts[0]),
            &other_key,
            &pool(&parts[0]),
            &microchip(&dir),
        )
        .unwrap_err();
        assert_eq!(err.code, Reason::AttestationKeyMismatch);
    }

    #[test]
    fn without_the_signer_or_under_another_root_it_is_untrusted() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let part = &real_parts(&dir)[0];
        let device = device(part);
        let err = check(&device, &key(&device), &[], &microchip(&dir)).unwrap_err();
        assert_eq!(err.code, Reason::AttestationUntrustedRoot, "{err:?}");

        let others = [
            certificates(&dir.join(SIGNER)),
            certificates(&dir.join("../yubico/yubico-piv-root-ca-263751.pem")),
        ];
        for roots in others {
            let vendors =
                VendorTrustStore::new(vec![vendor("other", roots, VendorReader::Microchip)]);
            let err = check(&device, &key(&device), &pool(part), &vendors).unwrap_err();
            assert_eq!(err.code, Reason::AttestationUntrustedRoot, "{err:?}");
        }
    }

    #[test]
    fn a_vendor_not_allowing_the_format_is_not_consulted() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let part = &real_parts(&dir)[0];
        let device = device(part);
        let mut chip = vendor(
            "microchip",
            certificates(&dir.join(ROOT)),
            VendorReader::Microchip,
        );
        chip.formats = vec![AttestationFormat::X509Chain];
        let err = check(
            &device,
            &key(&device),
            &pool(part),
            &VendorTrustStore::new(vec![chip]),
        )
        .unwrap_err();
        assert_eq!(err.code, Reason::AttestationUntrustedRoot, "{err:?}");
    }

    #[test]
    fn a_ca_certificate_is_not_a_device_certificate() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let part = &real_parts(&dir)[0];
        // The part's issuer, "Crypto Authentication Signer 2A00", chains to the root too.
        let issuer = pool(part).remove(0);
        let err = check(&issuer, &key(&issuer), &[], &microchip(&dir)).unwrap_err();
        assert_eq!(err.code, Reason::AttestationChainInvalid, "{err:?}");
    }

    #[test]
    fn the_reader_decides_the_identity() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let part = &real_parts(&dir)[0];
        let device = device(part);
        let root = certificates(&dir.join(ROOT));
        let read = |reader| {
            let vendors = VendorTrustStore::new(vec![vendor("v", root.clone(), reader)]);
            check(&device, &key(&device), &pool(part), &vendors)
        };

        let infineon = read(VendorReader::Infineon).unwrap();
        let serial = magnitude(device.tbs_certificate().serial_number().as_bytes()).to_vec();
        assert_eq!(infineon.device.serial, serial);
        assert_eq!(
            infineon.device.display,
            format!(
                "Crypto Authentication Signer 2A00/{}",
                hex::encode_upper(&serial)
            )
        );

        // Neither NXP nor ST has a rule for a Microchip CN beyond taking it whole.
        for reader in [VendorReader::Nxp, VendorReader::St] {
            assert_eq!(read(reader).unwrap().device.display, "sn0123F2408EA1FCF201");
        }
        let err = read(VendorReader::YubikeyPiv).unwrap_err();
        assert_eq!(err.code, Reason::AttestationFormatNotAllowed);
    }

    #[test]
    fn a_cn_outside_the_microchip_rule_is_refused() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        // The issuer's CN is "Crypto Authentication Signer 2A00": right O, wrong CN form.
        let issuer = pool(&real_parts(&dir)[0]).remove(0);
        let err = microchip_identity(&issuer).unwrap_err();
        assert_eq!(err.code, Reason::AttestationDeviceIdentity, "{err:?}");
        // The root has the same O and a CN that is not sn<hex> either.
        let root = certificates(&dir.join(ROOT)).remove(0);
        assert_eq!(
            microchip_identity(&root).unwrap_err().code,
            Reason::AttestationDeviceIdentity
        );
        // The manifest signer's CN is "Manifest Signer 005".
        let signer = certificates(&dir.join(SIGNER)).remove(0);
        assert_eq!(
            microchip_identity(&signer).unwrap_err().code,
            Reason::AttestationDeviceIdentity
        );
    }

    #[test]
    fn garbage_statements_are_malformed() {
        let Some(dir) = microchip_vectors() else {
            return;
        };
        let part = &real_parts(&dir)[0];
        let der = part.device_certificate.clone().unwrap();
        let csr_key = key(&device(part));
        let vendors = microchip(&dir);
        let pool = pool(part);
        let context = VerificationContext {
            csr_key: &csr_key,
            pool: &pool,
            vendors: &vendors,
            at: SystemTime::now(),
            budget: VerificationBudget::per_request(),
        };
        let verifier = DeviceCertificateVerifier;
        assert_eq!(verifier.statement_type(), ID_STMT_DEVICE_CERTIFICATE);
        assert_eq!(verifier.format(), AttestationFormat::DeviceCertificate);
        assert!(verifier.verify(&der, &context).is_ok());

        let mut trailing = der.clone();
        trailing.push(0);
        let garbage: [&[u8]; 5] = [
            b"",
            b"\x00",
            b"garbage statement",
            &der[..der.len() / 2],
            &trailing,
        ];
        for statement in garbage {
            let err = verifier.verify(statement, &context).unwrap_err();
            assert_eq!(err.code, Reason::AttestationMalformed, "{err:?}");
        }
        // A flipped bit in the signature leaves well-formed DER that no longer chains.
        let mut forged = der.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let err = verifier.verify(&forged, &context).unwrap_err();
        assert_eq!(err.code, Reason::AttestationUntrustedRoot, "{err:?}");
    }
}

//! A simulated secure element — software, and honest about it — that produces evidence in the
//! real X.509-chain shape (format 1) under a test vendor root:
//!
//! ```text
//! simulated vendor root ← vendor attestation CA ← per-device attestation key (AK) certificate
//!   (CA:TRUE, pathLen 0, subject serialNumber = device serial) ← attestation certificate for
//!   the new key (short validity, SimulatedSeKeyAttestation extension with the nonce)
//! ```
//!
//! A real vendor keeps its attestation CA in its own factory; the simulation keeps it in the
//! vendor directory so that a rig can "manufacture" devices on demand.

use std::path::{Path, PathBuf};

use der::asn1::{Any, Int, OctetString, SetOfVec, Utf8StringRef};
use der::{Decode, Encode};
use x509_cert::attr::Attribute;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;

use crate::device::DeviceKey;
use attestca_core::attestation::x509_chain::{KeyOrigin, SimulatedSeKeyAttestation};
use attestca_core::attestation::{
    ID_AA_ATTESTATION, ID_EXT_SIMULATED_SE, ID_STMT_X509_CHAIN, bundle,
};
use attestca_core::issuance::extensions as ext;
use attestca_core::issuance::software_ca::{self, SoftwareCa, YEAR};
use attestca_core::signer::Signer;

/// Files of the simulated vendor under its directory.
pub struct VendorFiles {
    pub dir: PathBuf,
}

impl VendorFiles {
    /// The root a CA must trust for this vendor.
    pub fn root(&self) -> PathBuf {
        self.dir.join("vendor-root.crt")
    }
    fn ca_cert(&self) -> PathBuf {
        self.dir.join("vendor-attestation-ca.crt")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("vendor-attestation-ca.key")
    }
}

/// The simulated vendor: its root and the attestation CA that certifies device AKs.
pub struct SimulatedVendor {
    pub root_der: Vec<u8>,
    attestation_ca: SoftwareCa,
}

impl SimulatedVendor {
    /// Creates the vendor (root + attestation CA) in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let files = VendorFiles {
            dir: dir.to_owned(),
        };
        let root = SoftwareCa::self_signed(
            "CN=attestca Simulated SE Root - software not a real secure element,O=attestca test vendor",
            20,
        )?;
        let (ca_key, ca_pkcs8) = software_ca::new_key()?;
        // pathLen 1: one AK certificate may stand between this CA and an attestation certificate.
        let ca_der = root.issue_ca(
            "CN=attestca Simulated SE Attestation CA,O=attestca test vendor",
            ca_key.public_key(),
            15,
            Some(1),
        )?;
        attestca_core::pem::write_certificates(&files.root(), &[&root.der])?;
        attestca_core::pem::write_certificates(&files.ca_cert(), &[&ca_der])?;
        attestca_core::pem::write_private_key(&files.ca_key(), &ca_pkcs8)?;
        Self::load(dir)
    }

    /// Loads the vendor from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let files = VendorFiles {
            dir: dir.to_owned(),
        };
        let root_der = attestca_core::pem::read_certificate_ders(&files.root())?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("{}: no certificate", files.root().display()))?;
        Ok(Self {
            root_der,
            attestation_ca: SoftwareCa::load(&files.ca_cert(), &files.ca_key())?,
        })
    }

    /// "Manufactures" a secure element: a random serial and an attestation key certified by
    /// the vendor for that serial.
    pub fn manufacture(&self) -> anyhow::Result<SimulatedDevice> {
        let mut serial = [0u8; 8];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| anyhow::anyhow!("random generator failed"))?;
        self.manufacture_with_serial(&serial, 5 * YEAR)
    }

    /// A device with a given serial and AK certificate validity (tests make clones and expired
    /// AKs with it).
    pub fn manufacture_with_serial(
        &self,
        serial: &[u8],
        ak_validity_secs: u64,
    ) -> anyhow::Result<SimulatedDevice> {
        self.manufacture_custom(serial, ak_validity_secs, true)
    }

    /// A device whose AK certificate may lack the CA flag (a broken vendor, for tests).
    pub fn manufacture_custom(
        &self,
        serial: &[u8],
        ak_validity_secs: u64,
        ak_is_ca: bool,
    ) -> anyhow::Result<SimulatedDevice> {
        let (ak, ak_pkcs8) = software_ca::new_key()?;
        // serialNumber is a PrintableString (X.520): give it as hex-encoded DER ("#13..").
        let printable = hex::encode_upper(serial);
        let subject = software_ca::name(&format!(
            "CN=attestca Simulated SE AK,2.5.4.5=#13{:02x}{}",
            printable.len(),
            hex::encode(printable.as_bytes())
        ))?;
        let ak_der = self.attestation_ca.issue(
            subject,
            ak.public_key(),
            ak_validity_secs,
            if ak_is_ca {
                vec![
                    ext::basic_constraints(true, Some(0))?,
                    ext::key_usage(KeyUsages::KeyCertSign.into())?,
                ]
            } else {
                vec![
                    ext::basic_constraints(false, None)?,
                    ext::key_usage(KeyUsages::DigitalSignature.into())?,
                ]
            },
        )?;
        let attestation_key = SoftwareCa::from_certificate_and_key(ak_der, ak_pkcs8)?;
        Ok(SimulatedDevice {
            serial: serial.to_vec(),
            attestation_key,
            vendor_ca_der: self.attestation_ca.der.clone(),
        })
    }
}

/// What an attestation certificate claims about a key (tests vary these).
#[derive(Clone, Copy, Debug)]
pub struct KeyClaims {
    pub origin: KeyOrigin,
    pub exportable: bool,
}

impl Default for KeyClaims {
    fn default() -> Self {
        Self {
            origin: KeyOrigin::Generated,
            exportable: false,
        }
    }
}

/// Files of a simulated secure element kept next to its device's key, so that the same
/// element can attest a new key later (rekey).
const SE_FILES: [&str; 3] = ["se-ak.crt", "se-ak.key", "se-vendor-ca.crt"];

/// One simulated secure element.
pub struct SimulatedDevice {
    pub serial: Vec<u8>,
    attestation_key: SoftwareCa,
    vendor_ca_der: Vec<u8>,
}

impl SimulatedDevice {
    /// Stores the element's attestation key and certificates in `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        attestca_core::pem::write_certificates(
            &dir.join(SE_FILES[0]),
            &[&self.attestation_key.der],
        )?;
        attestca_core::pem::write_private_key(&dir.join(SE_FILES[1]), &self.attestation_key.pkcs8)?;
        attestca_core::pem::write_certificates(&dir.join(SE_FILES[2]), &[&self.vendor_ca_der])?;
        Ok(())
    }

    /// Loads an element saved by [`SimulatedDevice::save`].
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let attestation_key = SoftwareCa::load(&dir.join(SE_FILES[0]), &dir.join(SE_FILES[1]))?;
        let vendor_ca_der = attestca_core::pem::read_certificate_ders(&dir.join(SE_FILES[2]))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                anyhow::anyhow!("{}: no certificate", dir.join(SE_FILES[2]).display())
            })?;
        let serial = attestation_key
            .certificate()
            .tbs_certificate()
            .subject()
            .iter()
            .find(|atv| atv.oid == const_oid::db::rfc4519::SERIAL_NUMBER)
            .and_then(|atv| std::str::from_utf8(atv.value.value()).ok())
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| anyhow::anyhow!("the saved attestation key names no device serial"))?;
        Ok(Self {
            serial,
            attestation_key,
            vendor_ca_der,
        })
    }

    /// Copies a saved element from one directory to another.
    pub fn copy_files(from: &Path, to: &Path) -> anyhow::Result<()> {
        for name in SE_FILES {
            std::fs::copy(from.join(name), to.join(name))?;
        }
        Ok(())
    }

    /// The AK certificate (DER).
    pub fn attestation_key_certificate(&self) -> &[u8] {
        &self.attestation_key.der
    }

    /// The vendor attestation CA certificate (DER).
    pub fn vendor_ca_certificate(&self) -> &[u8] {
        &self.vendor_ca_der
    }

    /// An attestation certificate for `key` carrying `nonce`.
    pub fn attest(
        &self,
        key: &x509_cert::SubjectPublicKeyInfo,
        nonce: &[u8],
        claims: KeyClaims,
    ) -> anyhow::Result<Vec<u8>> {
        let statement = SimulatedSeKeyAttestation {
            version: Int::new(&[1])?,
            nonce: OctetString::new(nonce)?,
            device_serial: OctetString::new(self.serial.clone())?,
            key_origin: claims.origin,
            exportable: claims.exportable,
            firmware: Some(Utf8StringRef::new("attestca-sim 1.0")?),
        };
        let extension = Extension {
            extn_id: ID_EXT_SIMULATED_SE,
            critical: false,
            extn_value: OctetString::new(statement.to_der()?)?,
        };
        Ok(self.attestation_key.issue(
            software_ca::name("CN=attestca Simulated SE key attestation")?,
            key,
            3600,
            vec![
                ext::basic_constraints(false, None)?,
                ext::key_usage(KeyUsages::DigitalSignature.into())?,
                extension,
            ],
        )?)
    }

    /// Generates a key "inside" the element and returns it with an attested CSR.
    pub fn enroll_key(&self, cn: &str, nonce: &[u8]) -> anyhow::Result<(DeviceKey, Vec<u8>)> {
        let key = DeviceKey::generate()?;
        let attestation = self.attest(&key.public_key()?, nonce, KeyClaims::default())?;
        let csr = key.csr_with_attributes(cn, vec![self.evidence_attribute(&attestation)?])?;
        Ok((key, csr))
    }

    /// The CSR attribute carrying `attestation` and the chain above it.
    pub fn evidence_attribute(&self, attestation: &[u8]) -> anyhow::Result<Attribute> {
        let bundle = bundle::encode(
            &[(ID_STMT_X509_CHAIN, attestation.to_vec())],
            &[self.attestation_key.der.clone(), self.vendor_ca_der.clone()],
        )?;
        Ok(Attribute {
            oid: ID_AA_ATTESTATION,
            values: SetOfVec::try_from(vec![Any::from_der(&bundle)?])?,
        })
    }
}

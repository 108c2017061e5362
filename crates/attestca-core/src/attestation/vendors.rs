//! The vendor trust store: per vendor, the roots its evidence must chain to, the formats it
//! may use, how to read its device identities, the hwType for certificates, and a deny-list.

use std::collections::HashSet;
use std::path::PathBuf;

use super::EvidenceCertificate;
use const_oid::ObjectIdentifier;
use serde::{Deserialize, Serialize};

use super::AttestationFormat;
use crate::config::InvalidConfig;

/// How a vendor's evidence names its devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VendorReader {
    /// attestca's simulated secure element (SimulatedSeKeyAttestation extension).
    SimulatedSe,
    /// YubiKey PIV attestation (1.3.6.1.4.1.41482.3.x extensions).
    YubikeyPiv,
    /// Microchip Trust&Go / TrustFLEX: subject `CN=sn<serial>`.
    Microchip,
    /// Infineon OPTIGA Trust M: issuer + certificate serial number.
    Infineon,
    /// NXP SE050: subject `CN=Attest-<chipId>` (else the CN).
    Nxp,
    /// STMicroelectronics STSAFE: the subject CN.
    St,
    /// TPM 2.0 attestation keys: the AK certificate's issuer + serial number.
    Tpm,
}

/// `[[attestation.vendors]]` in the configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// Name recorded with device identities (`<vendor>:<serial>`).
    pub name: String,
    /// PEM files of the vendor roots.
    pub roots: Vec<PathBuf>,
    /// Formats this vendor's evidence may use.
    pub formats: Vec<AttestationFormat>,
    /// How to read device identities from this vendor's certificates.
    pub reader: VendorReader,
    /// hwType OID written into hardwareModuleName for this vendor's devices.
    pub hardware_type: String,
    /// Device serials (as displayed, e.g. `0123F2408EA1FCF201`) that must never enroll.
    #[serde(default)]
    pub denied_serials: Vec<String>,
    /// Accept TPM attestations signed with SHA-1 (Windows' AIKs sign TPM2_Certify with
    /// RSASSA-SHA1). Off by default: SHA-1 collisions are practical.
    #[serde(default)]
    pub allow_sha1: bool,
}

/// One trusted vendor.
#[derive(Clone, Debug)]
pub struct Vendor {
    pub name: String,
    pub roots: Vec<EvidenceCertificate>,
    pub formats: Vec<AttestationFormat>,
    pub reader: VendorReader,
    pub hardware_type: ObjectIdentifier,
    pub denied_serials: HashSet<String>,
    /// See [`VendorConfig::allow_sha1`].
    pub allow_sha1: bool,
}

/// All trusted vendors.
#[derive(Clone, Debug, Default)]
pub struct VendorTrustStore {
    vendors: Vec<Vendor>,
}

impl VendorTrustStore {
    /// Loads the configured vendors.
    pub fn from_config(configs: &[VendorConfig]) -> Result<Self, InvalidConfig> {
        let mut vendors = Vec::new();
        for c in configs {
            let invalid =
                |what: String| InvalidConfig(format!("attestation vendor {}: {what}", c.name));
            let mut roots = Vec::new();
            for path in &c.roots {
                roots.extend(
                    crate::pem::read_evidence_certificates(path)
                        .map_err(|e| invalid(e.to_string()))?,
                );
            }
            if roots.is_empty() {
                return Err(invalid("no root certificates".into()));
            }
            let hardware_type = ObjectIdentifier::new(&c.hardware_type)
                .map_err(|e| invalid(format!("hardware_type: {e}")))?;
            if vendors.iter().any(|v: &Vendor| v.name == c.name) {
                return Err(invalid("defined twice".into()));
            }
            vendors.push(Vendor {
                name: c.name.clone(),
                roots,
                formats: c.formats.clone(),
                reader: c.reader,
                hardware_type,
                denied_serials: c
                    .denied_serials
                    .iter()
                    .map(|s| s.to_ascii_uppercase())
                    .collect(),
                allow_sha1: c.allow_sha1,
            });
        }
        Ok(Self { vendors })
    }

    /// A store from vendors built in code (tests, the development run).
    pub fn new(vendors: Vec<Vendor>) -> Self {
        Self { vendors }
    }

    /// The vendors that accept `format`.
    pub fn for_format(&self, format: AttestationFormat) -> impl Iterator<Item = &Vendor> {
        self.vendors
            .iter()
            .filter(move |v| v.formats.contains(&format))
    }

    /// Every vendor.
    pub fn all(&self) -> &[Vendor] {
        &self.vendors
    }

    /// Whether `vendor`'s deny-list names this device (display form).
    pub fn denies(&self, vendor: &str, display_serial: &str) -> bool {
        self.vendors
            .iter()
            .find(|v| v.name == vendor)
            .is_some_and(|v| v.denies(display_serial))
    }

    /// Whether no vendor is configured.
    pub fn is_empty(&self) -> bool {
        self.vendors.is_empty()
    }
}

impl Vendor {
    /// Whether a device serial (display form) is on this vendor's deny-list.
    pub fn denies(&self, display_serial: &str) -> bool {
        self.denied_serials
            .contains(&display_serial.to_ascii_uppercase())
    }
}

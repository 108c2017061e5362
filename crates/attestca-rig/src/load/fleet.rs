//! Fielded devices for the `renew` and `ocsp` modes: attested enrollments made through the rig
//! before the measured window, kept in memory (key and certificate).

use std::sync::Arc;

use der::Decode;
use x509_cert::Certificate;

use super::{LoadError, Target};
use attestca_sim::device::DeviceKey;
use attestca_sim::secure_element::KeyClaims;

/// A device in the field: its key and the certificate it holds.
pub struct FieldDevice {
    pub key: DeviceKey,
    pub certificate_der: Vec<u8>,
    pub certificate: Certificate,
}

/// Enrolls `count` attested devices over `connections` rig connections.
pub async fn enroll(
    target: &Target,
    count: usize,
    connections: usize,
) -> Result<Vec<FieldDevice>, LoadError> {
    let vendor = target.vendor()?;
    let connections = connections.clamp(1, count.max(1));
    let per_connection = count.div_ceil(connections);
    let mut enrolling = tokio::task::JoinSet::new();
    for i in 0..connections {
        let n = per_connection.min(count.saturating_sub(i * per_connection));
        let (est, vendor) = (Arc::new(target.client()?), vendor.clone());
        enrolling.spawn(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let nonce = est.nonce().await?;
                let element = vendor.manufacture()?;
                let key = DeviceKey::generate()?;
                let attestation =
                    element.attest(&key.public_key()?, &nonce, KeyClaims::default())?;
                let cn = format!("fleet-{}", hex::encode(&element.serial));
                let csr =
                    key.csr_with_attributes(&cn, vec![element.evidence_attribute(&attestation)?])?;
                let certificate_der = est.simpleenroll(&csr).await?;
                let certificate = Certificate::from_der(&certificate_der)?;
                out.push(FieldDevice {
                    key,
                    certificate_der,
                    certificate,
                });
            }
            anyhow::Ok(out)
        });
    }
    let mut fleet = Vec::with_capacity(count);
    while let Some(joined) = enrolling.join_next().await {
        let devices = joined
            .map_err(|e| LoadError::Unreachable(e.to_string()))?
            .map_err(|e| LoadError::Unreachable(format!("enrolling the fleet: {e:#}")))?;
        fleet.extend(devices);
    }
    Ok(fleet)
}

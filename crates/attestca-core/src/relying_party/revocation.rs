//! The `revocation` check: an OCSP query (RFC 6960) whose signed answer is verified against
//! the issuer or the responder certificate the issuer delegated to, or a CRL that webpki
//! checks (issuer's signature, current, the certificate not listed).

use const_oid::db::rfc5280::ID_KP_OCSP_SIGNING;
use const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC;
use der::asn1::GeneralizedTime;
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlDistributionPoints, ExtendedKeyUsage};

use super::{Chain, CheckKind, DeviceCheck, DeviceFinding, DeviceQuery, DeviceReport, Fetch};
use crate::ocsp::asn1::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponseData, TbsRequest,
};
use crate::ocsp::request::{CertIdHash, IssuerHashes};
use crate::serial::SerialKey;

/// How far a responder's clock may run ahead of ours.
const CLOCK_SKEW_SECS: u64 = 300;

/// The oldest response without a nextUpdate that is believed (a captured "good" must not be
/// replayable after a revocation for ever).
const MAX_AGE_WITHOUT_NEXT_UPDATE_SECS: u64 = 7 * 24 * 3600;

pub(super) fn check(
    report: &mut DeviceReport,
    query: &DeviceQuery<'_>,
    certificate: &Certificate,
    chain: &Chain<'_>,
    net: &mut dyn Fetch,
) {
    let outcome = match &query.revocation {
        super::RevocationCheck::Skip => {
            report.checks.push(DeviceCheck {
                check: CheckKind::Revocation,
                ok: true,
                reason: Some(DeviceFinding::RevocationNotChecked),
                detail: "not checked (ask with --ocsp or --crl)".into(),
                attestation: None,
            });
            return;
        }
        super::RevocationCheck::Ocsp(url) => ocsp(query, certificate, chain, url.clone(), net),
        super::RevocationCheck::Crl(url) => crl(certificate, chain, url.clone(), net),
    };
    match outcome {
        Ok(detail) => report.pass(CheckKind::Revocation, detail),
        Err((reason, detail)) => report.fail(CheckKind::Revocation, reason, detail),
    }
}

type Outcome = Result<String, (DeviceFinding, String)>;

fn unavailable(detail: impl Into<String>) -> (DeviceFinding, String) {
    (DeviceFinding::RevocationUnavailable, detail.into())
}

fn ocsp(
    query: &DeviceQuery<'_>,
    certificate: &Certificate,
    chain: &Chain<'_>,
    url: Option<String>,
    net: &mut dyn Fetch,
) -> Outcome {
    let url = url
        .or_else(|| ocsp_url_of(certificate))
        .ok_or_else(|| unavailable("the certificate names no OCSP responder; give its URL"))?;
    let issuer = chain
        .issuer_of(certificate)
        .ok_or_else(|| unavailable("the issuer's certificate is not among the chain and roots"))?;
    let hashes = IssuerHashes::of(&issuer).map_err(|e| unavailable(format!("issuer: {e}")))?;
    let serial = SerialKey::new(certificate.tbs_certificate().serial_number().as_bytes())
        .ok_or_else(|| unavailable("the serial is longer than any CA issues"))?;
    let cert_id = hashes
        .cert_id(CertIdHash::Sha256, &serial)
        .map_err(|e| unavailable(e.to_string()))?;
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: 0,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| unavailable(format!("request: {e}")))?;
    let body = net
        .post(&url, "application/ocsp-request", &request)
        .map_err(unavailable)?;
    let data = signed_response_data(&body, &issuer, query.now)
        .map_err(|e| unavailable(format!("{url}: {e}")))?;
    let single = data
        .responses
        .iter()
        .find(|r| same_cert_id(&r.cert_id, &cert_id))
        .ok_or_else(|| unavailable(format!("{url}: the response is about another certificate")))?;
    let this_update = unix(&single.this_update);
    if this_update > query.now + CLOCK_SKEW_SECS {
        return Err(unavailable(format!(
            "{url}: the response is from the future"
        )));
    }
    match &single.next_update {
        Some(next) if unix(next) < query.now => {
            return Err(unavailable(format!(
                "{url}: the response expired at {}",
                crate::time::rfc3339(unix(next) as i64)
            )));
        }
        None if query.now.saturating_sub(this_update) > MAX_AGE_WITHOUT_NEXT_UPDATE_SECS => {
            return Err(unavailable(format!(
                "{url}: the response has no nextUpdate and is older than 7 days"
            )));
        }
        _ => {}
    }
    match &single.cert_status {
        CertStatus::Good(_) => Ok(format!(
            "good in a signed OCSP response from {url} (this update {})",
            crate::time::rfc3339(this_update as i64)
        )),
        CertStatus::Revoked(info) => Err((
            DeviceFinding::Revoked,
            format!(
                "revoked at {}{} (OCSP, {url})",
                crate::time::rfc3339(unix(&info.revocation_time) as i64),
                info.revocation_reason
                    .and_then(|r| crate::revocation::RevocationReason::OPERATOR
                        .into_iter()
                        .chain([crate::revocation::RevocationReason::CertificateHold])
                        .find(|known| known.crl_reason() == Some(r)))
                    .map(|r| format!(", reason {r}"))
                    .unwrap_or_default()
            ),
        )),
        CertStatus::Unknown(_) => Err((
            DeviceFinding::RevocationUnknown,
            format!("the OCSP responder at {url} does not know this certificate"),
        )),
    }
}

/// The response data of a successful basic OCSP response, once its signature is verified:
/// by the issuer, or by a responder certificate the issuer signed for OCSP signing that is
/// valid `now` (RFC 6960 §4.2.2.2).
fn signed_response_data(
    body: &[u8],
    issuer: &Certificate,
    now: u64,
) -> Result<ResponseData, String> {
    let response =
        OcspResponse::from_der(body).map_err(|e| format!("not an OCSP response: {e}"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "the responder answered {:?}",
            response.response_status
        ));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| "a successful response without a body".to_owned())?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "response type {} is not basic",
            bytes.response_type
        ));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("basic response: {e}"))?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| format!("response data: {e}"))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| "the signature has unused bits".to_owned())?;
    let mut signers = vec![issuer.clone()];
    for any in basic.certs.iter().flatten() {
        let Ok(der) = any.to_der() else { continue };
        let Ok(responder) = Certificate::from_der(&der) else {
            continue;
        };
        if delegated_by(&der, &responder, issuer, now) {
            signers.push(responder);
        }
    }
    let signed = signers.iter().any(|s| {
        crate::verify::verify(
            s.tbs_certificate().subject_public_key_info(),
            basic.signature_algorithm.oid,
            &tbs,
            signature,
        )
    });
    if !signed {
        return Err(
            "the response is not signed by the issuer or a responder it delegated to".into(),
        );
    }
    ResponseData::from_der(&tbs).map_err(|e| format!("response data: {e}"))
}

/// Whether `responder` (DER `der`) is a responder certificate `issuer` signed, for OCSP
/// signing, valid at `now`.
fn delegated_by(der: &[u8], responder: &Certificate, issuer: &Certificate, now: u64) -> bool {
    let tbs = responder.tbs_certificate();
    let validity = tbs.validity();
    let valid = validity.not_before.to_unix_duration().as_secs() <= now
        && now <= validity.not_after.to_unix_duration().as_secs();
    let for_ocsp = matches!(
        tbs.get_extension::<ExtendedKeyUsage>(),
        Ok(Some((_, eku))) if eku.0.contains(&ID_KP_OCSP_SIGNING)
    );
    valid
        && for_ocsp
        && tbs.issuer() == issuer.tbs_certificate().subject()
        && crate::verify::issued_by(der, issuer)
}

fn same_cert_id(a: &CertId, b: &CertId) -> bool {
    a.hash_algorithm.oid == b.hash_algorithm.oid
        && a.issuer_name_hash == b.issuer_name_hash
        && a.issuer_key_hash == b.issuer_key_hash
        && a.serial_number == b.serial_number
}

fn unix(t: &GeneralizedTime) -> u64 {
    t.to_unix_duration().as_secs()
}

fn uri_of(name: &GeneralName) -> Option<String> {
    match name {
        GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
        _ => None,
    }
}

fn ocsp_url_of(certificate: &Certificate) -> Option<String> {
    let (_, aia) = certificate
        .tbs_certificate()
        .get_extension::<AuthorityInfoAccessSyntax>()
        .ok()??;
    aia.0
        .iter()
        .filter(|d| d.access_method == const_oid::db::rfc5280::ID_AD_OCSP)
        .find_map(|d| uri_of(&d.access_location))
}

fn crl_url_of(certificate: &Certificate) -> Option<String> {
    let (_, points) = certificate
        .tbs_certificate()
        .get_extension::<CrlDistributionPoints>()
        .ok()??;
    points.0.iter().find_map(|p| match &p.distribution_point {
        Some(DistributionPointName::FullName(names)) => names.iter().find_map(uri_of),
        _ => None,
    })
}

fn crl(
    certificate: &Certificate,
    chain: &Chain<'_>,
    url: Option<String>,
    net: &mut dyn Fetch,
) -> Outcome {
    let url = url
        .or_else(|| crl_url_of(certificate))
        .ok_or_else(|| unavailable("the certificate names no CRL; give its URL"))?;
    let body = net
        .get(&url)
        .map_err(unavailable)?
        .ok_or_else(|| unavailable(format!("{url}: not found")))?;
    let der = match pem_rfc7468::decode_vec(&body) {
        Ok((_, der)) => der,
        Err(_) => body,
    };
    match chain.verify(Some(&[der])) {
        Ok(()) => Ok(format!("not on the issuer's current CRL ({url})")),
        Err(e) if e == "revoked" => Err((
            DeviceFinding::Revoked,
            format!("listed on the issuer's CRL ({url})"),
        )),
        Err(e) => Err(unavailable(format!("{url}: {e}"))),
    }
}

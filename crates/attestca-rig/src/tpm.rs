//! A TPM 2.0 on the rig's side of the line, through the TCG software stack (tpm2-tss's ESAPI,
//! by the `tss-esapi` crate): its endorsement-key certificate, an attestation key (AK) created
//! under the endorsement key, credential activation to prove that AK to the CA, and device
//! keys created inside the TPM, certified by the AK (TPM2_Certify) and signing their CSR.
//!
//! Why tss-esapi rather than tpm2-tools: the rig is a product binary run at line rate; a
//! library call returns typed errors and needs no parsing of another program's output or
//! files, and it is the stack real TPMs and swtpm both speak (any TCTI: `device:/dev/tpmrm0`,
//! `swtpm:host=…,port=…`, `mssim:…`).
//!
//! Keys: the endorsement key from the TCG default template (RSA 2048, its certificate in NV
//! 0x01C00002), an RSA 2048 RSASSA-SHA256 AK (restricted signing) under it, a P-256 storage
//! primary in the owner hierarchy, and P-256 ECDSA device keys under that primary: fixedTPM,
//! fixedParent, sensitiveDataOrigin, sign, not restricted.

use std::str::FromStr;

use anyhow::{Context as _, anyhow};
use der::{Decode, Encode};
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EccScheme, EncryptedSecret, HashScheme, HashcheckTicket, IdObject, Public,
    Signature, SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::{Context, TctiNameConf};
use x509_cert::SubjectPublicKeyInfo;

use attestca_core::signer::CaKeyAlgorithm;

/// A connection to one TPM, with its endorsement key loaded.
///
/// A TPM holds as few as three loaded objects at a time, so the endorsement key is loaded
/// only while an attestation key is made or activated, and the storage primary only while a
/// device key is created.
pub struct Tpm {
    context: Context,
    endorsement_key: Option<KeyHandle>,
    attestation_key: Option<KeyHandle>,
}

/// A P-256 signing key created in the TPM.
pub struct TpmKey {
    handle: KeyHandle,
    /// TPMT_PUBLIC, as TPM2_Certify names it.
    pub public_area: Vec<u8>,
    pub public_key: SubjectPublicKeyInfo,
}

/// What TPM2_Certify returns: TPMS_ATTEST and the AK's TPMT_SIGNATURE over it.
pub struct Certification {
    pub attest: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Tpm {
    /// Connects through a TCTI (`swtpm:host=127.0.0.1,port=2321`, `device:/dev/tpmrm0`) and
    /// loads the endorsement key from the default RSA template.
    pub fn open(tcti: &str) -> anyhow::Result<Self> {
        let name = TctiNameConf::from_str(tcti).map_err(|e| anyhow!("TCTI {tcti:?}: {e}"))?;
        let context = Context::new(name).with_context(|| format!("opening the TPM at {tcti:?}"))?;
        Ok(Self {
            context,
            endorsement_key: None,
            attestation_key: None,
        })
    }

    /// The endorsement key, loaded from the default RSA template on first use.
    fn endorsement_key(&mut self) -> anyhow::Result<KeyHandle> {
        if let Some(handle) = self.endorsement_key {
            return Ok(handle);
        }
        let handle = ek::create_ek_object(&mut self.context, AsymmetricAlgorithm::Rsa, None)
            .context("loading the endorsement key")?;
        self.endorsement_key = Some(handle);
        Ok(handle)
    }

    /// Flushes the endorsement key (the attestation key stays loaded without it).
    fn release_endorsement_key(&mut self) {
        if let Some(handle) = self.endorsement_key.take() {
            self.context.flush_context(handle.into()).ok();
        }
    }

    /// The RSA 2048 endorsement key's certificate (DER), from NV 0x01C00002.
    pub fn endorsement_certificate(&mut self) -> anyhow::Result<Vec<u8>> {
        let stored = ek::retrieve_ek_pubcert(
            &mut self.context,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        )
        .context("the TPM has no RSA endorsement-key certificate in NV 0x01C00002")?;
        // NV indices are often larger than the certificate: keep the DER and drop the padding.
        let certificate = x509_cert::Certificate::from_der(&stored)
            .or_else(|_| x509_cert::Certificate::from_der_partial(&stored).map(|(c, _)| c))
            .map_err(|e: der::Error| anyhow!("the endorsement-key certificate: {e}"))?;
        Ok(certificate.to_der()?)
    }

    /// Creates an attestation key under the endorsement key (RSA 2048, RSASSA-SHA256,
    /// restricted signing, fixedTPM/fixedParent) and returns its TPMT_PUBLIC.
    pub fn create_attestation_key(&mut self) -> anyhow::Result<Vec<u8>> {
        let endorsement_key = self.endorsement_key()?;
        let created = ak::create_ak(
            &mut self.context,
            endorsement_key,
            HashingAlgorithm::Sha256,
            SignatureSchemeAlgorithm::RsaSsa,
            None,
            None,
        )
        .context("creating the attestation key")?;
        let public = created.out_public.clone();
        let handle = ak::load_ak(
            &mut self.context,
            endorsement_key,
            None,
            created.out_private,
            created.out_public,
        )
        .context("loading the attestation key")?;
        self.attestation_key = Some(handle);
        Ok(public.marshall()?)
    }

    /// TPM2_ActivateCredential: the secret of a challenge the CA made for this TPM's EK and
    /// the attestation key's name.
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> anyhow::Result<Vec<u8>> {
        let ak = self.attestation_key()?;
        let ek = self.endorsement_key()?;
        let (attributes, mask) = SessionAttributesBuilder::new().build();
        let hmac = self.session(SessionType::Hmac)?;
        self.context
            .tr_sess_set_attributes(hmac, attributes, mask)?;
        let policy = self.session(SessionType::Policy)?;
        self.context
            .tr_sess_set_attributes(policy, attributes, mask)?;
        // The endorsement key's policy: PolicySecret(TPM_RH_ENDORSEMENT).
        self.context.execute_with_session(Some(hmac), |ctx| {
            ctx.policy_secret(
                PolicySession::try_from(policy)?,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })?;
        let blob = IdObject::try_from(credential_blob.to_vec())?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())?;
        let recovered = self
            .context
            .execute_with_sessions((Some(hmac), Some(policy), None), |ctx| {
                ctx.activate_credential(ak, ek, blob, secret)
            })
            .context("TPM2_ActivateCredential")?;
        for session in [hmac, policy] {
            self.context
                .flush_context(ObjectHandle::from(tss_esapi::handles::SessionHandle::from(
                    session,
                )))
                .ok();
        }
        self.release_endorsement_key();
        Ok(recovered.value().to_vec())
    }

    /// Creates a P-256 ECDSA signing key inside the TPM (fixedTPM, fixedParent,
    /// sensitiveDataOrigin) and loads it.
    pub fn create_device_key(&mut self) -> anyhow::Result<TpmKey> {
        self.release_endorsement_key();
        let parent = self.storage_primary()?;
        let template = tss_esapi::utils::create_unrestricted_signing_ecc_public(
            EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
            EccCurve::NistP256,
        )?;
        let loaded = self.context.execute_with_nullauth_session(|ctx| {
            let created = ctx.create(parent, template, None, None, None, None)?;
            let public = created.out_public.clone();
            ctx.load(parent, created.out_private, created.out_public)
                .map(|h| (h, public))
        });
        self.context.flush_context(parent.into()).ok();
        let (handle, public) = loaded.context("creating the device key")?;
        let public_key = spki_of(&public)?;
        Ok(TpmKey {
            handle,
            public_area: public.marshall()?,
            public_key,
        })
    }

    /// TPM2_Certify of `key` by the attestation key, with `nonce` as qualifying data.
    pub fn certify(&mut self, key: &TpmKey, nonce: &[u8]) -> anyhow::Result<Certification> {
        let ak = self.attestation_key()?;
        let qualifying = Data::try_from(nonce.to_vec())?;
        let (attest, signature) = self
            .context
            .execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::Password),
                    None,
                ),
                |ctx| ctx.certify(key.handle.into(), ak, qualifying, SignatureScheme::Null),
            )
            .context("TPM2_Certify")?;
        Ok(Certification {
            attest: attest.marshall()?,
            signature: signature.marshall()?,
        })
    }

    /// An ECDSA-with-SHA-256 signature (DER) by `key` over `message`.
    pub fn sign(&mut self, key: &TpmKey, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        let digest = Digest::try_from(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message)
                .as_ref()
                .to_vec(),
        )?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })?;
        let signature = self
            .context
            .execute_with_nullauth_session(|ctx| {
                ctx.sign(key.handle, digest, SignatureScheme::Null, ticket)
            })
            .context("TPM2_Sign")?;
        let Signature::EcDsa(ecdsa) = signature else {
            return Err(anyhow!("the TPM did not answer with an ECDSA signature"));
        };
        let signature = p256::ecdsa::Signature::from_scalars(
            left_pad_32(ecdsa.signature_r().value())?,
            left_pad_32(ecdsa.signature_s().value())?,
        )
        .map_err(|e| anyhow!("the TPM's ECDSA signature: {e}"))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }

    fn attestation_key(&self) -> anyhow::Result<KeyHandle> {
        self.attestation_key
            .ok_or_else(|| anyhow!("no attestation key: create one first"))
    }

    fn session(&mut self, kind: SessionType) -> anyhow::Result<AuthSession> {
        self.context
            .start_auth_session(
                None,
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )?
            .ok_or_else(|| anyhow!("the TPM started no session"))
    }

    /// The owner hierarchy's P-256 storage primary, loaded (the caller flushes it).
    fn storage_primary(&mut self) -> anyhow::Result<KeyHandle> {
        let template = tss_esapi::structures::PublicBuilder::new()
            .with_public_algorithm(tss_esapi::interface_types::algorithm::PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(
                tss_esapi::attributes::ObjectAttributesBuilder::new()
                    .with_fixed_tpm(true)
                    .with_fixed_parent(true)
                    .with_sensitive_data_origin(true)
                    .with_user_with_auth(true)
                    .with_no_da(true)
                    .with_decrypt(true)
                    .with_restricted(true)
                    .build()?,
            )
            .with_ecc_parameters(
                tss_esapi::structures::PublicEccParametersBuilder::new_restricted_decryption_key(
                    SymmetricDefinitionObject::AES_128_CFB,
                    EccCurve::NistP256,
                )
                .build()?,
            )
            .with_ecc_unique_identifier(Default::default())
            .build()?;
        let handle = self
            .context
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .context("creating the storage primary key")?
            .key_handle;
        Ok(handle)
    }
}

impl Drop for Tpm {
    /// Transient objects take TPM slots until flushed (a TPM has three to seven).
    fn drop(&mut self) {
        let handles = [self.endorsement_key, self.attestation_key];
        for handle in handles.into_iter().flatten() {
            self.context.flush_context(handle.into()).ok();
        }
    }
}

impl TpmKey {
    /// Flushes the key from the TPM (it cannot be loaded again: its private part is not kept).
    pub fn flush(self, tpm: &mut Tpm) {
        tpm.context.flush_context(self.handle.into()).ok();
    }
}

/// The SubjectPublicKeyInfo of a P-256 TPMT_PUBLIC.
fn spki_of(public: &Public) -> anyhow::Result<SubjectPublicKeyInfo> {
    let Public::Ecc { unique, .. } = public else {
        return Err(anyhow!("not an ECC key"));
    };
    let mut point = vec![0x04];
    point.extend(left_pad_32(unique.x().value())?);
    point.extend(left_pad_32(unique.y().value())?);
    Ok(CaKeyAlgorithm::EcdsaP256.spki_from_point(&point)?)
}

/// A P-256 coordinate or scalar as 32 bytes (the TPM drops leading zeros).
fn left_pad_32(bytes: &[u8]) -> anyhow::Result<p256::FieldBytes> {
    let start = 32usize
        .checked_sub(bytes.len())
        .ok_or_else(|| anyhow!("a P-256 value longer than 32 bytes"))?;
    let mut out = p256::FieldBytes::default();
    out[start..].copy_from_slice(bytes);
    Ok(out)
}

/// What a TPM enrollment produced.
pub struct TpmEnrollment {
    /// The device certificate (DER) for the TPM-resident key.
    pub certificate: Vec<u8>,
    /// The attestation-key certificate the CA issued for this run's AK.
    pub attestation_key_certificate: Vec<u8>,
    /// The CSR that was enrolled.
    pub csr: Vec<u8>,
}

/// The whole line on one TPM: the EK certificate and a new AK go to the CA, which answers
/// with a credential challenge; the TPM activates it and the CA certifies the AK; a device
/// key is created in the TPM, certified by the AK over the CA's nonce (TPM2_Certify), and
/// its CSR — signed by the TPM — carries that evidence and the AK's chain.
pub async fn enroll(
    tpm: &mut Tpm,
    est: &crate::client::EstClient,
    cn: &str,
) -> anyhow::Result<TpmEnrollment> {
    use attestca_core::attestation::tpm::TcgAttestCertify;
    use attestca_core::attestation::{ID_AA_ATTESTATION, ID_STMT_TPM_CERTIFY, bundle};
    use der::asn1::{Any, OctetString, SetOfVec};

    let endorsement = tpm.endorsement_certificate()?;
    let ak_public = tpm.create_attestation_key()?;
    let (blob, encrypted_secret) = est
        .attestation_key_challenge(&endorsement, &ak_public)
        .await?;
    let secret = tpm.activate_credential(&blob, &encrypted_secret)?;
    let (ak_certificate, chain) = est
        .attestation_key_certificate(&endorsement, &ak_public, &secret)
        .await?;

    let nonce = est.nonce().await?;
    let key = tpm.create_device_key()?;
    let enrolled = async {
        let certified = tpm.certify(&key, &nonce)?;
        let statement = TcgAttestCertify {
            tpm_s_attest: OctetString::new(certified.attest)?,
            signature: OctetString::new(certified.signature)?,
            tpm_t_public: Some(OctetString::new(key.public_area.clone())?),
        }
        .to_der()?;
        // The pool: the AK certificate and the CA certificates above it (the root is the
        // verifier's own and is left out).
        let mut pool = vec![ak_certificate.clone()];
        pool.extend(chain.iter().take(chain.len().saturating_sub(1)).cloned());
        let evidence = bundle::encode(&[(ID_STMT_TPM_CERTIFY, statement)], &pool)?;
        let attribute = x509_cert::attr::Attribute {
            oid: ID_AA_ATTESTATION,
            values: SetOfVec::try_from(vec![Any::from_der(&evidence)?])?,
        };
        let subject = x509_cert::name::Name::from_str(&format!("CN={cn}"))
            .map_err(|e| anyhow!("CN {cn:?}: {e}"))?;
        let info = x509_cert::request::CertReqInfo {
            version: x509_cert::request::Version::V1,
            subject,
            public_key: key.public_key.clone(),
            attributes: SetOfVec::try_from(vec![attribute])?,
        };
        let info_der = info.to_der()?;
        let signature = tpm.sign(&key, &info_der)?;
        let csr = attestca_core::asn1::SignedEnvelope::assemble(
            &info_der,
            CaKeyAlgorithm::EcdsaP256.signature_algorithm(),
            &signature,
        )?;
        let certificate = est.simpleenroll(&csr).await?;
        anyhow::Ok(TpmEnrollment {
            certificate,
            attestation_key_certificate: ak_certificate,
            csr,
        })
    }
    .await;
    key.flush(tpm);
    enrolled
}

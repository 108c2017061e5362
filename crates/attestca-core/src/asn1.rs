//! ASN.1 structures the project encodes itself, where the x509-cert types keep their fields private.

use der::asn1::{AnyRef, BitString, UintRef};
use der::{Decode, Encode, Sequence};
use x509_cert::ext::Extensions;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::{AlgorithmIdentifier, SubjectPublicKeyInfo, Version};

/// RFC 5280 `TBSCertificate`, with public fields so that the issuance layer can fill it in.
///
/// x509-cert 0.3 only builds certificates through its `Builder`, which wants a signer that is
/// also a `Keypair` of a RustCrypto key type; a PKCS#11 key is not. Encoding the TBS ourselves
/// keeps the signer seam to "sign these bytes".
#[derive(Clone, Debug, Sequence)]
pub struct TbsCertificateFields {
    #[asn1(context_specific = "0", default = "Default::default")]
    pub version: Version,
    pub serial_number: SerialNumber,
    pub signature: AlgorithmIdentifier,
    pub issuer: Name,
    pub validity: Validity,
    pub subject: Name,
    pub subject_public_key_info: SubjectPublicKeyInfo,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    pub extensions: Option<Extensions>,
}

/// `SEQUENCE { tbs, signatureAlgorithm, signature }`: the outer shape shared by certificates,
/// CRLs and CSRs. The TBS is carried as already-encoded DER so that what was signed is exactly
/// what is emitted.
#[derive(Clone, Debug, Sequence)]
pub struct SignedEnvelope<'a> {
    pub tbs: AnyRef<'a>,
    pub algorithm: AlgorithmIdentifier,
    pub signature: BitString,
}

impl<'a> SignedEnvelope<'a> {
    /// Wraps `tbs_der` with its signature and returns the DER of the whole structure.
    pub fn assemble(
        tbs_der: &'a [u8],
        algorithm: AlgorithmIdentifier,
        signature: &[u8],
    ) -> der::Result<Vec<u8>> {
        SignedEnvelope {
            tbs: AnyRef::from_der(tbs_der)?,
            algorithm,
            signature: BitString::from_bytes(signature)?,
        }
        .to_der()
    }
}

/// PKCS#1 `RSAPublicKey`, read only to learn the modulus size of a device key.
#[derive(Clone, Debug, Sequence)]
pub struct RsaPublicKey<'a> {
    pub modulus: UintRef<'a>,
    pub public_exponent: UintRef<'a>,
}

impl RsaPublicKey<'_> {
    /// Modulus length in bits.
    pub fn modulus_bits(&self) -> usize {
        let bytes = self.modulus.as_bytes();
        match bytes.first() {
            None => 0,
            Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        }
    }
}

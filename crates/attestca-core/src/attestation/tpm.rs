//! TPM 2.0 TPM2_Certify evidence (tcg-attest-tpm-certify, 2.23.133.20.1).
//!
//! A TPM proves that it holds a key by certifying it with an attestation key (AK): TPM2_Certify
//! returns a TPMS_ATTEST naming the certified object, signed by the AK. The statement carries
//! that TPMS_ATTEST, its signature and the certified object's TPMT_PUBLIC; the AK certificate
//! travels in the bundle's certificate pool and must chain to a vendor's AK-CA root.
//!
//! What the checks establish, in order:
//! 1. the structures parse (every read bounds-checked: the bytes come from the requester);
//! 2. some pool certificate's key signed the TPMS_ATTEST: that certificate is the AK's;
//! 3. the AK certificate chains to a TPM vendor root, is not a CA, and has the AIK EKU;
//! 4. the TPMS_ATTEST names exactly the TPMT_PUBLIC sent along (name = nameAlg ‖ H(public));
//! 5. the TPMT_PUBLIC's attributes say the key was generated in this TPM and cannot leave it;
//! 6. the key in the TPMT_PUBLIC is the CSR's key.

use super::EvidenceCertificate;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_ASN1,
    ECDSA_P384_SHA384_FIXED, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, UnparsedPublicKey,
    VerificationAlgorithm,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1};
use der::asn1::{Any, BitString, OctetString, UintRef};
use der::{Decode, Encode, Sequence};
use sha2::{Digest, Sha256, Sha384};
use x509_cert::SubjectPublicKeyInfo;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
use x509_cert::spki::AlgorithmIdentifierOwned;

use super::chain::{self, PathOptions, VerifiedPath};
use super::vendors::Vendor;
use super::{
    AttestationError, AttestationFormat, AttestedKey, DeviceIdentity, ID_STMT_TPM_CERTIFY,
    StatementVerifier, VerificationContext, same_key,
};
use crate::reason::Reason;
use crate::verify::{PublicKeyKind, key_kind};

/// tcg-kp-AIKCertificate: the EKU that makes a certificate an attestation-key certificate.
const TCG_KP_AIK_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.8.3");

/// TPM_GENERATED_VALUE: the magic that marks a TPMS_ATTEST as produced by the TPM itself (the
/// TPM refuses to sign external data starting with it).
const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_CERTIFY: the TPMS_ATTEST comes from TPM2_Certify.
const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// Size of TPMS_CLOCK_INFO: clock u64, resetCount u32, restartCount u32, safe u8.
const CLOCK_INFO_SIZE: usize = 17;
/// Size of firmwareVersion (u64).
const FIRMWARE_VERSION_SIZE: usize = 8;

// TPM_ALG_ID values (TPM 2.0 Library, Part 2, table 9).
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA1: u16 = 0x0004;
const TPM_ALG_SHA256: u16 = 0x000b;
const TPM_ALG_SHA384: u16 = 0x000c;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;
const TPM_ALG_RSAES: u16 = 0x0015;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_ECDAA: u16 = 0x001a;
const TPM_ALG_ECC: u16 = 0x0023;

// TPM_ECC_CURVE values.
const TPM_ECC_NIST_P256: u16 = 0x0003;
const TPM_ECC_NIST_P384: u16 = 0x0004;

// TPMA_OBJECT bits.
/// The object cannot be duplicated: it never leaves this TPM.
const FIXED_TPM: u32 = 1 << 1;
/// The object cannot be moved to another parent.
const FIXED_PARENT: u32 = 1 << 4;
/// The TPM generated the sensitive part (the private key) itself.
const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
/// The key signs only TPM-generated structures; a CSR key must sign arbitrary data.
const RESTRICTED: u32 = 1 << 16;
/// The key may sign.
const SIGN: u32 = 1 << 18;

/// RSA public exponent used when TPMT_PUBLIC says 0 (the TPM default).
const DEFAULT_RSA_EXPONENT: u32 = 65_537;

/// The statement.
///
/// ```asn1
/// TcgAttestCertify ::= SEQUENCE {
///    tpmSAttest OCTET STRING,            -- TPMS_ATTEST from TPM2_Certify
///    signature  OCTET STRING,            -- the AK's signature over tpmSAttest
///    tpmTPublic OCTET STRING OPTIONAL }  -- TPMT_PUBLIC of the certified key, no size prefix
/// ```
#[derive(Clone, Debug, Sequence)]
pub struct TcgAttestCertify {
    pub tpm_s_attest: OctetString,
    pub signature: OctetString,
    #[asn1(optional = "true")]
    pub tpm_t_public: Option<OctetString>,
}

/// The TPM2_Certify verifier.
pub struct TpmCertifyVerifier;

impl StatementVerifier for TpmCertifyVerifier {
    fn statement_type(&self) -> ObjectIdentifier {
        ID_STMT_TPM_CERTIFY
    }

    fn format(&self) -> AttestationFormat {
        AttestationFormat::TpmCertify
    }

    fn claimed_nonce(&self, statement: &[u8]) -> Option<Vec<u8>> {
        let stmt = TcgAttestCertify::from_der(statement).ok()?;
        let attest = TpmsAttest::parse(stmt.tpm_s_attest.as_bytes()).ok()?;
        Some(attest.extra_data.to_vec())
    }

    fn verify(
        &self,
        statement: &[u8],
        context: &VerificationContext<'_>,
    ) -> Result<AttestedKey, AttestationError> {
        let stmt = TcgAttestCertify::from_der(statement)
            .map_err(|e| malformed(format!("the statement is not a TcgAttestCertify: {e}")))?;
        // Without the TPMT_PUBLIC the attested name is an opaque hash: nothing would tie it
        // to the CSR's key.
        let public_bytes = stmt
            .tpm_t_public
            .as_ref()
            .ok_or_else(|| malformed("the TcgAttestCertify lacks tpmTPublic"))?
            .as_bytes();
        let attest_bytes = stmt.tpm_s_attest.as_bytes();
        let attest = TpmsAttest::parse(attest_bytes)?;
        let public = TpmtPublic::parse(public_bytes)?;

        let (ak, vendor) = find_trusted_ak(attest_bytes, stmt.signature.as_bytes(), context)?;
        check_name(attest.name, public.name_alg, public_bytes)?;
        check_attributes(public.object_attributes)?;
        if !same_key(&public.key.to_spki()?, context.csr_key) {
            return Err(AttestationError::refused(
                Reason::AttestationKeyMismatch,
                "the TPM certified another key than the CSR's",
            ));
        }
        Ok(attested_key(vendor, ak, &attest, &public))
    }
}

fn malformed(detail: impl Into<String>) -> AttestationError {
    AttestationError::malformed(Reason::AttestationMalformed, detail)
}

// ---------------------------------------------------------------------------------------------
// TPM structures

/// A cursor over a TPM structure: big-endian integers and TPM2B (u16 size-prefixed) buffers.
/// Every read is bounds-checked, because these bytes come straight from the requester.
struct Reader<'a> {
    rest: &'a [u8],
    /// The structure being read, for error messages.
    structure: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], structure: &'static str) -> Self {
        Self {
            rest: bytes,
            structure,
        }
    }

    fn truncated(&self) -> AttestationError {
        malformed(format!("{} is truncated", self.structure))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AttestationError> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| self.truncated())?;
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AttestationError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| self.truncated())?;
        self.rest = rest;
        Ok(*head)
    }

    fn u16(&mut self) -> Result<u16, AttestationError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, AttestationError> {
        self.array().map(u32::from_be_bytes)
    }

    /// A TPM2B_*: u16 size, then that many bytes.
    fn tpm2b(&mut self) -> Result<&'a [u8], AttestationError> {
        let size = self.u16()?;
        self.take(usize::from(size))
    }

    /// Requires that the structure was read to its end: trailing bytes are not signed-for
    /// content anyone checked.
    fn finish(self) -> Result<(), AttestationError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} has {} trailing bytes",
                self.structure,
                self.rest.len()
            )))
        }
    }
}

/// The parts of a TPMS_ATTEST (type TPM_ST_ATTEST_CERTIFY) the verifier uses.
#[derive(Debug)]
struct TpmsAttest<'a> {
    /// extraData: the caller-supplied qualifying data, i.e. the CA's nonce.
    extra_data: &'a [u8],
    /// attested.certify.name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC) of the certified object.
    name: &'a [u8],
}

impl<'a> TpmsAttest<'a> {
    /// magic(4) type(2) qualifiedSigner(TPM2B) extraData(TPM2B) clockInfo(17)
    /// firmwareVersion(8) attested.certify = name(TPM2B) qualifiedName(TPM2B).
    fn parse(bytes: &'a [u8]) -> Result<Self, AttestationError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        if r.u32()? != TPM_GENERATED_VALUE {
            return Err(malformed(
                "TPMS_ATTEST magic is not TPM_GENERATED_VALUE: not produced by a TPM",
            ));
        }
        if r.u16()? != TPM_ST_ATTEST_CERTIFY {
            return Err(malformed(
                "TPMS_ATTEST type is not TPM_ST_ATTEST_CERTIFY (0x8017)",
            ));
        }
        let _qualified_signer = r.tpm2b()?;
        let extra_data = r.tpm2b()?;
        r.take(CLOCK_INFO_SIZE + FIRMWARE_VERSION_SIZE)?;
        let name = r.tpm2b()?;
        let _qualified_name = r.tpm2b()?;
        r.finish()?;
        Ok(Self { extra_data, name })
    }
}

/// The public key a TPMT_PUBLIC describes.
#[derive(Debug)]
enum TpmKey<'a> {
    Rsa {
        modulus: &'a [u8],
        exponent: u32,
    },
    Ecc {
        curve: u16,
        x: &'a [u8],
        y: &'a [u8],
    },
}

/// TPMA_OBJECT bits, for the registration authority's checks of keys it certifies.
pub mod object_attributes {
    pub const FIXED_TPM: u32 = super::FIXED_TPM;
    pub const FIXED_PARENT: u32 = super::FIXED_PARENT;
    pub const SENSITIVE_DATA_ORIGIN: u32 = super::SENSITIVE_DATA_ORIGIN;
    pub const RESTRICTED: u32 = super::RESTRICTED;
    /// The key may decrypt (an attestation key must not: it would be a storage key too).
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = super::SIGN;
}

/// A TPMT_PUBLIC, read: its name algorithm, attributes, key and TPM name.
#[derive(Clone, Debug)]
pub struct PublicArea {
    pub name_alg: u16,
    pub object_attributes: u32,
    pub public_key: SubjectPublicKeyInfo,
    /// nameAlg ‖ H_nameAlg(TPMT_PUBLIC): how the TPM names the object (SHA-256 only).
    pub name: Vec<u8>,
}

/// Reads a TPMT_PUBLIC with a SHA-256 name algorithm (every bound is checked: the bytes come
/// from the requester).
pub fn read_public_area(bytes: &[u8]) -> Result<PublicArea, AttestationError> {
    let public = TpmtPublic::parse(bytes)?;
    if public.name_alg != TPM_ALG_SHA256 {
        return Err(malformed(format!(
            "TPMT_PUBLIC nameAlg {:#06x} is not SHA-256",
            public.name_alg
        )));
    }
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend(Sha256::digest(bytes));
    Ok(PublicArea {
        name_alg: public.name_alg,
        object_attributes: public.object_attributes,
        public_key: public.key.to_spki()?,
        name,
    })
}

/// The parts of a TPMT_PUBLIC the verifier uses.
#[derive(Debug)]
struct TpmtPublic<'a> {
    name_alg: u16,
    object_attributes: u32,
    key: TpmKey<'a>,
}

impl<'a> TpmtPublic<'a> {
    /// type(2) nameAlg(2) objectAttributes(4) authPolicy(TPM2B) parameters unique.
    fn parse(bytes: &'a [u8]) -> Result<Self, AttestationError> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let key_type = r.u16()?;
        let name_alg = r.u16()?;
        let object_attributes = r.u32()?;
        let _auth_policy = r.tpm2b()?;
        let key = match key_type {
            TPM_ALG_RSA => parse_rsa(&mut r)?,
            TPM_ALG_ECC => parse_ecc(&mut r)?,
            other => {
                return Err(malformed(format!(
                    "TPMT_PUBLIC type {other:#06x} is neither RSA nor ECC"
                )));
            }
        };
        r.finish()?;
        Ok(Self {
            name_alg,
            object_attributes,
            key,
        })
    }
}

/// TPMS_RSA_PARMS then TPM2B_PUBLIC_KEY_RSA.
fn parse_rsa<'a>(r: &mut Reader<'a>) -> Result<TpmKey<'a>, AttestationError> {
    skip_symmetric(r)?;
    skip_scheme(r)?;
    let _key_bits = r.u16()?;
    let exponent = match r.u32()? {
        0 => DEFAULT_RSA_EXPONENT,
        e => e,
    };
    let modulus = r.tpm2b()?;
    Ok(TpmKey::Rsa { modulus, exponent })
}

/// TPMS_ECC_PARMS then TPMS_ECC_POINT.
fn parse_ecc<'a>(r: &mut Reader<'a>) -> Result<TpmKey<'a>, AttestationError> {
    skip_symmetric(r)?;
    skip_scheme(r)?;
    let curve = r.u16()?;
    // TPMT_KDF_SCHEME: scheme, then a hash algorithm unless NULL.
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?;
    }
    let x = r.tpm2b()?;
    let y = r.tpm2b()?;
    Ok(TpmKey::Ecc { curve, x, y })
}

/// TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless NULL (signing keys have NULL).
fn skip_symmetric(r: &mut Reader<'_>) -> Result<(), AttestationError> {
    if r.u16()? != TPM_ALG_NULL {
        r.u16()?;
        r.u16()?;
    }
    Ok(())
}

/// TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: scheme, then its details: none for NULL and RSAES, a
/// hash algorithm for the others, and a hash algorithm plus a count for ECDAA.
fn skip_scheme(r: &mut Reader<'_>) -> Result<(), AttestationError> {
    match r.u16()? {
        TPM_ALG_NULL | TPM_ALG_RSAES => {}
        TPM_ALG_ECDAA => {
            r.u16()?;
            r.u16()?;
        }
        _ => {
            r.u16()?;
        }
    }
    Ok(())
}

impl TpmKey<'_> {
    /// The key as the SubjectPublicKeyInfo a CSR would carry, to compare DER with the CSR's.
    fn to_spki(&self) -> Result<SubjectPublicKeyInfo, AttestationError> {
        let encoding = |e: der::Error| malformed(format!("the TPM key does not encode: {e}"));
        match self {
            TpmKey::Rsa { modulus, exponent } => {
                let exponent = exponent.to_be_bytes();
                let key = RsaPublicKey {
                    modulus: UintRef::new(modulus).map_err(encoding)?,
                    public_exponent: UintRef::new(&exponent).map_err(encoding)?,
                }
                .to_der()
                .map_err(encoding)?;
                spki(RSA_ENCRYPTION, Any::null(), &key).map_err(encoding)
            }
            TpmKey::Ecc { curve, x, y } => {
                let (curve_oid, size) = match *curve {
                    TPM_ECC_NIST_P256 => (SECP_256_R_1, 32),
                    TPM_ECC_NIST_P384 => (SECP_384_R_1, 48),
                    other => {
                        return Err(malformed(format!("unsupported TPM ECC curve {other:#06x}")));
                    }
                };
                let mut point = vec![0x04];
                point.extend(left_pad(x, size).ok_or_else(|| malformed("ECC x too long"))?);
                point.extend(left_pad(y, size).ok_or_else(|| malformed("ECC y too long"))?);
                let parameters = Any::encode_from(&curve_oid).map_err(encoding)?;
                spki(ID_EC_PUBLIC_KEY, parameters, &point).map_err(encoding)
            }
        }
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

fn spki(
    algorithm: ObjectIdentifier,
    parameters: Any,
    key: &[u8],
) -> der::Result<SubjectPublicKeyInfo> {
    Ok(SubjectPublicKeyInfo {
        algorithm: AlgorithmIdentifierOwned {
            oid: algorithm,
            parameters: Some(parameters),
        },
        subject_public_key: BitString::from_bytes(key)?,
    })
}

/// A big-endian integer as exactly `size` bytes (TPMs may drop leading zeros), or `None` when
/// it does not fit.
fn left_pad(bytes: &[u8], size: usize) -> Option<Vec<u8>> {
    let significant = bytes
        .iter()
        .position(|b| *b != 0)
        .map_or(&[][..], |i| &bytes[i..]);
    let padding = size.checked_sub(significant.len())?;
    let mut out = vec![0; padding];
    out.extend_from_slice(significant);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// The attestation key

/// A TPMT_SIGNATURE, the form TPM2_Certify returns its signature in.
#[derive(Debug)]
enum TpmtSignature<'a> {
    /// TPM_ALG_RSASSA: hashAlg, TPM2B signature.
    RsaSsa { hash: u16, signature: &'a [u8] },
    /// TPM_ALG_ECDSA: hashAlg, TPM2B r, TPM2B s.
    Ecdsa { hash: u16, r: &'a [u8], s: &'a [u8] },
}

impl<'a> TpmtSignature<'a> {
    /// The signature as a TPMT_SIGNATURE, or `None` when the bytes are not one (they are then
    /// taken as a raw signature).
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let sig_alg = r.u16().ok()?;
        let hash = r.u16().ok()?;
        let parsed = match sig_alg {
            TPM_ALG_RSASSA => TpmtSignature::RsaSsa {
                hash,
                signature: r.tpm2b().ok()?,
            },
            TPM_ALG_ECDSA => TpmtSignature::Ecdsa {
                hash,
                r: r.tpm2b().ok()?,
                s: r.tpm2b().ok()?,
            },
            _ => return None,
        };
        r.finish().ok()?;
        Some(parsed)
    }

    /// Whether this signature by `key` (of `kind`) verifies over `message`, and how it was
    /// hashed.
    fn verifies(&self, kind: PublicKeyKind, key: &[u8], message: &[u8]) -> Option<SignatureHash> {
        let verified = match (kind, self) {
            (PublicKeyKind::Rsa, TpmtSignature::RsaSsa { hash, signature }) => {
                let (algorithm, strength): (&'static dyn VerificationAlgorithm, _) = match *hash {
                    TPM_ALG_SHA256 => (&RSA_PKCS1_2048_8192_SHA256, SignatureHash::Strong),
                    TPM_ALG_SHA384 => (&RSA_PKCS1_2048_8192_SHA384, SignatureHash::Strong),
                    TPM_ALG_SHA1 => (
                        &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                        SignatureHash::Sha1,
                    ),
                    _ => return None,
                };
                return check(algorithm, key, message, signature).then_some(strength);
            }
            (PublicKeyKind::P256, TpmtSignature::Ecdsa { hash, r, s })
                if *hash == TPM_ALG_SHA256 =>
            {
                fixed_ecdsa(r, s, 32)
                    .is_some_and(|rs| check(&ECDSA_P256_SHA256_FIXED, key, message, &rs))
            }
            (PublicKeyKind::P384, TpmtSignature::Ecdsa { hash, r, s })
                if *hash == TPM_ALG_SHA384 =>
            {
                fixed_ecdsa(r, s, 48)
                    .is_some_and(|rs| check(&ECDSA_P384_SHA384_FIXED, key, message, &rs))
            }
            _ => false,
        };
        verified.then_some(SignatureHash::Strong)
    }
}

/// ECDSA r ‖ s, each `size` bytes.
fn fixed_ecdsa(r: &[u8], s: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut rs = left_pad(r, size)?;
    rs.extend(left_pad(s, size)?);
    Some(rs)
}

fn check(
    algorithm: &'static dyn VerificationAlgorithm,
    key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> bool {
    UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .is_ok()
}

/// The algorithms a raw (not TPMT_SIGNATURE) signature by a key of `kind` is tried with: the
/// key's natural hash, and for ECDSA both DER and r ‖ s encodings.
fn raw_algorithms(kind: PublicKeyKind) -> &'static [&'static dyn VerificationAlgorithm] {
    static RSA: [&dyn VerificationAlgorithm; 1] = [&RSA_PKCS1_2048_8192_SHA256];
    static P256: [&dyn VerificationAlgorithm; 2] =
        [&ECDSA_P256_SHA256_ASN1, &ECDSA_P256_SHA256_FIXED];
    static P384: [&dyn VerificationAlgorithm; 2] =
        [&ECDSA_P384_SHA384_ASN1, &ECDSA_P384_SHA384_FIXED];
    match kind {
        PublicKeyKind::Rsa => &RSA,
        PublicKeyKind::P256 => &P256,
        PublicKeyKind::P384 => &P384,
    }
}

/// How a signature over a TPMS_ATTEST was hashed, as far as trusting it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SignatureHash {
    /// SHA-256 or stronger.
    Strong,
    /// SHA-1, which Windows' AIKs still sign TPM2_Certify with: collisions are practical, so
    /// it counts only for a vendor whose entry allows it (`allow_sha1`).
    Sha1,
}

/// Whether `signature` over `message` verifies with the key in `spki`, as raw bytes or as a
/// TPMT_SIGNATURE, and with which hash.
fn signed_by(
    spki: &SubjectPublicKeyInfo,
    message: &[u8],
    signature: &[u8],
) -> Option<SignatureHash> {
    let kind = key_kind(spki)?;
    let key = spki.subject_public_key.raw_bytes();
    if raw_algorithms(kind)
        .iter()
        .any(|algorithm| check(*algorithm, key, message, signature))
    {
        return Some(SignatureHash::Strong);
    }
    if let Some(tpmt) = TpmtSignature::parse(signature) {
        return tpmt.verifies(kind, key, message);
    }
    (kind == PublicKeyKind::Rsa
        && check(
            &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            key,
            message,
            signature,
        ))
    .then_some(SignatureHash::Sha1)
}

/// The AK certificate and the vendor it chains to: a pool certificate whose key signed the
/// TPMS_ATTEST, chaining to a TPM vendor's root, and allowed to be an AK.
///
/// Every signing certificate is tried (a pool may hold both an expired and a renewed
/// certificate for the same AK); the last failure is reported.
fn find_trusted_ak<'c>(
    attest: &[u8],
    signature: &[u8],
    context: &VerificationContext<'c>,
) -> Result<(&'c EvidenceCertificate, &'c Vendor), AttestationError> {
    let mut last = AttestationError::refused(
        Reason::AttestationSignatureInvalid,
        "no certificate in the bundle verifies the signature over TPMS_ATTEST",
    );
    // Each pool key is tried once (a renewed AK certificate repeats its key), and every try
    // is counted against the request's budget.
    let mut tried = std::collections::HashSet::new();
    for ak in context.pool {
        let key = chain::spki_sha256(ak);
        if !tried.insert(key) {
            continue;
        }
        let signed = context.budget.check(|| {
            signed_by(
                ak.tbs_certificate().subject_public_key_info(),
                attest,
                signature,
            )
        })?;
        let Some(hash) = signed else {
            continue;
        };
        let trusted = chain_to_vendor(ak, context)
            .and_then(|v| check_ak_allowed(ak).map(|()| v))
            .and_then(|v| check_hash_allowed(v, hash).map(|()| v));
        match trusted {
            Ok(vendor) => return Ok((ak, vendor)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The first vendor accepting TPM2_Certify evidence whose roots anchor the AK certificate.
fn chain_to_vendor<'c>(
    ak: &EvidenceCertificate,
    context: &VerificationContext<'c>,
) -> Result<&'c Vendor, AttestationError> {
    let mut last = AttestationError::refused(
        Reason::AttestationUntrustedRoot,
        format!(
            "the AK certificate {} does not chain to a trusted TPM vendor root",
            chain::subject(ak)
        ),
    );
    for vendor in context.vendors.for_format(AttestationFormat::TpmCertify) {
        match anchored_path(ak, context, &vendor.roots) {
            Ok(_) => return Ok(vendor),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A path from the AK certificate to one of `roots` (trust anchors, taken as given).
fn anchored_path(
    ak: &EvidenceCertificate,
    context: &VerificationContext<'_>,
    roots: &[EvidenceCertificate],
) -> Result<VerifiedPath, AttestationError> {
    chain::build(
        ak,
        context.pool,
        roots,
        context.at,
        PathOptions::default(),
        &context.budget,
    )
}

/// A SHA-1 signature counts only for a vendor that allows it.
fn check_hash_allowed(vendor: &Vendor, hash: SignatureHash) -> Result<(), AttestationError> {
    if hash == SignatureHash::Sha1 && !vendor.allow_sha1 {
        return Err(AttestationError::refused(
            Reason::AttestationWeakHash,
            format!(
                "the TPMS_ATTEST is signed with SHA-1, which vendor {} does not allow \
                 (allow_sha1)",
                vendor.name
            ),
        ));
    }
    Ok(())
}

/// An AK certificate certifies a TPM attestation key: not a CA, with tcg-kp-AIKCertificate.
fn check_ak_allowed(ak: &EvidenceCertificate) -> Result<(), AttestationError> {
    let not_allowed = |why: &str| {
        AttestationError::refused(
            Reason::AttestationAkNotAllowed,
            format!("{} {why}", chain::subject(ak)),
        )
    };
    let tbs = ak.tbs_certificate();
    let constraints = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| malformed(format!("AK basicConstraints: {e}")))?;
    if constraints.is_some_and(|(_, bc)| bc.ca) {
        return Err(not_allowed(
            "is a CA certificate, not an attestation-key certificate",
        ));
    }
    let usages = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|e| malformed(format!("AK extendedKeyUsage: {e}")))?;
    if !usages.is_some_and(|(_, eku)| eku.0.contains(&TCG_KP_AIK_CERTIFICATE)) {
        return Err(not_allowed(
            "lacks the tcg-kp-AIKCertificate EKU (2.23.133.8.3)",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What the TPM says about the certified key

/// The TPMS_ATTEST must name the TPMT_PUBLIC sent along: name = nameAlg ‖ H_nameAlg(public).
/// Otherwise the TPM certified some other object and the TPMT_PUBLIC proves nothing.
fn check_name(name: &[u8], name_alg: u16, public: &[u8]) -> Result<(), AttestationError> {
    let digest = match name_alg {
        TPM_ALG_SHA256 => Sha256::digest(public).to_vec(),
        TPM_ALG_SHA384 => Sha384::digest(public).to_vec(),
        other => {
            return Err(malformed(format!(
                "unsupported TPMT_PUBLIC nameAlg {other:#06x}"
            )));
        }
    };
    let mut expected = name_alg.to_be_bytes().to_vec();
    expected.extend(digest);
    if name == expected.as_slice() {
        Ok(())
    } else {
        Err(AttestationError::refused(
            Reason::AttestationTpmNameMismatch,
            "the certified name is not the name of the TPMT_PUBLIC in the statement",
        ))
    }
}

/// The key must have been generated in this TPM (sensitiveDataOrigin), be bound to it
/// (fixedTPM, fixedParent), and be a general signing key (sign, not restricted) as a CSR key is.
fn check_attributes(attributes: u32) -> Result<(), AttestationError> {
    let required = [
        (FIXED_TPM, "fixedTPM"),
        (FIXED_PARENT, "fixedParent"),
        (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (SIGN, "sign"),
    ];
    let missing: Vec<&str> = required
        .iter()
        .filter(|(bit, _)| attributes & bit == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(AttestationError::refused(
            Reason::AttestationTpmKeyAttributes,
            format!("the TPM key lacks {}", missing.join(", ")),
        ));
    }
    if attributes & RESTRICTED != 0 {
        return Err(AttestationError::refused(
            Reason::AttestationTpmKeyAttributes,
            "the TPM key is restricted: it cannot sign arbitrary data such as certificates' TBS",
        ));
    }
    Ok(())
}

fn attested_key(
    vendor: &Vendor,
    ak: &EvidenceCertificate,
    attest: &TpmsAttest<'_>,
    public: &TpmtPublic<'_>,
) -> AttestedKey {
    let attributes = public.object_attributes;
    let bound_to_tpm = attributes & FIXED_TPM != 0 && attributes & FIXED_PARENT != 0;
    AttestedKey {
        format: AttestationFormat::TpmCertify,
        vendor: vendor.name.clone(),
        device: ak_identity(vendor, ak),
        nonce: Some(attest.extra_data.to_vec()),
        generated_on_device: Some(attributes & SENSITIVE_DATA_ORIGIN != 0),
        exportable: Some(!bound_to_tpm),
        tpm: TpmDescription::of_certificate(ak),
    }
}

/// The hwSerialNum of a hardwareModuleName (RFC 4108) in the certificate's subjectAltName.
fn hardware_serial(certificate: &EvidenceCertificate) -> Option<Vec<u8>> {
    use x509_cert::ext::pkix::name::{GeneralName, HardwareModuleName};
    let (_, names) = certificate
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::SubjectAltName>()
        .ok()??;
    names.0.iter().find_map(|name| match name {
        GeneralName::OtherName(other) => HardwareModuleName::from_other_name(other)
            .ok()
            .flatten()
            .map(|m| m.hw_serial_num.as_bytes().to_vec()),
        _ => None,
    })
}

/// tcg-at-tpmManufacturer, tcg-at-tpmModel, tcg-at-tpmVersion: the directoryName attributes
/// of an AK (or EK) certificate's subjectAltName (TCG EK Credential Profile, 3.1).
const TCG_AT_TPM_MANUFACTURER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.1");
const TCG_AT_TPM_MODEL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.2");
const TCG_AT_TPM_VERSION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.2.3");

/// A TPM as its AK or EK certificate describes it: manufacturer (`id:494E5443`, the TCG
/// vendor ID in hex), model and firmware version (`id:00020000`), as the TCG EK Credential
/// Profile writes them into a subjectAltName directoryName.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TpmDescription {
    pub manufacturer: String,
    pub model: String,
    pub version: String,
}

impl TpmDescription {
    /// The description in a certificate's subjectAltName; `None` when it has none (or not
    /// all three attributes).
    pub fn of_certificate(certificate: &EvidenceCertificate) -> Option<Self> {
        let (_, names) = certificate
            .tbs_certificate()
            .get_extension::<x509_cert::ext::pkix::SubjectAltName>()
            .ok()??;
        let mut found = (None, None, None);
        for name in &names.0 {
            let x509_cert::ext::pkix::name::GeneralName::DirectoryName(directory) = name else {
                continue;
            };
            for attribute in directory.iter() {
                let slot = match attribute.oid {
                    TCG_AT_TPM_MANUFACTURER => &mut found.0,
                    TCG_AT_TPM_MODEL => &mut found.1,
                    TCG_AT_TPM_VERSION => &mut found.2,
                    _ => continue,
                };
                *slot = directory_string(&attribute.value);
            }
        }
        Some(Self {
            manufacturer: found.0?,
            model: found.1?,
            version: found.2?,
        })
    }

    /// The manufacturer's TCG vendor ID as text (`INTC`, `NTC`, `STM`, `IFX`), when the
    /// manufacturer is written `id:<hex>` as the profile says.
    pub fn manufacturer_code(&self) -> Option<String> {
        let hex = self.manufacturer.strip_prefix("id:")?;
        let bytes = hex::decode(hex).ok()?;
        // Four bytes, padded with NUL or space: `NTC\0`, `STM `.
        let text: String = bytes
            .iter()
            .map(|b| char::from(*b))
            .filter(|c| *c != '\0')
            .collect();
        let text = text.trim_end();
        (!text.is_empty() && text.chars().all(|c| c.is_ascii_graphic())).then(|| text.to_owned())
    }
}

/// The text of a UTF8String, PrintableString or IA5String attribute value.
fn directory_string(value: &Any) -> Option<String> {
    match der::Tagged::tag(value) {
        der::Tag::Utf8String | der::Tag::PrintableString | der::Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// A TPM is known by its AK certificate: by the hardwareModuleName in it when there is one
/// (attestca's AK certificates name the TPM by its EK certificate, so that every AK of one
/// TPM names the same device), else by the certificate's issuer and serial number (the
/// subject of AK certificates is often empty or generic): `<issuer CN>/<serial hex>`.
fn ak_identity(vendor: &Vendor, ak: &EvidenceCertificate) -> DeviceIdentity {
    if let Some(serial) = hardware_serial(ak) {
        let display = match std::str::from_utf8(&serial) {
            Ok(text) if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic()) => {
                text.to_owned()
            }
            _ => hex::encode_upper(&serial),
        };
        return DeviceIdentity {
            hardware_type: vendor.hardware_type,
            serial,
            display,
        };
    }
    let tbs = ak.tbs_certificate();
    let serial = tbs.serial_number().as_bytes().to_vec();
    let issuer = match tbs.issuer().common_name() {
        Ok(Some(cn)) => cn.value().into_owned(),
        _ => tbs.issuer().to_string(),
    };
    DeviceIdentity {
        hardware_type: vendor.hardware_type,
        display: format!("{issuer}/{}", hex::encode_upper(&serial)),
        serial,
    }
}

pub mod credential;

#[cfg(test)]
mod windows_hello;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    };
    use x509_cert::request::CertReq;

    use super::*;
    use crate::attestation::vendors::VendorReader;
    use crate::attestation::{FailureKind, VendorTrustStore, VerificationBudget, bundle};

    /// The IETF sample as its authors signed it (its hint a UTF8String).
    const SAMPLE: &str = "tpm/tcgAttestTpmCertify-original.csr.pem";
    /// The same request as published later, hand-edited after signing (its hint re-tagged
    /// IA5String): the CSR signature fails, the evidence inside still verifies.
    const EDITED_SAMPLE: &str = "tpm/tcgAttestTpmCertify.csr.pem";
    /// 2024-11-01T00:00:00Z, inside the sample certificates' validity.
    const PINNED: u64 = 1_730_419_200;
    /// 2025-06-01T00:00:00Z, after it.
    const LATER: u64 = 1_748_736_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// The shared vectors directory if it holds `file`, or `None` (skipped with a notice)
    /// outside CI; in CI (or under ATTESTCA_TEST_REQUIRE_ALL) a missing file fails the test.
    pub(super) fn vectors_dir(file: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("ATTESTCA_VECTORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
            });
        if dir.join(file).is_file() {
            return Some(dir);
        }
        if std::env::var_os("CI").is_some()
            || std::env::var_os("ATTESTCA_TEST_REQUIRE_ALL").is_some()
        {
            panic!(
                "{} is missing (set ATTESTCA_VECTORS_DIR)",
                dir.join(file).display()
            );
        }
        eprintln!(
            "SKIPPED: {} not found (set ATTESTCA_VECTORS_DIR)",
            dir.join(file).display()
        );
        None
    }

    /// The IETF TPM2_Certify sample CSR, taken apart.
    struct Sample {
        csr_key: SubjectPublicKeyInfo,
        statement: Vec<u8>,
        pool: Vec<EvidenceCertificate>,
        root: EvidenceCertificate,
        ak: EvidenceCertificate,
    }

    fn self_signed(c: &EvidenceCertificate) -> bool {
        c.tbs_certificate().issuer() == c.tbs_certificate().subject()
            && crate::verify::issued_by(&c.to_der().expect("encode"), c)
    }

    fn sample() -> Option<Sample> {
        sample_from(SAMPLE)
    }

    fn sample_from(file: &str) -> Option<Sample> {
        let dir = vectors_dir(file)?;
        let pem = std::fs::read(dir.join(file)).expect("read the sample CSR");
        let (_, der) = pem_rfc7468::decode_vec(&pem).expect("PEM");
        let request = CertReq::from_der(&der).expect("CSR");
        let evidence = bundle::from_csr(&request)
            .expect("bundle decodes")
            .expect("the CSR carries evidence");
        let statement = evidence
            .statements
            .iter()
            .find(|(t, _)| *t == ID_STMT_TPM_CERTIFY)
            .map(|(_, s)| s.clone())
            .expect("a tcg-attest-tpm-certify statement");
        let pool = evidence.certificates;
        let root = pool.iter().find(|c| self_signed(c)).expect("root").clone();
        let ak = pool.iter().find(|c| !self_signed(c)).expect("AK").clone();
        Some(Sample {
            csr_key: request.info.public_key,
            statement,
            pool,
            root,
            ak,
        })
    }

    fn vendor(roots: Vec<EvidenceCertificate>, formats: Vec<AttestationFormat>) -> Vendor {
        Vendor {
            name: "tpm-test".into(),
            roots,
            formats,
            reader: VendorReader::Tpm,
            hardware_type: ObjectIdentifier::new_unwrap("2.23.133.1.2"),
            denied_serials: Default::default(),
            allow_sha1: false,
        }
    }

    fn trusting(root: &EvidenceCertificate) -> VendorTrustStore {
        VendorTrustStore::new(vec![vendor(
            vec![root.clone()],
            vec![AttestationFormat::TpmCertify],
        )])
    }

    fn verify_with(
        s: &Sample,
        statement: &[u8],
        csr_key: &SubjectPublicKeyInfo,
        vendors: &VendorTrustStore,
        time: u64,
    ) -> Result<AttestedKey, AttestationError> {
        let context = VerificationContext {
            csr_key,
            pool: &s.pool,
            vendors,
            at: at(time),
            budget: VerificationBudget::per_request(),
        };
        TpmCertifyVerifier.verify(statement, &context)
    }

    /// Verifies `statement` as the sample's, trusting the sample root, at the pinned time.
    fn verify(s: &Sample, statement: &[u8]) -> Result<AttestedKey, AttestationError> {
        verify_with(s, statement, &s.csr_key, &trusting(&s.root), PINNED)
    }

    /// The sample statement with its parts edited.
    fn edited(
        statement: &[u8],
        edit: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>, &mut Option<Vec<u8>>),
    ) -> Vec<u8> {
        let stmt = TcgAttestCertify::from_der(statement).expect("TcgAttestCertify");
        let mut attest = stmt.tpm_s_attest.as_bytes().to_vec();
        let mut signature = stmt.signature.as_bytes().to_vec();
        let mut public = stmt.tpm_t_public.map(|p| p.as_bytes().to_vec());
        edit(&mut attest, &mut signature, &mut public);
        TcgAttestCertify {
            tpm_s_attest: OctetString::new(attest).expect("octets"),
            signature: OctetString::new(signature).expect("octets"),
            tpm_t_public: public.map(|p| OctetString::new(p).expect("octets")),
        }
        .to_der()
        .expect("encode")
    }

    fn flip(bytes: &mut [u8], index: usize) {
        bytes[index] ^= 0x01;
    }

    fn assert_refused(result: Result<AttestedKey, AttestationError>, code: Reason) {
        let error = result.expect_err("must be refused");
        assert_eq!(error.code, code, "{error}");
        assert_eq!(error.kind, FailureKind::Refused, "{error}");
    }

    fn assert_malformed(result: Result<AttestedKey, AttestationError>, what: &str) {
        let error = result.expect_err(what);
        assert_eq!(error.code, Reason::AttestationMalformed, "{what}: {error}");
        assert_eq!(error.kind, FailureKind::Malformed, "{what}: {error}");
    }

    #[test]
    fn the_ietf_sample_verifies() {
        let Some(s) = sample() else { return };
        let attested = verify(&s, &s.statement).expect("the sample verifies");
        assert_eq!(attested.format, AttestationFormat::TpmCertify);
        assert_eq!(attested.vendor, "tpm-test");
        assert_eq!(
            attested.nonce.as_deref(),
            Some(&[0x00, 0xff, 0x55, 0xaa][..])
        );
        assert_eq!(attested.generated_on_device, Some(true));
        assert_eq!(attested.exportable, Some(false));
        let serial = s.ak.tbs_certificate().serial_number().as_bytes().to_vec();
        assert_eq!(attested.device.serial, serial);
        assert_eq!(
            attested.device.display,
            "test-rootCA/7D7E2873BBB82946F2CFAD55B5037983603640C4"
        );
        assert_eq!(
            attested.device.hardware_type,
            ObjectIdentifier::new_unwrap("2.23.133.1.2")
        );
    }

    #[test]
    fn the_hand_edited_sample_decodes_and_its_evidence_verifies() {
        let Some(original) = sample() else { return };
        let Some(edited) = sample_from(EDITED_SAMPLE) else {
            return;
        };
        // Only the hint's tag differs: same statement, same key, same evidence verdict (the
        // CA refuses that CSR for its signature, before evidence: tests/it/tpm_vector.rs).
        assert_eq!(edited.statement, original.statement);
        assert_eq!(edited.csr_key, original.csr_key);
        verify(&edited, &edited.statement).expect("the evidence verifies");
    }

    #[test]
    fn a_tpmt_signature_wrapping_the_sample_signature_verifies() {
        let Some(s) = sample() else { return };
        let statement = edited(&s.statement, |_, signature, _| {
            let mut wrapped = TPM_ALG_RSASSA.to_be_bytes().to_vec();
            wrapped.extend(TPM_ALG_SHA256.to_be_bytes());
            wrapped.extend(u16::try_from(signature.len()).expect("size").to_be_bytes());
            wrapped.extend(signature.iter());
            *signature = wrapped;
        });
        verify(&s, &statement).expect("TPMT_SIGNATURE form verifies");
    }

    #[test]
    fn without_a_trusted_root_the_ak_is_untrusted() {
        let Some(s) = sample() else { return };
        let empty = VendorTrustStore::new(vec![]);
        assert_refused(
            verify_with(&s, &s.statement, &s.csr_key, &empty, PINNED),
            Reason::AttestationUntrustedRoot,
        );
        // The right root, but for another format only.
        let other_format = VendorTrustStore::new(vec![vendor(
            vec![s.root.clone()],
            vec![AttestationFormat::X509Chain],
        )]);
        assert_refused(
            verify_with(&s, &s.statement, &s.csr_key, &other_format, PINNED),
            Reason::AttestationUntrustedRoot,
        );
        // A vendor whose root is another certificate (the Yubico PIV root, when present).
        let dir = vectors_dir(SAMPLE).expect("checked by sample()");
        let pem = std::fs::read(dir.join("yubico/yubico-piv-root-ca-263751.pem"));
        if let Ok(pem) = pem {
            let (_, der) = pem_rfc7468::decode_vec(&pem).expect("PEM");
            let other = EvidenceCertificate::from_der(&der).expect("certificate");
            assert_refused(
                verify_with(&s, &s.statement, &s.csr_key, &trusting(&other), PINNED),
                Reason::AttestationUntrustedRoot,
            );
        }
    }

    #[test]
    fn a_changed_tpms_attest_fails_the_signature() {
        let Some(s) = sample() else { return };
        // Byte 50 lies in clockInfo: the structure still parses, only the signature breaks.
        let statement = edited(&s.statement, |attest, _, _| flip(attest, 50));
        assert_refused(verify(&s, &statement), Reason::AttestationSignatureInvalid);
        // The last byte lies in qualifiedName.
        let statement = edited(&s.statement, |attest, _, _| {
            let last = attest.len() - 1;
            flip(attest, last)
        });
        assert_refused(verify(&s, &statement), Reason::AttestationSignatureInvalid);
    }

    #[test]
    fn a_changed_signature_fails() {
        let Some(s) = sample() else { return };
        for index in [0, 100, 255] {
            let statement = edited(&s.statement, |_, signature, _| flip(signature, index));
            assert_refused(verify(&s, &statement), Reason::AttestationSignatureInvalid);
        }
    }

    #[test]
    fn a_changed_tpmt_public_is_not_the_certified_object() {
        let Some(s) = sample() else { return };
        // The last byte lies in the RSA modulus: TPMT_PUBLIC still parses, but its hash no
        // longer matches the name the TPM certified, so the name check (which comes before
        // key equality) refuses it with tpm_name_mismatch.
        let statement = edited(&s.statement, |_, _, public| {
            let public = public.as_mut().expect("tpmTPublic");
            let last = public.len() - 1;
            flip(public, last)
        });
        assert_refused(verify(&s, &statement), Reason::AttestationTpmNameMismatch);
    }

    #[test]
    fn after_the_ak_certificate_expired_the_evidence_is_refused() {
        let Some(s) = sample() else { return };
        assert_refused(
            verify_with(&s, &s.statement, &s.csr_key, &trusting(&s.root), LATER),
            Reason::AttestationExpired,
        );
    }

    #[test]
    fn another_csr_key_is_a_key_mismatch() {
        let Some(s) = sample() else { return };
        let ak_key = s.ak.tbs_certificate().subject_public_key_info().clone();
        assert_refused(
            verify_with(&s, &s.statement, &ak_key, &trusting(&s.root), PINNED),
            Reason::AttestationKeyMismatch,
        );
    }

    #[test]
    fn truncated_statements_are_malformed() {
        let Some(s) = sample() else { return };
        let attest_len = TcgAttestCertify::from_der(&s.statement)
            .expect("statement")
            .tpm_s_attest
            .as_bytes()
            .len();
        for cut in [
            0,
            1,
            3,
            4,
            5,
            6,
            7,
            8,
            40,
            42,
            47,
            48,
            64,
            72,
            73,
            100,
            attest_len - 1,
        ] {
            let statement = edited(&s.statement, |attest, _, _| attest.truncate(cut));
            assert_malformed(verify(&s, &statement), &format!("tpmSAttest cut at {cut}"));
        }
        for cut in [0, 1, 2, 7, 8, 10, 12, 20, 21, 277] {
            let statement = edited(&s.statement, |_, _, public| {
                public.as_mut().expect("tpmTPublic").truncate(cut)
            });
            assert_malformed(verify(&s, &statement), &format!("tpmTPublic cut at {cut}"));
        }
        let statement = edited(&s.statement, |_, _, public| *public = None);
        assert_malformed(verify(&s, &statement), "tpmTPublic absent");
        for cut in [0, 1, 2, 10, s.statement.len() / 2, s.statement.len() - 1] {
            assert_malformed(
                verify(&s, &s.statement[..cut]),
                &format!("DER cut at {cut}"),
            );
        }
    }

    #[test]
    fn trailing_bytes_and_a_wrong_magic_are_malformed() {
        let Some(s) = sample() else { return };
        let statement = edited(&s.statement, |attest, _, _| attest.push(0));
        assert_malformed(verify(&s, &statement), "trailing byte in tpmSAttest");
        let statement = edited(&s.statement, |attest, _, _| flip(attest, 0));
        assert_malformed(verify(&s, &statement), "wrong magic");
        let statement = edited(&s.statement, |attest, _, _| flip(attest, 5));
        assert_malformed(verify(&s, &statement), "wrong type");
    }

    #[test]
    fn only_aik_end_entity_certificates_are_attestation_keys() {
        let Some(s) = sample() else { return };
        assert_eq!(check_ak_allowed(&s.ak), Ok(()));
        // The sample root has no extensions at all: no AIK EKU.
        let error = check_ak_allowed(&s.root).expect_err("the root is no AK");
        assert_eq!(error.code, Reason::AttestationAkNotAllowed);
    }

    #[test]
    fn attributes_must_bind_the_key_to_the_tpm() {
        let sample_attributes = 0x0006_0072;
        assert_eq!(check_attributes(sample_attributes), Ok(()));
        for (bit, name) in [
            (FIXED_TPM, "fixedTPM"),
            (FIXED_PARENT, "fixedParent"),
            (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
            (SIGN, "sign"),
        ] {
            let error = check_attributes(sample_attributes & !bit).expect_err(name);
            assert_eq!(error.code, Reason::AttestationTpmKeyAttributes);
        }
        let error = check_attributes(sample_attributes | RESTRICTED).expect_err("restricted");
        assert_eq!(error.code, Reason::AttestationTpmKeyAttributes);
    }

    /// The ECC side, without an ECC sample: a P-256 key signs in each accepted form, and the
    /// TPM's view of the key (x, y) gives the same SubjectPublicKeyInfo the key has.
    #[test]
    fn ecdsa_p256_signatures_verify_in_every_form() {
        let rng = SystemRandom::new();
        let message = b"TPMS_ATTEST stand-in";
        let fixed_key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        let point = fixed_key.public_key().as_ref().to_vec();
        let (x, y) = point[1..].split_at(32);
        let spki = TpmKey::Ecc {
            curve: TPM_ECC_NIST_P256,
            x,
            y,
        }
        .to_spki()
        .expect("spki");
        assert_eq!(key_kind(&spki), Some(PublicKeyKind::P256));
        assert_eq!(spki.subject_public_key.raw_bytes(), point.as_slice());

        let fixed = fixed_key
            .sign(&rng, message)
            .expect("sign")
            .as_ref()
            .to_vec();
        assert_eq!(
            signed_by(&spki, message, &fixed),
            Some(SignatureHash::Strong),
            "raw r‖s"
        );
        let (r, s_) = fixed.split_at(32);
        let mut tpmt = TPM_ALG_ECDSA.to_be_bytes().to_vec();
        tpmt.extend(TPM_ALG_SHA256.to_be_bytes());
        for part in [r, s_] {
            tpmt.extend(32u16.to_be_bytes());
            tpmt.extend(part);
        }
        assert_eq!(
            signed_by(&spki, message, &tpmt),
            Some(SignatureHash::Strong),
            "TPMT_SIGNATURE"
        );
        assert!(
            signed_by(&spki, b"another message", &tpmt).is_none(),
            "wrong message"
        );
        assert!(
            signed_by(&spki, message, &tpmt[..tpmt.len() - 1]).is_none(),
            "cut TPMT"
        );

        let pkcs8 = fixed_key.to_pkcs8v1().expect("pkcs8");
        let asn1_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("key");
        let der = asn1_key
            .sign(&rng, message)
            .expect("sign")
            .as_ref()
            .to_vec();
        assert_eq!(
            signed_by(&spki, message, &der),
            Some(SignatureHash::Strong),
            "DER ECDSA-Sig-Value"
        );
    }

    #[test]
    fn short_ecc_coordinates_are_padded_and_long_ones_refused() {
        assert_eq!(left_pad(&[1, 2], 4), Some(vec![0, 0, 1, 2]));
        assert_eq!(left_pad(&[0, 0, 1, 2], 3), Some(vec![0, 1, 2]));
        assert_eq!(left_pad(&[1, 2, 3, 4], 3), None);
        let long = [1u8; 33];
        let key = TpmKey::Ecc {
            curve: TPM_ECC_NIST_P256,
            x: &long,
            y: &long,
        };
        assert!(key.to_spki().is_err());
    }
}

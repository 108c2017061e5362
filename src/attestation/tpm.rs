//! TPM 2.0 TPM2_Certify evidence (tcg-attest-tpm-certify, 2.23.133.20.1).

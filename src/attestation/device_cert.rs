//! Pre-provisioned vendor device certificates: the secure element's own key, certified by its
//! vendor at manufacture, is the key in the CSR.

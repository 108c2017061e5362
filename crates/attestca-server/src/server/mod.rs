//! The processes' listeners and their plumbing: accepting connections (TLS, deadlines, HTTP/1.1
//! and HTTP/2), the layers every request passes, health and readiness, and the plain-HTTP
//! routes (health, metrics, CRLs, OCSP).
//!
//! What is served, and the background jobs beside it, are wired in [`crate::app`] (the
//! composition root) and [`crate::jobs`]; this module knows neither.

pub mod connections;
pub mod header_case;
pub mod health;
pub mod layers;
pub mod plain;
pub mod tls;

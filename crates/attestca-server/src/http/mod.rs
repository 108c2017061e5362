//! HTTP plumbing the routers share with the server that mounts them: what the connection layer
//! and the deadline layer attach to every request (the peer's address and certificate, when
//! the request must end) and the bounded body reader ([`body`]).
//!
//! A leaf under the routers (`est`, `api`) and the server, so that neither router depends on
//! the server module that mounts it.

pub mod body;

use std::net::SocketAddr;

use crate::access::PeerCertificate;

/// What the connection established, attached to every request on it.
#[derive(Clone, Debug, Default)]
pub struct ConnectionInfo {
    pub peer_addr: Option<SocketAddr>,
    pub peer_certificate: PeerCertificate,
}

/// When the request deadline (`server.request_timeout_secs`) ends a request, attached to every
/// request by the deadline layer, so that the layers below can stop first and answer themselves.
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadline(pub std::time::Instant);

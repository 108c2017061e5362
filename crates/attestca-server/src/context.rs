//! What the connection layer and the deadline layer attach to every request, for the handlers
//! below them: the peer's address and certificate, and when the request must end.
//!
//! A leaf under the routers (`est`, `api`) and the server that fills it in, so that neither
//! router depends on the server module that mounts it.

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

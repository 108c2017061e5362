//! The factory-rig side of EST: device keys and CSRs, and an EST client.

pub mod client;
pub mod device;
pub mod secure_element;

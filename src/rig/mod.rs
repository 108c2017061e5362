//! The factory-rig side of EST: device keys and CSRs, an EST client, the personalisation
//! sequence of a board, and the load tester.

pub mod client;
pub mod device;
pub mod load;
pub mod personalisation;
pub mod secure_element;

//! The factory-rig side of EST: device keys and CSRs, an EST client, the personalisation
//! sequence of a board, and the load tester.

pub mod client;
pub use attestca_sim::{device, secure_element};
pub mod load;
pub mod personalisation;

//! The edges of meshca that touch files and the terminal: the `meshca` binary's library. The
//! core crate decides everything about certificates; this crate reads, writes and reports.

pub mod describe;
pub mod error;
pub mod fs;
pub mod manifest;
pub mod mtls;
pub mod policy;
pub mod proxy;
pub mod reconcile;
pub mod store;

pub use error::Error;

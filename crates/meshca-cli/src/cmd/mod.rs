//! One module per command: its flags (`XArgs`) and `run`, which returns the exit code or a
//! [`Failure`](crate::failure::Failure). Rendering lives in [`crate::render`].

pub(crate) mod audit;
pub(crate) mod bundle;
pub(crate) mod controller;
pub(crate) mod csr;
pub(crate) mod inspect;
pub(crate) mod intermediate;
pub(crate) mod leaf;
pub(crate) mod quickstart;
pub(crate) mod reconcile;
pub(crate) mod revoke;
pub(crate) mod root_ca;
pub(crate) mod rotate;
pub(crate) mod rotate_root;
pub(crate) mod secret;
pub(crate) mod sign_csr;
pub(crate) mod signer;
pub(crate) mod status;
pub(crate) mod verify;

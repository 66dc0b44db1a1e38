//! The edges of meshca that touch the file system. The `meshca` binary and the examples use
//! these; the core crate never does I/O.

pub mod fs;

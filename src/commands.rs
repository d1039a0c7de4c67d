//! Subcommands: each parses nothing itself and does the I/O that its name says.

pub mod certs;
pub mod crds;
pub mod review;
pub mod webhook;

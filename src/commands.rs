//! Subcommands, one module each: argument parsing stays in `cli`, and each module does its command's I/O.

pub mod certs;
pub mod completion;
pub mod crds;
pub mod review;
pub mod webhook;

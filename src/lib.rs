//! vmruntime-gate: an admission webhook and operator tooling for the VM runtime's `VMRuntime`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod agent;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod controller;
pub mod ctl;
pub mod preflight;
pub mod resources;
pub mod server;
pub mod telemetry;

//! Logs (`tracing` lines in text or JSON, filtered by `RUST_LOG`) and metrics.

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat) {
    // kube's client logs every failed request at error level. The watch loop logs the same failures
    // once, with the kind they belong to, so the default filter leaves the client's lines out.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"));
    // Colours only on a terminal, so that log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

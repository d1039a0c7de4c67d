#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vmruntime_gate::cli::{Cli, Command};
use vmruntime_gate::{commands, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's client and the TLS server both use ring; an error means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Webhook(args) => {
            telemetry::init(args.log_format);
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(commands::webhook::run(args)))
        }
        Command::Review(args) => return commands::review::run(&args),
        Command::Certs(args) => commands::certs::run(&args),
        Command::Crds(args) => commands::crds::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with ": ", leaving out a cause whose text the message already
/// contains, because most errors here repeat their source in their own message.
fn error_chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vmruntime_gate::cli::{Cli, Command};
use vmruntime_gate::{agent, commands, controller, ctl, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's client and the TLS server both use ring; an error means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Webhook(args) => {
            telemetry::init(args.log_format);
            block_on(commands::webhook::run(args))
        }
        Command::Controller(args) => {
            telemetry::init(args.log_format);
            let identity = args.identity.clone().unwrap_or_else(default_identity);
            let settings =
                controller::Settings { node_timeout: args.node_timeout, identity, lease_duration: args.lease_duration };
            block_on(controller::run(settings))
        }
        Command::Agent(args) => {
            telemetry::init(args.log_format);
            block_on(agent::run(agent::Settings { node_name: args.node_name, host_root: args.host_root }))
        }
        Command::Enable(args) => return run_ctl(ctl::enable::run(&args)),
        Command::Disable(args) => return run_ctl(ctl::disable::run(&args)),
        Command::Check(args) => return run_ctl(ctl::check::run(&args)),
        Command::Status(args) => return run_ctl(ctl::status::run(&args)),
        Command::Completion(args) => {
            print!("{}", commands::completion::script(args.shell));
            Ok(())
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

fn block_on(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|runtime| runtime.block_on(future))
}

/// Returns `HOSTNAME-PID`, unique per process on a host, for replicas started without POD_NAME.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Runs an operator command and maps its error to a message and exit status.
fn run_ctl(future: impl std::future::Future<Output = ctl::CtlResult<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.code)
        }
    }
}

//! `vmruntime-gate review`: decides one AdmissionReview offline, like a policy test.

use std::io::Read;
use std::process::ExitCode;

use crate::admission::{self, Settings};
use crate::cli::ReviewArgs;
use crate::cluster::files;

/// Exit status for an allowed request.
const ALLOWED: u8 = 0;
/// Exit status for a denied request.
const DENIED: u8 = 1;
/// Exit status for input that is not a valid review or cluster state.
const INVALID_INPUT: u8 = 2;

pub fn run(args: &ReviewArgs) -> ExitCode {
    match review(args) {
        Ok(allowed) => ExitCode::from(if allowed { ALLOWED } else { DENIED }),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(INVALID_INPUT)
        }
    }
}

fn review(args: &ReviewArgs) -> Result<bool, String> {
    let view = files::load(&args.cluster_state).map_err(|error| error.to_string())?;
    let body = read_input(args)?;
    let settings = Settings { default_image_format: args.decision.default_image_format };
    let outcome = admission::review(args.endpoint, &body, &view, settings)
        .map_err(|error| format!("{}: {error}", args.file.display()))?;
    if outcome.result == admission::review::MALFORMED {
        return Err(format!("{}: {}", args.file.display(), outcome.message()));
    }
    let text = serde_json::to_string_pretty(&outcome.to_value()).map_err(|error| error.to_string())?;
    println!("{text}");
    Ok(outcome.allowed)
}

fn read_input(args: &ReviewArgs) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body).map_err(|error| format!("cannot read standard input: {error}"))?;
    } else {
        body = std::fs::read(&args.file).map_err(|error| format!("cannot read {}: {error}", args.file.display()))?;
    }
    Ok(body)
}

//! `vmruntime-gate completion SHELL`: prints a shell completion script.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

const BIN_NAME: &str = "vmruntime-gate";

/// Returns the completion script of `shell` for `vmruntime-gate`.
pub fn script(shell: Shell) -> String {
    let mut output = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN_NAME, &mut output);
    let script = String::from_utf8_lossy(&output).into_owned();
    match shell {
        Shell::Bash => fix_bash_labels(&script),
        _ => script,
    }
}

/// Makes the bash script's `case` labels match the state its dispatch loop builds.
///
/// For a binary name with a hyphen, clap_complete 4.6 spells the loop's state
/// `vmruntime__gate__subcmd__disable` but the labels `vmruntime__subcmd__gate__subcmd__disable`, so no
/// label matches and no subcommand option completes (clap-rs/clap#6421).
fn fix_bash_labels(script: &str) -> String {
    let mangled = BIN_NAME.replace('-', "__subcmd__");
    let escaped = BIN_NAME.replace('-', "__");
    script.replace(&mangled, &escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_labels_match_loop_state() {
        let script = script(Shell::Bash);
        assert!(script.contains("cmd=\"vmruntime__gate__subcmd__disable\""));
        assert!(script.contains("        vmruntime__gate__subcmd__disable)"));
        assert!(!script.contains("vmruntime__subcmd__gate"));
    }
}

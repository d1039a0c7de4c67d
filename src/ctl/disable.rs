//! `vmruntime-gate disable`: disables the runtime, following the rules for existing VMs.
//!
//! | VMs exist | `--force` | annotation | result |
//! |---|---|---|---|
//! | no | any | any | disabled |
//! | yes | yes | any | annotation set to "true" and disabled; the controller deletes the VMs and their disks |
//! | yes | no | "true" | a prompt listing the VMs: yes disables, no changes nothing; without a terminal, `--yes` is required |
//! | yes | no | "false" | nothing changed; the VMs are listed; exit status 1 |

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{CtlError, CtlResult, POLL, api_error, connect, list_vms, print_vms};
use crate::cli::DisableArgs;
use crate::resources::VMRuntime;
use crate::resources::vmruntime::{FORCE_DISABLE_ANNOTATION, VMRUNTIME_NAME};

pub async fn run(args: &DisableArgs) -> CtlResult<()> {
    let client = connect(args.cluster.kubeconfig.as_deref()).await?;
    let runtime = super::runtime(&client).await?;
    if runtime.spec.enabled != Some(true) {
        println!("The VM runtime is already disabled; nothing changed.");
        return Ok(());
    }
    let forced = runtime.annotations().get(FORCE_DISABLE_ANNOTATION).is_some_and(|value| value == "true");
    let vms = list_vms(&client).await?;
    let count = vms.len();

    if vms.is_empty() {
        patch(&client, json!({"spec": {"enabled": false}})).await?;
        println!("VM runtime disabled.");
        return Ok(());
    }

    if args.force {
        patch(
            &client,
            json!({"metadata": {"annotations": {FORCE_DISABLE_ANNOTATION: "true"}}, "spec": {"enabled": false}}),
        )
        .await?;
        println!("VM runtime disabled with force. The controller deletes these {count} VM(s) and their disks:");
        print_vms(&vms);
        return if args.wait { wait_until_deleted(&client, args.timeout).await } else { Ok(()) };
    }

    if !forced {
        println!("{count} VM(s) exist:");
        print_vms(&vms);
        return Err(CtlError::failed(format!(
            "cannot disable the VM runtime while {count} VM(s) exist; nothing changed. Delete them first, or pass --force \
             to delete them and their disks with the runtime"
        )));
    }

    // The force-disable annotation is already "true": disabling deletes the VMs, so confirm it.
    println!("The force-disable annotation is \"true\", so disabling deletes these {count} VM(s) and their disks:");
    print_vms(&vms);
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CtlError::failed(
                "standard input is not a terminal, so the deletion cannot be confirmed; pass --yes to confirm, or --force",
            ));
        }
        if !confirm(&format!("Delete {count} VM(s) and their disks and disable the VM runtime? [y/N] "))? {
            return Err(CtlError::failed("not confirmed; nothing changed"));
        }
    }
    patch(&client, json!({"spec": {"enabled": false}})).await?;
    println!("VM runtime disabled. The controller deletes the VMs and their disks.");
    if args.wait { wait_until_deleted(&client, args.timeout).await } else { Ok(()) }
}

async fn patch(client: &Client, patch: serde_json::Value) -> CtlResult<()> {
    Api::<VMRuntime>::all(client.clone())
        .patch(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|error| api_error("disable VMRuntime vmruntime", error))
}

/// Asks `question` on the terminal and returns true for "y" or "yes".
fn confirm(question: &str) -> CtlResult<bool> {
    print!("{question}");
    std::io::stdout().flush().map_err(|error| CtlError::failed(format!("cannot write the prompt: {error}")))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| CtlError::failed(format!("cannot read the reply from standard input: {error}")))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Waits until the controller has deleted every VM and reset the force-disable annotation.
async fn wait_until_deleted(client: &Client, timeout: std::time::Duration) -> CtlResult<()> {
    let deadline = Instant::now() + timeout;
    let api = Api::<VMRuntime>::all(client.clone());
    loop {
        let runtime = api.get(VMRUNTIME_NAME).await.map_err(|error| api_error("read VMRuntime vmruntime", error))?;
        let reset = runtime.annotations().get(FORCE_DISABLE_ANNOTATION).is_some_and(|value| value == "false");
        let remaining = list_vms(client).await?.len();
        if reset && remaining == 0 {
            println!("Every VM is deleted and the VM runtime is disabled.");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CtlError::failed(format!(
                "timed out after {} s with {remaining} VM(s) left; check that the vmruntime-gate controller runs \
                 (kubectl get pods -n vm-system)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

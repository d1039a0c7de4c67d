//! `vmruntime-gate enable`: sets `spec.enabled: true` and, with `--wait`, follows the preflight
//! check that enabling starts until the runtime is ready or the check failed.

use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{CtlError, CtlResult, POLL, api_error, check, connect, list_checks};
use crate::cli::EnableArgs;
use crate::resources::vmruntime::VMRUNTIME_NAME;
use crate::resources::{VMRuntime, VMRuntimeSpec};

pub async fn run(args: &EnableArgs) -> CtlResult<()> {
    let client = connect(args.cluster.kubeconfig.as_deref()).await?;
    let api = Api::<VMRuntime>::all(client.clone());
    let started = Timestamp::now();

    match api.get_opt(VMRUNTIME_NAME).await.map_err(|error| api_error("read VMRuntime vmruntime", error))? {
        Some(runtime) if runtime.spec.enabled == Some(true) => {
            return Err(CtlError::failed(
                "the VM runtime is already enabled (VMRuntime vmruntime has spec.enabled: true); nothing changed",
            ));
        }
        Some(_) => {
            let patch = json!({"spec": {"enabled": true}});
            api.patch(VMRUNTIME_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|error| api_error("enable VMRuntime vmruntime", error))?;
        }
        None => {
            let runtime = VMRuntime::new(VMRUNTIME_NAME, VMRuntimeSpec { enabled: Some(true), ..Default::default() });
            api.create(&PostParams::default(), &runtime)
                .await
                .map_err(|error| api_error("create VMRuntime vmruntime", error))?;
        }
    }
    println!("VM runtime enabled. The controller now runs a preflight check on every eligible node.");
    if !args.wait {
        println!("Follow it with: vmruntime-gate status");
        return Ok(());
    }
    wait_until_ready(&client, started, args.timeout).await
}

/// Follows the check that the controller starts after `started`, then waits for `ready`.
async fn wait_until_ready(client: &Client, started: Timestamp, timeout: std::time::Duration) -> CtlResult<()> {
    let deadline = Instant::now() + timeout;
    // Creation timestamps have a resolution of one second.
    let since = started - std::time::Duration::from_secs(1);
    let name = loop {
        let checks = list_checks(client).await?;
        let started_check = checks
            .iter()
            .rev()
            .find(|check| check.metadata.creation_timestamp.as_ref().is_some_and(|time| time.0 >= since));
        if let Some(check) = started_check {
            break check.name_any();
        }
        if Instant::now() > deadline {
            return Err(CtlError::failed(format!(
                "timed out after {} s: no preflight check started; check that the vmruntime-gate controller runs \
                 (kubectl get pods -n vm-system)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    };

    let remaining = deadline.saturating_duration_since(Instant::now());
    let completed = check::follow(client, &name, remaining).await?;
    check::report(&completed)?;

    let api = Api::<VMRuntime>::all(client.clone());
    loop {
        let runtime = api.get(VMRUNTIME_NAME).await.map_err(|error| api_error("read VMRuntime vmruntime", error))?;
        if runtime.status.as_ref().and_then(|status| status.ready) == Some(true) {
            println!("The VM runtime is ready.");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CtlError::failed(format!(
                "timed out after {} s waiting for VMRuntime vmruntime to report ready",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

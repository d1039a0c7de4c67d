//! `vmruntime-gate agent`: runs the host checks of one node for every preflight check that waits
//! for it, and writes only that node's entry with a merge patch on the status subresource, so
//! agents on many nodes never overwrite each other.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::preflight::host_checks;
use crate::resources::vmruntime::VMRUNTIME_NAME;
use crate::resources::{SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck};

/// Settings of the agent.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_name: String,
    /// Folder where the host's `/` is mounted.
    pub host_root: PathBuf,
}

/// Returns true when `check` waits for a result from `node`.
pub fn waits_for(check: &VMRuntimePreflightCheck, node: &str) -> bool {
    let Some(status) = check.status.as_ref() else {
        return false;
    };
    status.start_time.is_some()
        && status.pass.is_none()
        && status.eligible_nodes.iter().any(|eligible| eligible == node)
        && !status.checks.contains_key(node)
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    if !settings.host_root.is_dir() {
        anyhow::bail!(
            "host root {} is not a folder; mount the host's / there or pass --host-root",
            settings.host_root.display()
        );
    }
    let client = Client::try_default()
        .await
        .context("cannot connect to the API server from the kubeconfig or in-cluster settings; set KUBECONFIG")?;
    let shutdown = CancellationToken::new();
    crate::server::cancel_on_signal(shutdown.clone());

    let checks = Api::<VMRuntimePreflightCheck>::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let runtimes = Api::<VMRuntime>::all(client);
    let mut stream = watcher(checks.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    // Checks this process reported on, so that a watch event before our own write shows up is skipped.
    let mut reported: HashSet<String> = HashSet::new();
    info!(node = %settings.node_name, host_root = %settings.host_root.display(), "Agent watching preflight checks");

    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = shutdown.cancelled() => break,
        };
        let check = match event {
            Some(Ok(check)) => check,
            Some(Err(error)) => {
                warn!(%error, "Preflight check watch failed; retrying with backoff");
                continue;
            }
            None => break,
        };
        let uid = check.uid().unwrap_or_default();
        if !waits_for(&check, &settings.node_name) || reported.contains(&uid) {
            continue;
        }
        let name = check.name_any();
        match report(&checks, &runtimes, &settings, &name).await {
            Ok(passed) => {
                info!(check = %name, node = %settings.node_name, passed, "Reported node result");
                reported.insert(uid);
            }
            Err(error) => {
                warn!(error = %format!("{error:#}"), check = %name, "Reporting the node result failed; retrying on the next change")
            }
        }
    }
    info!("Agent stopped");
    Ok(())
}

async fn report(
    checks: &Api<VMRuntimePreflightCheck>,
    runtimes: &Api<VMRuntime>,
    settings: &Settings,
    check: &str,
) -> anyhow::Result<bool> {
    let use_emulation = runtimes
        .get_opt(VMRUNTIME_NAME)
        .await
        .context("cannot read VMRuntime vmruntime")?
        .is_some_and(|runtime| runtime.spec.use_emulation == Some(true));
    let result = host_checks::run(&settings.host_root, use_emulation);
    let passed = result.passed;
    let patch = json!({"status": {"checks": {settings.node_name.clone(): result}}});
    checks
        .patch_status(check, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("cannot write the result of node {} into check {check}", settings.node_name))?;
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::resources::preflight_check::{NodeResult, PreflightCheckStatus, VMRuntimePreflightCheckSpec};

    fn check(started: bool, pass: Option<bool>, eligible: &[&str], reported: &[&str]) -> VMRuntimePreflightCheck {
        let mut check = VMRuntimePreflightCheck::new("c", VMRuntimePreflightCheckSpec {});
        check.status = Some(PreflightCheckStatus {
            pass,
            start_time: started.then(|| Time("2026-12-01T00:00:00Z".parse().unwrap())),
            eligible_nodes: eligible.iter().map(|node| (*node).to_owned()).collect(),
            checks: reported.iter().map(|node| ((*node).to_owned(), NodeResult::default())).collect(),
            ..Default::default()
        });
        check
    }

    #[test]
    fn waits_for_cases() {
        let cases = [
            ("waiting", check(true, None, &["a", "b"], &["b"]), true),
            ("not started", check(false, None, &["a"], &[]), false),
            ("complete", check(true, Some(false), &["a"], &[]), false),
            ("not eligible", check(true, None, &["b"], &[]), false),
            ("already reported", check(true, None, &["a"], &["a"]), false),
        ];
        for (case, check, expected) in cases {
            assert_eq!(waits_for(&check, "a"), expected, "{case}");
        }
        let no_status = VMRuntimePreflightCheck::new("c", VMRuntimePreflightCheckSpec {});
        assert!(!waits_for(&no_status, "a"));
    }
}

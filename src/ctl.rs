//! Operator commands: `enable`, `disable`, `check` and `status`, the equivalents of
//! `bmctl enable|disable vmruntime` and `bmctl check vmruntimepfc`. They go through the API server
//! and its admission webhooks like any other client.

pub mod check;
pub mod disable;
pub mod enable;
pub mod status;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::{Client, Config, ResourceExt};

use crate::cluster::{VmKind, VmSummary};
use crate::controller::checks::sort_key;
use crate::resources::vmruntime::VMRUNTIME_NAME;
use crate::resources::{SYSTEM_NAMESPACE, VMRuntime, VMRuntimePreflightCheck};

/// A failed command: its message and exit status (1 for a refused or failed operation, 2 for bad usage).
#[derive(Debug)]
pub struct CtlError {
    pub message: String,
    pub code: u8,
}

impl CtlError {
    /// Creates the error of a refused or failed operation (exit status 1).
    pub fn failed(message: impl Into<String>) -> CtlError {
        CtlError { message: message.into(), code: 1 }
    }

    /// Creates the error of bad usage (exit status 2).
    pub fn usage(message: impl Into<String>) -> CtlError {
        CtlError { message: message.into(), code: 2 }
    }
}

pub type CtlResult<T> = Result<T, CtlError>;

/// Connects with `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`, else the in-cluster settings.
pub async fn connect(kubeconfig: Option<&Path>) -> CtlResult<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|error| {
                CtlError::usage(format!(
                    "cannot read kubeconfig {}: {error}; pass a readable --kubeconfig",
                    path.display()
                ))
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|error| CtlError::usage(format!("invalid kubeconfig {}: {error}", path.display())))?
        }
        None => Config::infer().await.map_err(|error| match std::env::var("KUBECONFIG") {
            Ok(path) => CtlError::failed(format!(
                "cannot use KUBECONFIG={path}: {error}; point KUBECONFIG at a readable kubeconfig"
            )),
            Err(_) => CtlError::failed(format!(
                "no cluster configured: {error}; pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
            )),
        })?,
    };
    let server = config.cluster_url.clone();
    let client = Client::try_from(config)
        .map_err(|error| CtlError::failed(format!("cannot create a client for {server}: {error}")))?;
    // One cheap request, so that an unreachable cluster is reported once and plainly.
    client.apiserver_version().await.map_err(|error| match error {
        kube::Error::Api(status) if status.code == 401 => CtlError::failed(format!(
            "the API server at {server} rejected the kubeconfig's credentials (401 Unauthorized); refresh the token or certificate"
        )),
        other => CtlError::failed(format!(
            "cannot reach the API server at {server}: {other}; check that the cluster runs, that the kubeconfig points at it, \
             and that its certificate-authority matches the server"
        )),
    })?;
    Ok(client)
}

/// Turns an API error into a message that names what failed, on which object, and what to do.
pub fn api_error(action: &str, error: kube::Error) -> CtlError {
    match error {
        kube::Error::Api(status) if status.message.contains("admission webhook") => {
            CtlError::failed(format!("cannot {action}: {}", status.message))
        }
        kube::Error::Api(status) if status.code == 403 => CtlError::failed(format!(
            "cannot {action}: forbidden ({}); ask a cluster administrator for RBAC permission",
            status.message
        )),
        kube::Error::Api(status) if status.code == 404 && status.details.is_none() => CtlError::failed(format!(
            "cannot {action}: the API server does not know the resource ({}); install the CRDs with kubectl apply -k manifests/",
            status.message
        )),
        other => CtlError::failed(format!("cannot {action}: {other}")),
    }
}

/// Reads VMRuntime `vmruntime`, which must exist.
pub async fn runtime(client: &Client) -> CtlResult<VMRuntime> {
    Api::<VMRuntime>::all(client.clone())
        .get_opt(VMRUNTIME_NAME)
        .await
        .map_err(|error| api_error("read VMRuntime vmruntime", error))?
        .ok_or_else(|| {
            CtlError::failed(
                "VMRuntime vmruntime not found; the VM runtime is not installed, or run `vmruntime-gate enable`",
            )
        })
}

/// Lists the VMs of every kind that are not being deleted. A kind whose CRD is missing has none.
pub async fn list_vms(client: &Client) -> CtlResult<Vec<VmSummary>> {
    let mut vms = Vec::new();
    for kind in VmKind::ALL {
        let gvk = GroupVersionKind::gvk(kind.group(), "v1", kind.kind());
        let api =
            Api::<DynamicObject>::all_with(client.clone(), &ApiResource::from_gvk_with_plural(&gvk, kind.plural()));
        match api.list(&ListParams::default()).await {
            Ok(list) => vms
                .extend(list.items.iter().map(|object| VmSummary::from_object(kind, object)).filter(|vm| !vm.deleting)),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(api_error(&format!("list {kind} objects"), error)),
        }
    }
    Ok(vms)
}

/// Lists the preflight checks in `vm-system`, oldest first.
pub async fn list_checks(client: &Client) -> CtlResult<Vec<VMRuntimePreflightCheck>> {
    let api = Api::<VMRuntimePreflightCheck>::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let mut checks = api
        .list(&ListParams::default())
        .await
        .map_err(|error| api_error("list preflight checks in vm-system", error))?
        .items;
    checks.sort_by_key(sort_key);
    Ok(checks)
}

/// Writes VMs one per line, as `namespace/name (kind, state)`.
pub fn print_vms(vms: &[VmSummary]) {
    for vm in vms {
        println!("  {vm}");
    }
}

/// Formats the time since `time` as a short age, such as 42s, 5m or 3h.
pub fn age(time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> String {
    let Some(time) = time else {
        return "unknown".to_owned();
    };
    let seconds = Timestamp::now().duration_since(time.0).as_secs().max(0);
    match seconds {
        0..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m", seconds / 60),
        7200..=172_799 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// Nodes whose result failed in a completed check, with their failed checks.
pub fn failing_nodes(check: &VMRuntimePreflightCheck) -> Vec<(String, Vec<(String, String)>)> {
    let Some(status) = check.status.as_ref() else {
        return Vec::new();
    };
    let nodes = if status.checks.is_empty() { &status.failures } else { &status.checks };
    nodes
        .iter()
        .filter(|(_, result)| !result.passed)
        .map(|(node, result)| {
            let failed = result
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| (r.check_name.clone(), r.message.clone()))
                .collect();
            (node.clone(), failed)
        })
        .collect()
}

/// Polling interval of the `--wait` options.
pub const POLL: Duration = Duration::from_millis(500);

/// Returns the name of a check for messages.
pub fn check_name(check: &VMRuntimePreflightCheck) -> String {
    check.name_any()
}

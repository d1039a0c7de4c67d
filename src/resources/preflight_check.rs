//! `VMRuntimePreflightCheck`: one run of the node preflight checks.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Request for a preflight check run. The spec has no fields: creating the object starts a run.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vm.cluster.gke.io",
    version = "v1",
    kind = "VMRuntimePreflightCheck",
    plural = "vmruntimepreflightchecks",
    shortname = "vmruntimepfc",
    namespaced,
    status = "PreflightCheckStatus",
    doc = "One run of the VM runtime preflight checks on every eligible node.",
    printcolumn = r#"{"name":"PASS","type":"boolean","jsonPath":".status.pass"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct VMRuntimePreflightCheckSpec {}

/// Progress and result of a preflight check run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreflightCheckStatus {
    /// Overall result, absent until every eligible node has reported or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    /// Time the controller started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Nodes the run waits for: every node without the `kubevm.io/VM-SkipSchedule` label when it started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eligible_nodes: Vec<String>,
    /// Time the controller recorded the overall result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Result per node name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, NodeResult>,
    /// Results of failed nodes, at most 10 of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, NodeResult>,
}

/// Results of the checks on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    /// True when no check failed on this node. Warnings do not fail a node.
    pub passed: bool,
    /// One entry per check.
    #[serde(default)]
    pub results: Vec<CheckResult>,
}

/// Result of one check on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Check name: CPU, KVM, TUN, VHOST_NET or VSOCK.
    pub check_name: String,
    /// False when the check failed. A passed result whose message starts with `warning:` is a warning.
    pub passed: bool,
    /// Path examined and, on failure, the fix.
    #[serde(default)]
    pub message: String,
}

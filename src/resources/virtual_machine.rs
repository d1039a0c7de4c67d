//! The VM runtime's own `VirtualMachine` (short name `gvm`) and its `VirtualMachineDisk`.
//!
//! These CRDs belong to the VM runtime, not to the gate. The gate ships copies only for tests
//! against an API server that has no VM runtime installed.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A VM of the VM runtime.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vm.cluster.gke.io",
    version = "v1",
    kind = "VirtualMachine",
    plural = "virtualmachines",
    shortname = "gvm",
    namespaced,
    status = "VirtualMachineStatus",
    doc = "A virtual machine of the VM runtime."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VirtualMachineSpec {
    /// Disks attached to the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskReference>,
}

/// Reference from a VM to one of its disks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct DiskReference {
    /// Name of a VirtualMachineDisk in the VM's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_disk_name: Option<String>,
}

/// Observed state of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VirtualMachineStatus {
    /// Lifecycle state, such as Running or Stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A disk of the VM runtime.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vm.cluster.gke.io",
    version = "v1",
    kind = "VirtualMachineDisk",
    plural = "virtualmachinedisks",
    namespaced,
    doc = "A disk of the VM runtime."
)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VirtualMachineDiskSpec {}

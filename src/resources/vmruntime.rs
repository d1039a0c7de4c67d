//! The cluster-scoped `VMRuntime` switch and its defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only accepted name of the singleton `VMRuntime`.
pub const VMRUNTIME_NAME: &str = "vmruntime";

/// Annotation that allows disabling the runtime while VMs exist. The misspelling "vmrumtime" is
/// the key that the VM runtime itself reads, so it must stay.
pub const FORCE_DISABLE_ANNOTATION: &str = "baremetal.cluster.gke.io/vmrumtime-force-disable";

/// Desired state of the VM runtime.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "vm.cluster.gke.io",
    version = "v1",
    kind = "VMRuntime",
    plural = "vmruntimes",
    status = "VMRuntimeStatus",
    doc = "Cluster-wide switch of the VM runtime. The only accepted object is named `vmruntime`.",
    printcolumn = r#"{"name":"ENABLED","type":"boolean","jsonPath":".spec.enabled"}"#,
    printcolumn = r#"{"name":"READY","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"PREFLIGHTCHECK","type":"boolean","jsonPath":".status.preflightCheckSummary.preflightCheckPassed"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VMRuntimeSpec {
    /// Runs the VM runtime when true. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Runs VMs under software emulation instead of hardware virtualization. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_emulation: Option<bool>,
    /// Disk image format for new VMs: raw or qcow2. Defaults to raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_image_format: Option<ImageFormat>,
}

/// Observed state of the VM runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VMRuntimeStatus {
    /// True when the runtime is enabled and the latest preflight check passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Result of the latest preflight check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight_check_summary: Option<PreflightCheckSummary>,
    /// Standard conditions: Ready, PreflightCheckPassed and Disabling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Summary of one preflight check run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreflightCheckSummary {
    /// Name of the VMRuntimePreflightCheck in `vm-system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight_check_name: Option<String>,
    /// Overall result, absent while the check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight_check_passed: Option<bool>,
    /// Result per check name, such as KVM or CPU.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_statuses: BTreeMap<String, FeatureStatus>,
}

/// Result of one check name across all nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureStatus {
    /// True when no node failed this check.
    pub passed: bool,
    /// Number of nodes on which this check failed.
    pub failed_node_num: i64,
}

/// Disk image format of new VMs. The mutating webhook writes raw when the field is absent,
/// unless it runs with another --default-image-format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Raw disk images: faster, but they take their full size on disk.
    #[default]
    Raw,
    /// QEMU copy-on-write images: smaller, but slower to write.
    Qcow2,
}

impl ImageFormat {
    /// Values accepted in `spec.vmImageFormat`.
    pub const ALLOWED: [&'static str; 2] = ["raw", "qcow2"];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(format!("invalid image format {other:?}: use one of {}", ImageFormat::ALLOWED.join(", "))),
        }
    }
}

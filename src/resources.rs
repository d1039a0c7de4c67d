//! Custom resources of the `vm.cluster.gke.io/v1` API that the gate reads and writes.
//!
//! The CRDs in `manifests/crds/` are generated from these types by `vmruntime-gate crds`.

pub mod preflight_check;
pub mod virtual_machine;
pub mod vmruntime;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSON};
use kube::CustomResourceExt;

pub use preflight_check::{VMRuntimePreflightCheck, VMRuntimePreflightCheckSpec};
pub use virtual_machine::{VirtualMachine, VirtualMachineDisk};
pub use vmruntime::{ImageFormat, VMRuntime, VMRuntimeSpec};

/// API group of the VM runtime's own resources.
pub const GROUP: &str = "vm.cluster.gke.io";

/// API group of KubeVirt.
pub const KUBEVIRT_GROUP: &str = "kubevirt.io";

/// Namespace that contains the preflight checks and the gate's own workloads.
pub const SYSTEM_NAMESPACE: &str = "vm-system";

/// Returns the CRDs that the gate owns, with `spec` optional and defaulted to `{}` by the API server,
/// so that objects created without a spec still decode.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![with_empty_spec_default(VMRuntime::crd()), with_empty_spec_default(VMRuntimePreflightCheck::crd())]
}

/// Returns the CRDs of the VM runtime's own kinds, for API servers in tests that have no VM runtime installed.
pub fn vm_runtime_crds() -> Vec<CustomResourceDefinition> {
    vec![with_empty_spec_default(VirtualMachine::crd()), with_empty_spec_default(VirtualMachineDisk::crd())]
}

fn with_empty_spec_default(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|schema| schema.open_api_v3_schema.as_mut()) else {
            continue;
        };
        if let Some(required) = schema.required.as_mut() {
            required.retain(|field| field != "spec");
        }
        if let Some(spec) = schema.properties.as_mut().and_then(|properties| properties.get_mut("spec")) {
            spec.default = Some(JSON(serde_json::json!({})));
        }
    }
    crd
}

//! Admission decisions: pure functions from an AdmissionReview request and a read-only
//! [`ClusterView`] to a response. Nothing in this module does I/O.
//!
//! `/mutate` writes the VMRuntime defaults ([`defaults`]). `/validate` checks VMRuntime changes
//! ([`runtime_guard`]) and VM creation ([`vm_gate`]). Every other request is allowed unchanged.

pub mod decision;
pub mod defaults;
pub mod review;
pub mod runtime_guard;
pub mod vm_gate;

#[cfg(test)]
mod testing;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::Value;

use crate::cluster::{ClusterView, VmKind};
use crate::resources::{GROUP, ImageFormat};

pub use decision::Decision;
pub use review::{Outcome, ReviewError, review};

/// The two webhook endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// Settings that shape decisions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Value written to a missing `spec.vmImageFormat`.
    pub default_image_format: ImageFormat,
}

/// A decoded request: kube's typed view plus the raw object, which the JSON patch is computed
/// against so that it matches exactly what the API server holds.
pub struct Request {
    pub inner: AdmissionRequest<DynamicObject>,
    pub object: Option<Value>,
}

impl Request {
    pub(crate) fn is_vmruntime(&self) -> bool {
        self.inner.kind.group == GROUP && self.inner.kind.kind == "VMRuntime"
    }

    fn vm_kind(&self) -> Option<VmKind> {
        VmKind::from_group_kind(&self.inner.kind.group, &self.inner.kind.kind)
    }

    fn on_subresource(&self) -> bool {
        self.inner.sub_resource.as_deref().is_some_and(|sub| !sub.is_empty())
    }
}

/// Decides one request on one endpoint.
pub fn decide(endpoint: Endpoint, request: &Request, view: &ClusterView, settings: Settings) -> Decision {
    if request.on_subresource() || request.inner.operation == Operation::Connect {
        return Decision::allow();
    }
    match endpoint {
        Endpoint::Mutate if request.is_vmruntime() => defaults::decide(request, settings),
        Endpoint::Validate if request.is_vmruntime() => runtime_guard::decide(request, view),
        Endpoint::Validate => match request.vm_kind() {
            Some(kind) if request.inner.operation == Operation::Create => vm_gate::decide(kind, view),
            _ => Decision::allow(),
        },
        Endpoint::Mutate => Decision::allow(),
    }
}

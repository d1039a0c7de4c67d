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

use std::borrow::Cow;

use kube::core::DynamicObject;
use kube::core::admission::Operation;
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

/// The fields of an AdmissionReview request that the decisions read. Strings borrow from the
/// request body where they can.
///
/// The objects are decoded only for VMRuntime requests: a VM creation is decided by its kind alone.
/// `/validate` reads them as Kubernetes objects. `/mutate` reads them as sent, and computes the
/// JSON patch against `raw_object` so that it matches exactly what the API server holds.
#[derive(Debug)]
pub struct Request<'a> {
    pub group: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub operation: Operation,
    pub name: Cow<'a, str>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub object: Option<DynamicObject>,
    pub old_object: Option<DynamicObject>,
    pub raw_object: Option<Value>,
    pub raw_old_object: Option<Value>,
}

impl Request<'_> {
    pub(crate) fn is_vmruntime(&self) -> bool {
        self.group == GROUP && self.kind == "VMRuntime"
    }

    fn vm_kind(&self) -> Option<VmKind> {
        VmKind::from_group_kind(&self.group, &self.kind)
    }

    fn on_subresource(&self) -> bool {
        self.sub_resource.as_deref().is_some_and(|sub| !sub.is_empty())
    }
}

/// Decides one request on one endpoint.
pub fn decide(endpoint: Endpoint, request: &Request, view: &ClusterView, settings: Settings) -> Decision {
    if request.on_subresource() || request.operation == Operation::Connect {
        return Decision::allow();
    }
    match endpoint {
        Endpoint::Mutate if request.is_vmruntime() => defaults::decide(request, settings),
        Endpoint::Validate if request.is_vmruntime() => runtime_guard::decide(request, view),
        Endpoint::Validate => match request.vm_kind() {
            Some(kind) if request.operation == Operation::Create => vm_gate::decide(kind, view),
            _ => Decision::allow(),
        },
        Endpoint::Mutate => Decision::allow(),
    }
}

//! Validating decision for VMRuntime: the singleton name, field values, and the disable guard.
//!
//! Disabling (`spec.enabled` from true to false or absent) or deleting an enabled runtime while
//! VMs exist is denied unless the force-disable annotation is `"true"`.

use std::fmt::Write as _;

use kube::core::DynamicObject;
use kube::core::admission::Operation;
use serde_json::Value;

use super::{Decision, Request};
use crate::cluster::ClusterView;
use crate::resources::ImageFormat;
use crate::resources::vmruntime::{FORCE_DISABLE_ANNOTATION, VMRUNTIME_NAME};

/// Number of VMs named in a denial; the rest are counted.
pub const MAX_LISTED_VMS: usize = 10;

pub fn decide(request: &Request, view: &ClusterView) -> Decision {
    match request.operation {
        Operation::Create => {
            let Some(object) = request.object.as_ref() else {
                return Decision::invalid("CREATE request has no object");
            };
            let name = object.metadata.name.as_deref().unwrap_or(&request.name);
            if name != VMRUNTIME_NAME {
                return Decision::invalid(format!(
                    "VMRuntime {name:?} is not allowed: a cluster has one VMRuntime and it must be named \
                     {VMRUNTIME_NAME:?}; set metadata.name: {VMRUNTIME_NAME}, or edit the existing one with \
                     kubectl edit vmruntime {VMRUNTIME_NAME}"
                ));
            }
            validate_fields(object).unwrap_or_else(Decision::allow)
        }
        Operation::Update => {
            let (Some(object), Some(old)) = (request.object.as_ref(), request.old_object.as_ref()) else {
                return Decision::invalid("UPDATE request needs both object and oldObject");
            };
            if object.metadata.deletion_timestamp.is_some() || old.metadata.deletion_timestamp.is_some() {
                return Decision::allow();
            }
            if let Some(denial) = validate_fields(object) {
                return denial;
            }
            if is_enabled(old) && !is_enabled(object) {
                return guard(view, is_forced(object), Action::Disable);
            }
            Decision::allow()
        }
        Operation::Delete => {
            if request.name != VMRUNTIME_NAME {
                return Decision::allow();
            }
            let (enabled, forced) = match request.old_object.as_ref() {
                Some(old) if old.metadata.deletion_timestamp.is_some() => return Decision::allow(),
                Some(old) => (is_enabled(old), is_forced(old)),
                // The API server sends oldObject on DELETE; without it the view is the best record.
                None => match view.runtime() {
                    Some(runtime) => (runtime.enabled, runtime.force_disable),
                    None if view.is_loaded() => return Decision::allow(),
                    None => return Decision::not_loaded(),
                },
            };
            if enabled { guard(view, forced, Action::Delete) } else { Decision::allow() }
        }
        Operation::Connect => Decision::allow(),
    }
}

#[derive(Clone, Copy)]
enum Action {
    Disable,
    Delete,
}

/// Returns a denial when a spec field or the force-disable annotation has an invalid value.
fn validate_fields(object: &DynamicObject) -> Option<Decision> {
    let spec = match object.data.get("spec") {
        None | Some(Value::Null) => return validate_annotation(object),
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            return Some(Decision::invalid(format!(
                "spec must be an object with enabled, useEmulation and vmImageFormat, got {other}"
            )));
        }
    };
    for field in ["enabled", "useEmulation"] {
        match spec.get(field) {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(other) => {
                return Some(Decision::invalid(format!(
                    "spec.{field} must be a boolean (true or false), got {other}; write it without quotes"
                )));
            }
        }
    }
    match spec.get("vmImageFormat") {
        None | Some(Value::Null) => {}
        Some(Value::String(format)) if format.parse::<ImageFormat>().is_ok() => {}
        Some(other) => {
            return Some(Decision::invalid(format!(
                "spec.vmImageFormat {other} is not supported: use one of {}",
                ImageFormat::ALLOWED.join(", ")
            )));
        }
    }
    validate_annotation(object)
}

fn validate_annotation(object: &DynamicObject) -> Option<Decision> {
    let value = object.metadata.annotations.as_ref()?.get(FORCE_DISABLE_ANNOTATION)?;
    if value == "true" || value == "false" {
        return None;
    }
    Some(Decision::invalid(format!(
        "annotation {FORCE_DISABLE_ANNOTATION} must be \"true\" or \"false\", got {value:?}"
    )))
}

fn is_enabled(object: &DynamicObject) -> bool {
    object.data.pointer("/spec/enabled") == Some(&Value::Bool(true))
}

fn is_forced(object: &DynamicObject) -> bool {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(FORCE_DISABLE_ANNOTATION))
        .is_some_and(|value| value == "true")
}

/// Allows the disable or delete when no VM exists or it is forced; denies it otherwise.
fn guard(view: &ClusterView, forced: bool, action: Action) -> Decision {
    if !view.is_loaded() {
        return Decision::not_loaded();
    }
    let vms: Vec<_> = view.live_vms().collect();
    if vms.is_empty() {
        return Decision::allow();
    }
    let count = vms.len();
    let verb = match action {
        Action::Disable => "disabling",
        Action::Delete => "deleting",
    };
    if forced {
        return Decision::allow().with_warning(format!(
            "{verb} VMRuntime {VMRUNTIME_NAME} with {FORCE_DISABLE_ANNOTATION}=true deletes {count} {} and their disks",
            plural(count, "VM", "VMs")
        ));
    }

    let running = vms.iter().filter(|vm| vm.is_running()).count();
    let mut message = format!(
        "cannot {} VMRuntime {VMRUNTIME_NAME}: {count} {} {} ({running} running): ",
        match action {
            Action::Disable => "disable",
            Action::Delete => "delete enabled",
        },
        plural(count, "VM", "VMs"),
        plural(count, "exists", "exist"),
    );
    let listed: Vec<String> = vms.iter().take(MAX_LISTED_VMS).map(ToString::to_string).collect();
    message.push_str(&listed.join(", "));
    if count > MAX_LISTED_VMS {
        let _ = write!(message, " and {} more", count - MAX_LISTED_VMS);
    }
    let force_hint = match action {
        Action::Disable => format!(
            "set annotation {FORCE_DISABLE_ANNOTATION}: \"true\" in the same update, for example \
             kubectl patch vmruntime {VMRUNTIME_NAME} --type merge -p \
             '{{\"metadata\":{{\"annotations\":{{\"{FORCE_DISABLE_ANNOTATION}\":\"true\"}}}},\"spec\":{{\"enabled\":false}}}}'"
        ),
        Action::Delete => format!(
            "set annotation {FORCE_DISABLE_ANNOTATION}: \"true\" before deleting, for example \
             kubectl annotate vmruntime {VMRUNTIME_NAME} {FORCE_DISABLE_ANNOTATION}=true --overwrite"
        ),
    };
    let _ = write!(
        message,
        ". Either delete these VMs first, or force it, which deletes the VMs and their disks: {force_hint}"
    );
    Decision::forbidden(message)
}

fn plural(count: usize, one: &'static str, many: &'static str) -> &'static str {
    if count == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testing::{mk_review, mk_runtime, mk_view, mk_vm, response, run};
    use crate::admission::Endpoint;
    use crate::cluster::{ClusterView, VmKind};

    fn two_vms() -> ClusterView {
        mk_view(
            Some(true),
            vec![
                mk_vm(VmKind::RuntimeVirtualMachine, "default", "web-0", "Running"),
                mk_vm(VmKind::KubevirtVirtualMachineInstance, "ci", "runner", "Stopped"),
            ],
        )
    }

    fn runtime_review(operation: &str, object: Value, old: Value) -> Value {
        mk_review("vm.cluster.gke.io", "VMRuntime", operation, object, old)
    }

    #[test]
    fn validate_cases() {
        let no_vms = mk_view(Some(true), vec![]);
        // (case, view, review, allowed, HTTP code, texts the message contains)
        type Case = (&'static str, ClusterView, Value, bool, u64, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "create other name",
                no_vms.clone(),
                runtime_review("CREATE", json!({"metadata": {"name": "runtime2"}, "spec": {}}), Value::Null),
                false,
                422,
                vec!["\"runtime2\"", "metadata.name: vmruntime"],
            ),
            (
                "create vmruntime",
                no_vms.clone(),
                runtime_review("CREATE", mk_runtime(json!(true), None), Value::Null),
                true,
                0,
                vec![],
            ),
            (
                "image format vmdk",
                no_vms.clone(),
                runtime_review(
                    "CREATE",
                    json!({"metadata": {"name": "vmruntime"}, "spec": {"vmImageFormat": "vmdk"}}),
                    Value::Null,
                ),
                false,
                422,
                vec!["spec.vmImageFormat", "\"vmdk\"", "raw, qcow2"],
            ),
            (
                "enabled yes",
                no_vms.clone(),
                runtime_review("CREATE", mk_runtime(json!("yes"), None), Value::Null),
                false,
                422,
                vec!["spec.enabled", "boolean", "\"yes\""],
            ),
            (
                "useEmulation number",
                no_vms.clone(),
                runtime_review(
                    "CREATE",
                    json!({"metadata": {"name": "vmruntime"}, "spec": {"useEmulation": 1}}),
                    Value::Null,
                ),
                false,
                422,
                vec!["spec.useEmulation"],
            ),
            (
                "spec not object",
                no_vms.clone(),
                runtime_review("CREATE", json!({"metadata": {"name": "vmruntime"}, "spec": [1]}), Value::Null),
                false,
                422,
                vec!["spec must be an object"],
            ),
            (
                "force annotation yes",
                no_vms.clone(),
                runtime_review("CREATE", mk_runtime(json!(true), Some("yes")), Value::Null),
                false,
                422,
                vec!["vmrumtime-force-disable", "\"yes\""],
            ),
            (
                "disable with VMs",
                two_vms(),
                runtime_review(
                    "UPDATE",
                    mk_runtime(json!(false), Some("false")),
                    mk_runtime(json!(true), Some("false")),
                ),
                false,
                403,
                vec![
                    "2 VMs exist (1 running)",
                    "default/web-0 (VirtualMachine.vm.cluster.gke.io, Running)",
                    "ci/runner (VirtualMachineInstance.kubevirt.io, Stopped)",
                    "delete these VMs",
                    "vmrumtime-force-disable: \"true\"",
                    "kubectl patch vmruntime vmruntime --type merge",
                ],
            ),
            (
                "disable forced",
                two_vms(),
                runtime_review(
                    "UPDATE",
                    mk_runtime(json!(false), Some("true")),
                    mk_runtime(json!(true), Some("false")),
                ),
                true,
                0,
                vec![],
            ),
            (
                "force removed in update",
                two_vms(),
                runtime_review("UPDATE", mk_runtime(json!(false), None), mk_runtime(json!(true), Some("true"))),
                false,
                403,
                vec!["2 VMs exist"],
            ),
            (
                "disable without VMs",
                no_vms.clone(),
                runtime_review(
                    "UPDATE",
                    mk_runtime(json!(false), Some("false")),
                    mk_runtime(json!(true), Some("false")),
                ),
                true,
                0,
                vec![],
            ),
            (
                "false to false with VMs",
                two_vms(),
                runtime_review(
                    "UPDATE",
                    mk_runtime(json!(false), Some("false")),
                    mk_runtime(json!(false), Some("false")),
                ),
                true,
                0,
                vec![],
            ),
            (
                "enabled missing means false",
                two_vms(),
                runtime_review(
                    "UPDATE",
                    json!({"metadata": {"name": "vmruntime"}, "spec": {"useEmulation": true}}),
                    mk_runtime(json!(true), Some("false")),
                ),
                false,
                403,
                vec!["2 VMs exist"],
            ),
            (
                "delete enabled with VMs",
                two_vms(),
                runtime_review("DELETE", Value::Null, mk_runtime(json!(true), Some("false"))),
                false,
                403,
                vec!["cannot delete enabled VMRuntime", "before deleting", "kubectl annotate vmruntime vmruntime"],
            ),
            (
                "delete enabled forced",
                two_vms(),
                runtime_review("DELETE", Value::Null, mk_runtime(json!(true), Some("true"))),
                true,
                0,
                vec![],
            ),
            (
                "delete disabled with VMs",
                two_vms(),
                runtime_review("DELETE", Value::Null, mk_runtime(json!(false), Some("false"))),
                true,
                0,
                vec![],
            ),
            (
                "delete without old object uses view",
                two_vms(),
                runtime_review("DELETE", Value::Null, Value::Null),
                false,
                403,
                vec!["2 VMs exist"],
            ),
            (
                "update while deleting",
                two_vms(),
                {
                    let mut object = mk_runtime(json!(false), None);
                    object["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
                    runtime_review("UPDATE", object, mk_runtime(json!(true), None))
                },
                true,
                0,
                vec![],
            ),
            (
                "disable before state loaded",
                {
                    let mut view = two_vms();
                    view.set_loaded(false);
                    view
                },
                runtime_review("UPDATE", mk_runtime(json!(false), None), mk_runtime(json!(true), None)),
                false,
                503,
                vec!["not loaded yet", "retry"],
            ),
        ];

        for (case, view, review, allowed, code, texts) in cases {
            let outcome = run(Endpoint::Validate, &review, &view);
            let response = response(&outcome);
            assert_eq!(response["uid"], "uid-1", "{case}");
            assert_eq!(response["allowed"], allowed, "{case}: {response}");
            assert_eq!(response["status"]["code"].as_u64().unwrap_or(0), code, "{case}: {response}");
            assert!(response.get("patch").is_none(), "{case}: validate never patches");
            let message = response["status"]["message"].as_str().unwrap_or_default();
            for text in texts {
                assert!(message.contains(text), "{case}: {text:?} missing from {message:?}");
            }
        }
    }

    #[test]
    fn forced_disable_warns_with_count() {
        let review =
            runtime_review("UPDATE", mk_runtime(json!(false), Some("true")), mk_runtime(json!(true), Some("false")));
        let response = response(&run(Endpoint::Validate, &review, &two_vms()));
        let warnings = response["warnings"].as_array().expect("warnings present");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].as_str().unwrap().contains("deletes 2 VMs and their disks"), "{warnings:?}");
    }

    #[test]
    fn denial_lists_ten_and_counts_rest() {
        let vms = (0..13)
            .map(|index| mk_vm(VmKind::RuntimeVirtualMachine, "ns", &format!("vm-{index:02}"), "Running"))
            .collect();
        let view = mk_view(Some(true), vms);
        let review = runtime_review("UPDATE", mk_runtime(json!(false), None), mk_runtime(json!(true), None));
        let response = response(&run(Endpoint::Validate, &review, &view));
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains("ns/vm-09"), "{message}");
        assert!(!message.contains("ns/vm-10"), "{message}");
        assert!(message.contains("and 3 more"), "{message}");
    }

    #[test]
    fn status_subresource_allowed() {
        let mut review = runtime_review("UPDATE", mk_runtime(json!(false), None), mk_runtime(json!(true), None));
        review["request"]["subResource"] = json!("status");
        let response = response(&run(Endpoint::Validate, &review, &two_vms()));
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none());
    }
}

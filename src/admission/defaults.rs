//! Mutating decision for VMRuntime CREATE and UPDATE: writes missing defaults as a JSON patch.
//!
//! The patch adds only paths that are missing or null, creates a missing `/spec` or
//! `/metadata/annotations` as one object, and never replaces a value the user set. Applying the
//! patch and sending the result again yields an empty patch.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::core::admission::Operation;
use serde_json::{Map, Value, json};

use super::{Decision, Request, Settings};
use crate::resources::vmruntime::FORCE_DISABLE_ANNOTATION;

pub const EMULATION_WARNING: &str =
    "spec.useEmulation is true: VMs run under software emulation, much slower than hardware virtualization";
pub const QCOW2_WARNING: &str =
    "spec.vmImageFormat is qcow2: images use less disk space, but disk writes are slower than raw";

pub fn decide(request: &Request, settings: Settings) -> Decision {
    let Some(object) = request.raw_object.as_ref() else {
        return Decision::allow();
    };
    if !matches!(request.operation, Operation::Create | Operation::Update) || is_deleting(object) {
        return Decision::allow();
    }

    let mut decision = Decision::allow();
    decision.patch = default_patch(object, settings);
    let old_spec = request.raw_old_object.as_ref().and_then(|old| old.get("spec"));
    decision.warnings = warnings(object.get("spec"), old_spec);
    decision
}

fn is_deleting(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|at| !at.is_null())
}

/// Computes the operations that add every missing default to `object`.
pub fn default_patch(object: &Value, settings: Settings) -> Patch {
    let spec_defaults = [
        ("enabled", json!(false)),
        ("useEmulation", json!(false)),
        ("vmImageFormat", json!(settings.default_image_format.as_str())),
    ];
    let mut operations = Vec::new();

    match object.get("spec") {
        None | Some(Value::Null) => {
            let spec: Map<String, Value> =
                spec_defaults.into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
            operations.push(add(&["spec"], Value::Object(spec)));
        }
        Some(Value::Object(spec)) => {
            for (key, value) in spec_defaults {
                if spec.get(key).is_none_or(Value::is_null) {
                    operations.push(add(&["spec", key], value));
                }
            }
        }
        // A spec that is not an object is invalid; the validating webhook rejects it.
        Some(_) => {}
    }

    let force_default = json!({ FORCE_DISABLE_ANNOTATION: "false" });
    match object.get("metadata") {
        None | Some(Value::Null) => operations.push(add(&["metadata"], json!({ "annotations": force_default }))),
        Some(Value::Object(metadata)) => match metadata.get("annotations") {
            None | Some(Value::Null) => operations.push(add(&["metadata", "annotations"], force_default)),
            Some(Value::Object(annotations)) if !annotations.contains_key(FORCE_DISABLE_ANNOTATION) => {
                operations.push(add(&["metadata", "annotations", FORCE_DISABLE_ANNOTATION], json!("false")));
            }
            Some(_) => {}
        },
        Some(_) => {}
    }
    Patch(operations)
}

/// `from_tokens` escapes `~` as `~0` and `/` as `~1`.
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(tokens.iter().copied()), value })
}

/// Warns about slow settings when the request sets them, not when an update leaves them as they were.
pub fn warnings(spec: Option<&Value>, old_spec: Option<&Value>) -> Vec<String> {
    let field = |spec: Option<&Value>, key: &str| spec.and_then(|spec| spec.get(key)).cloned();
    let newly_set = |key: &str, value: Value| {
        field(spec, key).as_ref() == Some(&value) && field(old_spec, key).as_ref() != Some(&value)
    };

    let mut warnings = Vec::new();
    if newly_set("useEmulation", json!(true)) {
        warnings.push(EMULATION_WARNING.to_owned());
    }
    if newly_set("vmImageFormat", json!("qcow2")) {
        warnings.push(QCOW2_WARNING.to_owned());
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ImageFormat;

    fn patched(object: &Value, settings: Settings) -> Value {
        let mut result = object.clone();
        json_patch::patch(&mut result, &default_patch(object, settings)).expect("patch applies");
        result
    }

    #[test]
    fn patch_cases() {
        let raw = Settings::default();
        let qcow2 = Settings { default_image_format: ImageFormat::Qcow2 };
        let force = FORCE_DISABLE_ANNOTATION;
        // (case, settings, input, expected object after the patch)
        let cases = [
            (
                "empty object",
                raw,
                json!({"metadata": {"name": "vmruntime"}}),
                json!({"metadata": {"name": "vmruntime", "annotations": {force: "false"}},
                       "spec": {"enabled": false, "useEmulation": false, "vmImageFormat": "raw"}}),
            ),
            (
                "flag default qcow2",
                qcow2,
                json!({"metadata": {"name": "vmruntime"}, "spec": {}}),
                json!({"metadata": {"name": "vmruntime", "annotations": {force: "false"}},
                       "spec": {"enabled": false, "useEmulation": false, "vmImageFormat": "qcow2"}}),
            ),
            (
                "user values kept",
                raw,
                json!({"metadata": {"annotations": {force: "true"}},
                       "spec": {"enabled": true, "useEmulation": true, "vmImageFormat": "qcow2", "extra": 1}}),
                json!({"metadata": {"annotations": {force: "true"}},
                       "spec": {"enabled": true, "useEmulation": true, "vmImageFormat": "qcow2", "extra": 1}}),
            ),
            (
                "nulls replaced",
                raw,
                json!({"metadata": {"annotations": null}, "spec": {"enabled": null}}),
                json!({"metadata": {"annotations": {force: "false"}},
                       "spec": {"enabled": false, "useEmulation": false, "vmImageFormat": "raw"}}),
            ),
            (
                "no metadata",
                raw,
                json!({"spec": null}),
                json!({"metadata": {"annotations": {force: "false"}},
                       "spec": {"enabled": false, "useEmulation": false, "vmImageFormat": "raw"}}),
            ),
            (
                "invalid spec left alone",
                raw,
                json!({"metadata": {"annotations": {}}, "spec": "on"}),
                json!({"metadata": {"annotations": {force: "false"}}, "spec": "on"}),
            ),
        ];
        for (case, settings, input, expected) in cases {
            assert_eq!(patched(&input, settings), expected, "{case}");
            assert!(default_patch(&expected, settings).0.is_empty(), "{case}: second patch not empty");
        }
    }

    #[test]
    fn patch_escapes_annotation_key() {
        let object = json!({"metadata": {"annotations": {"example.com/keep": "1"}}, "spec": {}});
        let patch = serde_json::to_value(default_patch(&object, Settings::default())).unwrap();
        let paths: Vec<&str> = patch.as_array().unwrap().iter().map(|op| op["path"].as_str().unwrap()).collect();
        assert!(
            paths.contains(&"/metadata/annotations/baremetal.cluster.gke.io~1vmrumtime-force-disable"),
            "{paths:?}"
        );
        let result = patched(&object, Settings::default());
        assert_eq!(result["metadata"]["annotations"]["example.com/keep"], "1");
    }

    #[test]
    fn patch_escapes_tilde() {
        let operation = add(&["metadata", "annotations", "a~b/c"], json!("x"));
        let PatchOperation::Add(add) = operation else { unreachable!() };
        assert_eq!(add.path.as_str(), "/metadata/annotations/a~0b~1c");
    }

    #[test]
    fn warning_cases() {
        let slow = json!({"useEmulation": true, "vmImageFormat": "qcow2"});
        let cases = [
            ("create with both", Some(slow.clone()), None, vec![EMULATION_WARNING, QCOW2_WARNING]),
            ("update unchanged", Some(slow.clone()), Some(slow.clone()), vec![]),
            (
                "update to emulation",
                Some(slow.clone()),
                Some(json!({"vmImageFormat": "qcow2"})),
                vec![EMULATION_WARNING],
            ),
            ("fast settings", Some(json!({"useEmulation": false, "vmImageFormat": "raw"})), None, vec![]),
            ("no spec", None, None, vec![]),
        ];
        for (case, spec, old, expected) in cases {
            assert_eq!(warnings(spec.as_ref(), old.as_ref()), expected, "{case}");
        }
    }
}

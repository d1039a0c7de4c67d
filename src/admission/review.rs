//! Decoding of AdmissionReview requests and encoding of the responses, in `admission.k8s.io/v1`
//! and `v1beta1`. The response uses the version of the request and always carries its uid.
//!
//! A review decodes in one pass into borrowed fields. The objects stay undecoded JSON text unless
//! the request is about the VMRuntime. Only a body that fails that pass is decoded again, step by
//! step, to name what is wrong with it.

use std::borrow::Cow;

use base64::Engine;
use kube::core::DynamicObject;
use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use thiserror::Error;

use super::{Decision, Endpoint, Request, Settings, decide};
use crate::cluster::ClusterView;

/// [`Outcome::result`] of a request whose uid is known but whose other fields do not decode.
pub const MALFORMED: &str = "malformed";

const SUPPORTED_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// A body that is not an AdmissionReview with a uid. The webhook sends HTTP 400 with this message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("request body is empty; send an AdmissionReview JSON object")]
    Empty,
    #[error("request body is not valid JSON ({0}); send an AdmissionReview JSON object")]
    NotJson(String),
    #[error("request body is not a JSON object; send an AdmissionReview JSON object")]
    NotObject,
    #[error("apiVersion {0} is not supported; send admission.k8s.io/v1 or admission.k8s.io/v1beta1")]
    UnsupportedVersion(String),
    #[error("kind {0} is not supported; send kind AdmissionReview")]
    WrongKind(String),
    #[error("AdmissionReview has no request object")]
    MissingRequest,
    #[error("AdmissionReview request.uid is missing or not a non-empty string")]
    MissingUid,
}

/// The response to one review, with the facts that a log line or a metric needs. Strings borrow
/// from the request body where they can.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The AdmissionReview version of the request, which the response repeats.
    pub api_version: &'static str,
    pub uid: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub operation: &'static str,
    pub dry_run: bool,
    pub allowed: bool,
    /// allowed, patched, denied, or malformed for a request whose fields could not be decoded.
    pub result: &'static str,
    pub decision: Decision,
}

impl Outcome<'_> {
    /// Copies the borrowed strings, so that the outcome outlives the request body.
    pub fn into_owned(self) -> Outcome<'static> {
        let owned = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        Outcome {
            uid: owned(self.uid),
            kind: owned(self.kind),
            namespace: owned(self.namespace),
            name: owned(self.name),
            ..self
        }
    }

    /// Returns the reason of a denial, or an empty string.
    pub fn message(&self) -> &str {
        &self.decision.message
    }

    /// Returns the AdmissionReview response as a JSON value.
    pub fn to_value(&self) -> Value {
        // serde_json fails only on map keys that are not strings, and the wire type has none.
        serde_json::to_value(self.wire()).unwrap_or_default()
    }

    /// Returns the AdmissionReview response as JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(256);
        // serde_json fails only on I/O errors, which a Vec does not return, and on map keys that
        // are not strings, which the wire type has none of.
        let _ = serde_json::to_writer(&mut json, &self.wire());
        json
    }

    fn wire(&self) -> WireResponseReview<'_> {
        let decision = &self.decision;
        let status = (!decision.allowed).then(|| WireStatus {
            status: "Failure",
            message: &decision.message,
            reason: decision.reason,
            code: decision.code,
        });
        // `response.patch` is a byte field, which the Kubernetes API encodes as base64.
        let patch = (!decision.patch.0.is_empty()).then(|| {
            let json = serde_json::to_vec(&decision.patch).unwrap_or_default();
            base64::engine::general_purpose::STANDARD.encode(json)
        });
        WireResponseReview {
            api_version: self.api_version,
            kind: "AdmissionReview",
            response: WireResponse {
                uid: &self.uid,
                allowed: decision.allowed,
                status,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &decision.warnings,
            },
        }
    }
}

#[derive(Serialize)]
struct WireResponseReview<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WireStatus<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct WireStatus<'a> {
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    code: u16,
}

/// The AdmissionReview as the API server sends it, with only the fields a decision reads.
#[derive(Deserialize)]
struct WireReview<'a> {
    #[serde(default, borrow, rename = "apiVersion")]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    request: Option<WireRequest<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: WireKind<'a>,
    operation: Operation,
    #[serde(default, borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    old_object: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireKind<'a> {
    #[serde(default, borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

/// Decodes `body`, decides it on `endpoint` and builds the AdmissionReview response.
pub fn review<'a>(
    endpoint: Endpoint,
    body: &'a [u8],
    view: &ClusterView,
    settings: Settings,
) -> Result<Outcome<'a>, ReviewError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ReviewError::Empty);
    }
    match serde_json::from_slice::<WireReview<'a>>(body) {
        Ok(wire) => {
            let api_version = SUPPORTED_VERSIONS.into_iter().find(|version| *version == wire.api_version);
            match (api_version, wire.request) {
                (Some(api_version), Some(request)) if wire.kind == "AdmissionReview" && !request.uid.is_empty() => {
                    Ok(decide_request(endpoint, api_version, request, view, settings))
                }
                // Each case that reaches this arm fails one of the header checks, which names it.
                _ => Err(check_header(body).err().unwrap_or(ReviewError::MissingRequest)),
            }
        }
        Err(error) => {
            let header = check_header(body)?;
            Ok(malformed(header, &error.to_string()))
        }
    }
}

fn decide_request<'a>(
    endpoint: Endpoint,
    api_version: &'static str,
    wire: WireRequest<'a>,
    view: &ClusterView,
    settings: Settings,
) -> Outcome<'a> {
    let mut request = Request {
        group: wire.kind.group,
        kind: wire.kind.kind,
        operation: wire.operation,
        name: wire.name,
        sub_resource: wire.sub_resource,
        object: None,
        old_object: None,
        raw_object: None,
        raw_old_object: None,
    };
    let decoded = if request.is_vmruntime() {
        decode_objects(endpoint, &mut request, wire.object, wire.old_object)
    } else {
        Ok(())
    };
    let decision = decoded.map(|()| decide(endpoint, &request, view, settings));
    let operation = operation_name(&request.operation);
    let header = Header {
        api_version,
        uid: wire.uid,
        kind: request.kind,
        namespace: wire.namespace.unwrap_or_default(),
        name: request.name,
        dry_run: wire.dry_run.unwrap_or(false),
    };
    match decision {
        Ok(decision) => {
            let result = decision.result_label();
            outcome(header, operation, result, decision)
        }
        Err(message) => malformed(header, &message),
    }
}

/// Decodes the object and the old object of a VMRuntime request, naming the field that fails:
/// as Kubernetes objects for `/validate`, as JSON values for `/mutate`.
fn decode_objects(
    endpoint: Endpoint,
    request: &mut Request<'_>,
    object: Option<&RawValue>,
    old_object: Option<&RawValue>,
) -> Result<(), String> {
    match endpoint {
        Endpoint::Validate => {
            // Decoding through a value gives errors without a position inside the object's text,
            // which would not match a position in the body.
            let typed = |raw: Option<&RawValue>, field: &str| {
                raw.map(|raw| {
                    let value: Value = serde_json::from_str(raw.get())?;
                    DynamicObject::deserialize(&value)
                })
                .transpose()
                .map_err(|error| format!("request.{field} is not a Kubernetes object: {error}"))
            };
            request.object = typed(object, "object")?;
            request.old_object = typed(old_object, "oldObject")?;
        }
        Endpoint::Mutate => {
            let value = |raw: Option<&RawValue>, field: &str| {
                raw.map(|raw| serde_json::from_str::<Value>(raw.get()))
                    .transpose()
                    .map_err(|error| format!("request.{field} is not JSON: {error}"))
            };
            request.raw_object = value(object, "object")?;
            request.raw_old_object = value(old_object, "oldObject")?;
        }
    }
    Ok(())
}

/// The fields that identify a review in its response and log line, known even when its request
/// does not decode.
struct Header<'a> {
    api_version: &'static str,
    uid: Cow<'a, str>,
    kind: Cow<'a, str>,
    namespace: Cow<'a, str>,
    name: Cow<'a, str>,
    dry_run: bool,
}

/// Checks the body step by step, so that each way a body can be broken gets its own error, and
/// returns the fields that identify the request when its uid is readable.
fn check_header(body: &[u8]) -> Result<Header<'static>, ReviewError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| ReviewError::NotJson(error.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(ReviewError::NotObject);
    };
    let api_version = fields.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let Some(api_version) = SUPPORTED_VERSIONS.into_iter().find(|version| *version == api_version) else {
        return Err(ReviewError::UnsupportedVersion(fields.get("apiVersion").unwrap_or(&Value::Null).to_string()));
    };
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(fields.get("kind").unwrap_or(&Value::Null).to_string()));
    }
    let Some(request @ Value::Object(_)) = fields.get("request") else {
        return Err(ReviewError::MissingRequest);
    };
    let uid = match request.get("uid") {
        Some(Value::String(uid)) if !uid.is_empty() => uid.clone(),
        _ => return Err(ReviewError::MissingUid),
    };
    let text =
        |pointer: &str| Cow::Owned(request.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned());
    Ok(Header {
        api_version,
        uid: Cow::Owned(uid),
        kind: text("/kind/kind"),
        namespace: text("/namespace"),
        name: text("/name"),
        dry_run: request.get("dryRun").and_then(Value::as_bool).unwrap_or(false),
    })
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Denies a request whose uid is known but whose other fields do not decode, with HTTP code 400.
fn malformed<'a>(header: Header<'a>, error: &str) -> Outcome<'a> {
    let decision = Decision {
        allowed: false,
        code: 400,
        reason: "BadRequest",
        message: format!("invalid AdmissionReview request: {error}"),
        patch: json_patch::Patch(Vec::new()),
        warnings: Vec::new(),
    };
    outcome(header, "UNKNOWN", MALFORMED, decision)
}

fn outcome<'a>(header: Header<'a>, operation: &'static str, result: &'static str, decision: Decision) -> Outcome<'a> {
    Outcome {
        api_version: header.api_version,
        uid: header.uid,
        kind: header.kind,
        namespace: header.namespace,
        name: header.name,
        operation,
        dry_run: header.dry_run,
        allowed: decision.allowed,
        result,
        decision,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::admission::testing::{mk_review, mk_runtime, mk_view, mk_vm, response, run};
    use crate::cluster::VmKind;

    fn decode_error(body: &[u8]) -> ReviewError {
        review(Endpoint::Validate, body, &mk_view(None, vec![]), Settings::default()).expect_err("body rejected")
    }

    #[test]
    fn undecodable_bodies_rejected() {
        let no_uid = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}});
        let cases: Vec<(&str, Vec<u8>, ReviewError)> = vec![
            ("empty", b"".to_vec(), ReviewError::Empty),
            ("whitespace", b" \n".to_vec(), ReviewError::Empty),
            ("null", b"null".to_vec(), ReviewError::NotObject),
            ("array", b"[]".to_vec(), ReviewError::NotObject),
            (
                "no request",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
                ReviewError::MissingRequest,
            ),
            (
                "request null",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}"#.to_vec(),
                ReviewError::MissingRequest,
            ),
            ("empty uid", serde_json::to_vec(&no_uid).unwrap(), ReviewError::MissingUid),
            (
                "wrong version",
                br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#.to_vec(),
                ReviewError::UnsupportedVersion("\"admission.k8s.io/v2\"".to_owned()),
            ),
            (
                "wrong kind",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#.to_vec(),
                ReviewError::WrongKind("\"Pod\"".to_owned()),
            ),
        ];
        for (case, body, expected) in cases {
            assert_eq!(decode_error(&body), expected, "{case}");
        }
        assert!(matches!(decode_error(b"{\"apiVersion\":"), ReviewError::NotJson(_)));
    }

    #[test]
    fn malformed_request_keeps_uid() {
        let mut review_json =
            mk_review("vm.cluster.gke.io", "VMRuntime", "CREATE", mk_runtime(json!(true), None), Value::Null);
        review_json["request"]["operation"] = json!("PATCH");
        let outcome = run(Endpoint::Validate, &review_json, &mk_view(None, vec![]));
        let response = response(&outcome);
        assert_eq!(outcome.result, MALFORMED);
        assert_eq!(response["uid"], "uid-1");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 400);
    }

    #[test]
    fn v1beta1_answered_in_v1beta1() {
        let view = mk_view(Some(true), vec![mk_vm(VmKind::RuntimeVirtualMachine, "default", "web-0", "Running")]);
        let mut review_json = mk_review(
            "vm.cluster.gke.io",
            "VMRuntime",
            "UPDATE",
            mk_runtime(json!(false), Some("false")),
            mk_runtime(json!(true), Some("false")),
        );
        review_json["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let value = run(Endpoint::Validate, &review_json, &view).to_value();
        assert_eq!(value["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(value["kind"], "AdmissionReview");
        assert_eq!(value["response"]["uid"], "uid-1");
        assert_eq!(value["response"]["allowed"], false);
        assert_eq!(value["response"]["status"]["code"], 403);
    }

    #[test]
    fn connect_allowed_without_patch() {
        let mut review_json =
            mk_review("", "PodExecOptions", "CONNECT", json!({"kind": "PodExecOptions"}), Value::Null);
        review_json["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
        review_json["request"]["subResource"] = json!("exec");
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let response = response(&run(endpoint, &review_json, &mk_view(None, vec![])));
            assert_eq!(response["allowed"], true);
            assert!(response.get("patch").is_none());
            assert!(response.get("patchType").is_none());
        }
    }

    #[test]
    fn mutate_patch_is_base64_json_patch() {
        let object =
            json!({"apiVersion": "vm.cluster.gke.io/v1", "kind": "VMRuntime", "metadata": {"name": "vmruntime"}});
        let review_json = mk_review("vm.cluster.gke.io", "VMRuntime", "CREATE", object.clone(), Value::Null);
        let response = response(&run(Endpoint::Mutate, &review_json, &mk_view(None, vec![])));
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut patched = object;
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched["spec"]["vmImageFormat"], "raw");
    }

    #[test]
    fn other_kinds_allowed_unchanged() {
        let review_json = mk_review("apps", "Deployment", "CREATE", json!({"metadata": {"name": "d"}}), Value::Null);
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let response = response(&run(endpoint, &review_json, &mk_view(None, vec![])));
            assert_eq!(response["allowed"], true);
            assert!(response.get("patch").is_none());
        }
    }
    #[test]
    fn malformed_vmruntime_object_named_on_validate() {
        let mut object = mk_runtime(json!(true), None);
        object["metadata"]["annotations"] = json!("not a map");
        let review_json = mk_review("vm.cluster.gke.io", "VMRuntime", "CREATE", object, Value::Null);
        let outcome = run(Endpoint::Validate, &review_json, &mk_view(None, vec![]));
        let response = response(&outcome);
        assert_eq!(outcome.result, MALFORMED);
        assert_eq!(response["uid"], "uid-1");
        assert_eq!(response["status"]["code"], 400);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains("request.object is not a Kubernetes object"), "{message}");
    }

    #[test]
    fn vm_object_not_decoded() {
        // A VM creation is decided by its kind, so fields of the object that the decision does not
        // read cannot make the review malformed.
        let review_json = mk_review(
            "vm.cluster.gke.io",
            "VirtualMachine",
            "CREATE",
            json!({"metadata": {"name": "web-0", "annotations": 7}, "spec": [1, 2]}),
            Value::Null,
        );
        let outcome = run(Endpoint::Validate, &review_json, &mk_view(None, vec![]));
        assert_eq!(outcome.result, "denied");
        assert_eq!(response(&outcome)["status"]["code"], 403);
    }

    #[test]
    fn escaped_strings_round_trip() {
        let mut review_json =
            mk_review("apps", "Deployment", "CREATE", json!({"metadata": {"name": "d"}}), Value::Null);
        review_json["request"]["uid"] = json!("uid-\"quoted\"-\u{e9}");
        review_json["request"]["name"] = json!("d\n2");
        let outcome = run(Endpoint::Validate, &review_json, &mk_view(None, vec![]));
        assert_eq!(outcome.name, "d\n2");
        assert_eq!(response(&outcome)["uid"], "uid-\"quoted\"-\u{e9}");
    }

    #[test]
    fn duplicate_request_field_is_malformed() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-2",
            "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","operation":"DELETE"}}"#;
        let outcome = review(Endpoint::Validate, body, &mk_view(None, vec![]), Settings::default()).unwrap();
        assert_eq!(outcome.result, MALFORMED);
        assert!(outcome.message().contains("duplicate field `operation`"), "{}", outcome.message());
        assert_eq!(response(&outcome)["uid"], "u-2");
    }

    #[test]
    fn allowed_response_has_no_status() {
        let review_json = mk_review("apps", "Deployment", "CREATE", json!({"metadata": {"name": "d"}}), Value::Null);
        let json = run(Endpoint::Validate, &review_json, &mk_view(None, vec![])).to_json();
        let value: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "uid-1", "allowed": true}})
        );
    }
}

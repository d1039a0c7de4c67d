//! Decoding of AdmissionReview requests and encoding of the responses, in `admission.k8s.io/v1`
//! and `v1beta1`. The response uses the version of the request and always carries its uid.

use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status, TypeMeta};
use serde_json::Value;
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

/// The response to one review, with the facts that a log line or a metric needs.
#[derive(Debug)]
pub struct Outcome {
    pub review: AdmissionReview<DynamicObject>,
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub dry_run: bool,
    pub allowed: bool,
    /// allowed, patched, denied, or malformed for a request whose fields could not be decoded.
    pub result: &'static str,
    pub message: String,
}

impl Outcome {
    /// Returns the AdmissionReview response as JSON, with `response.patch` as a base64 string, the
    /// encoding of a byte field in the Kubernetes API. kube serializes it as an array of numbers.
    pub fn to_value(&self) -> Value {
        // An AdmissionReview of strings, numbers and maps always serializes.
        let mut value = serde_json::to_value(&self.review).unwrap_or_default();
        if let Some(patch) = value.pointer_mut("/response/patch") {
            let bytes =
                self.review.response.as_ref().and_then(|response| response.patch.as_deref()).unwrap_or_default();
            *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        value
    }

    pub fn to_json(&self) -> Vec<u8> {
        let has_patch = self.review.response.as_ref().is_some_and(|response| response.patch.is_some());
        if has_patch {
            serde_json::to_vec(&self.to_value()).unwrap_or_default()
        } else {
            serde_json::to_vec(&self.review).unwrap_or_default()
        }
    }
}

/// Decodes `body`, decides it on `endpoint` and builds the AdmissionReview response.
pub fn review(endpoint: Endpoint, body: &[u8], view: &ClusterView, settings: Settings) -> Result<Outcome, ReviewError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ReviewError::Empty);
    }
    if let Some(outcome) = review_well_formed(endpoint, body, view, settings) {
        return Ok(outcome);
    }
    review_checked(endpoint, body, view, settings)
}

/// The whole review as the API server sends it, decoded in one pass.
#[derive(serde::Deserialize)]
struct WireReview {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<AdmissionRequest<DynamicObject>>,
}

/// Decides a review that decodes in one pass with a supported version and a uid, which is every
/// review the API server sends. Returns `None` for anything else, which the checked path handles.
fn review_well_formed(endpoint: Endpoint, body: &[u8], view: &ClusterView, settings: Settings) -> Option<Outcome> {
    let wire: WireReview = serde_json::from_slice(body).ok()?;
    let mut inner = wire.request?;
    if !SUPPORTED_VERSIONS.contains(&wire.api_version.as_str())
        || wire.kind != "AdmissionReview"
        || inner.uid.is_empty()
    {
        return None;
    }
    inner.types = TypeMeta { api_version: wire.api_version, kind: wire.kind };
    let summary = Summary {
        kind: inner.kind.kind.clone(),
        namespace: inner.namespace.clone().unwrap_or_default(),
        name: inner.name.clone(),
        dry_run: inner.dry_run,
    };
    let mut request = Request { inner, object: None };
    // Only the mutating decision reads the raw object, so only it pays for a second parse.
    if endpoint == Endpoint::Mutate && request.is_vmruntime() {
        let value: Value = serde_json::from_slice(body).ok()?;
        request.object = value.pointer("/request/object").filter(|object| !object.is_null()).cloned();
    }
    let decision = decide(endpoint, &request, view, settings);
    Some(respond(&request.inner, summary, decision))
}

/// Decodes step by step, so that each way a body can be broken gets its own error, and a request
/// whose uid is readable gets a response with that uid even when its other fields are not.
fn review_checked(
    endpoint: Endpoint,
    body: &[u8],
    view: &ClusterView,
    settings: Settings,
) -> Result<Outcome, ReviewError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| ReviewError::NotJson(error.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(ReviewError::NotObject);
    };

    let api_version = fields.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if !SUPPORTED_VERSIONS.contains(&api_version) {
        return Err(ReviewError::UnsupportedVersion(fields.get("apiVersion").unwrap_or(&Value::Null).to_string()));
    }
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind != "AdmissionReview" {
        return Err(ReviewError::WrongKind(fields.get("kind").unwrap_or(&Value::Null).to_string()));
    }
    let types = TypeMeta { api_version: api_version.to_owned(), kind: kind.to_owned() };

    let request = match fields.remove("request") {
        Some(request @ Value::Object(_)) => request,
        _ => return Err(ReviewError::MissingRequest),
    };
    let uid = match request.get("uid") {
        Some(Value::String(uid)) if !uid.is_empty() => uid.clone(),
        _ => return Err(ReviewError::MissingUid),
    };
    let summary = Summary::of(&request);
    let object = request.get("object").filter(|object| !object.is_null()).cloned();

    let mut inner: AdmissionRequest<DynamicObject> = match serde_json::from_value(request) {
        Ok(inner) => inner,
        Err(error) => return Ok(malformed(types, uid, summary, &error)),
    };
    inner.types = types;
    let request = Request { inner, object };
    let decision = decide(endpoint, &request, view, settings);
    Ok(respond(&request.inner, summary, decision))
}

/// Identifying fields read from the raw request, so that even a request whose fields do not decode
/// can be logged with its kind and name.
struct Summary {
    kind: String,
    namespace: String,
    name: String,
    dry_run: bool,
}

impl Summary {
    fn of(request: &Value) -> Summary {
        let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
        Summary {
            kind: text("/kind/kind"),
            namespace: text("/namespace"),
            name: text("/name"),
            dry_run: request.get("dryRun").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn respond(request: &AdmissionRequest<DynamicObject>, summary: Summary, decision: Decision) -> Outcome {
    let result = decision.result_label();
    let mut response = AdmissionResponse::from(request);
    if !decision.allowed {
        response = response.deny(&decision.message);
        response.result.status = Some(kube::core::response::StatusSummary::Failure);
        response.result.code = decision.code;
        response.result.reason = decision.reason.to_owned();
    }
    if !decision.patch.0.is_empty() {
        let operations = decision.patch.clone();
        response = match response.with_patch(operations) {
            Ok(patched) => patched,
            // Patch operations hold JSON values and pointers, which always serialize.
            Err(error) => AdmissionResponse::from(request).deny(format!("cannot encode patch: {error}")),
        };
    }
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings);
    }
    Outcome {
        review: response.into_review(),
        uid: request.uid.clone(),
        kind: summary.kind,
        namespace: summary.namespace,
        name: summary.name,
        operation: operation_name(&request.operation),
        dry_run: summary.dry_run,
        allowed: decision.allowed,
        result,
        message: decision.message,
    }
}

/// Denies a request whose uid is known but whose other fields do not decode, with HTTP code 400.
fn malformed(types: TypeMeta, uid: String, summary: Summary, error: &serde_json::Error) -> Outcome {
    let message = format!("invalid AdmissionReview request: {error}");
    let mut response = AdmissionResponse::invalid(&message);
    response.types = types;
    response.uid = uid.clone();
    response.result = Status::failure(&message, "BadRequest").with_code(400);
    Outcome {
        review: response.into_review(),
        uid,
        kind: summary.kind,
        namespace: summary.namespace,
        name: summary.name,
        operation: "UNKNOWN",
        dry_run: summary.dry_run,
        allowed: false,
        result: MALFORMED,
        message,
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
}

//! The admission webhook binary over real HTTPS, with generated certificates, TLS 1.2 and 1.3.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::*;

fn example_state() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples/cluster"))
}

const BOTH_VERSIONS: [Tls; 2] = [Tls::V12, Tls::V13];

#[tokio::test]
async fn mutate_cases() {
    let webhook = Webhook::start(example_state(), &[]);
    let url = webhook.url("/mutate");
    for version in BOTH_VERSIONS {
        let client = client(&webhook.ca_file, version);

        // 1. No spec and no annotations: /spec and /metadata/annotations added whole.
        let bare = runtime(Value::Null, Value::Null);
        let response = admit(&client, &url, &runtime_review("CREATE", bare.clone(), Value::Null)).await;
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let operations = patch_operations(&response);
        assert_eq!(operations.len(), 2, "{operations:?}");
        assert!(operations.contains(&json!({"op": "add", "path": "/spec",
            "value": {"enabled": false, "useEmulation": false, "vmImageFormat": "raw"}})));
        assert!(operations.contains(&json!({"op": "add", "path": "/metadata/annotations", "value": {FORCE: "false"}})));
        let patched = apply_patch(&response, &bare);
        let expected = json!({
            "apiVersion": "vm.cluster.gke.io/v1",
            "kind": "VMRuntime",
            "metadata": {"name": "vmruntime", "annotations": {FORCE: "false"}},
            "spec": {"enabled": false, "useEmulation": false, "vmImageFormat": "raw"}
        });
        assert_eq!(patched, expected);

        // 3. The patched object sent again: no patch.
        let response = admit(&client, &url, &runtime_review("CREATE", patched.clone(), Value::Null)).await;
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
        assert!(response.get("patchType").is_none(), "{response}");

        // 2. An existing annotation survives and the force key is escaped.
        let kept = runtime(json!({}), json!({"example.com/keep": "1"}));
        let response = admit(&client, &url, &runtime_review("CREATE", kept.clone(), Value::Null)).await;
        let paths: Vec<String> =
            patch_operations(&response).iter().map(|op| op["path"].as_str().unwrap().to_owned()).collect();
        assert!(
            paths.contains(&"/metadata/annotations/baremetal.cluster.gke.io~1vmrumtime-force-disable".to_owned()),
            "{paths:?}"
        );
        let patched = apply_patch(&response, &kept);
        assert_eq!(patched["metadata"]["annotations"]["example.com/keep"], "1");
        assert_eq!(patched["metadata"]["annotations"][FORCE], "false");

        // 4. User values are kept and two warnings returned.
        let slow = runtime(json!({"useEmulation": true, "vmImageFormat": "qcow2"}), Value::Null);
        let response = admit(&client, &url, &runtime_review("CREATE", slow.clone(), Value::Null)).await;
        let patched = apply_patch(&response, &slow);
        assert_eq!(patched["spec"]["useEmulation"], true);
        assert_eq!(patched["spec"]["vmImageFormat"], "qcow2");
        assert_eq!(patched["spec"]["enabled"], false);
        let warnings = response["warnings"].as_array().expect("warnings");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].as_str().unwrap().contains("useEmulation"));
        assert!(warnings[1].as_str().unwrap().contains("qcow2"));
    }
}

#[tokio::test]
async fn mutate_uses_default_image_format_flag() {
    let webhook = Webhook::start(example_state(), &["--default-image-format", "qcow2"]);
    let client = client(&webhook.ca_file, Tls::V13);
    let bare = runtime(Value::Null, Value::Null);
    let response = admit(&client, &webhook.url("/mutate"), &runtime_review("CREATE", bare.clone(), Value::Null)).await;
    assert_eq!(apply_patch(&response, &bare)["spec"]["vmImageFormat"], "qcow2");
}

#[tokio::test]
async fn validate_runtime_cases() {
    // The example state has VMRuntime enabled and two VMs: default/web-0 (Running) and
    // ci/build-runner (Stopped).
    let webhook = Webhook::start(example_state(), &[]);
    let url = webhook.url("/validate");
    let enabled = |force: &str| runtime(json!({"enabled": true}), json!({FORCE: force}));
    let disabled = |force: &str| runtime(json!({"enabled": false}), json!({FORCE: force}));

    for version in BOTH_VERSIONS {
        let client = client(&webhook.ca_file, version);

        // 5. Invalid field values name the field and the allowed values.
        let vmdk = runtime(json!({"vmImageFormat": "vmdk"}), Value::Null);
        let response = admit(&client, &url, &runtime_review("CREATE", vmdk, Value::Null)).await;
        assert_eq!(response["allowed"], false);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("spec.vmImageFormat") && message.contains("vmdk") && message.contains("raw, qcow2"),
            "{message}"
        );
        let yes = runtime(json!({"enabled": "yes"}), Value::Null);
        let response = admit(&client, &url, &runtime_review("CREATE", yes, Value::Null)).await;
        assert_eq!(response["allowed"], false);
        assert!(response["status"]["message"].as_str().unwrap().contains("spec.enabled"), "{response}");

        // 6. Disabling with VMs: denied, forced allowed, force dropped in the update denied.
        let response = admit(&client, &url, &runtime_review("UPDATE", disabled("false"), enabled("false"))).await;
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        let message = response["status"]["message"].as_str().unwrap();
        for text in [
            "default/web-0 (VirtualMachine.vm.cluster.gke.io, Running)",
            "ci/build-runner (VirtualMachine.kubevirt.io, Stopped)",
            "delete these VMs",
            "kubectl patch vmruntime vmruntime --type merge",
            FORCE,
        ] {
            assert!(message.contains(text), "{text:?} missing from {message}");
        }
        let response = admit(&client, &url, &runtime_review("UPDATE", disabled("true"), enabled("false"))).await;
        assert_eq!(response["allowed"], true);
        assert!(response["warnings"][0].as_str().unwrap().contains("deletes 2 VMs"), "{response}");
        let no_annotation = runtime(json!({"enabled": false}), Value::Null);
        let response = admit(&client, &url, &runtime_review("UPDATE", no_annotation, enabled("true"))).await;
        assert_eq!(response["allowed"], false);

        // 7. false to false with VMs: allowed. enabled missing: treated as false.
        let response = admit(&client, &url, &runtime_review("UPDATE", disabled("false"), disabled("false"))).await;
        assert_eq!(response["allowed"], true);
        let missing = runtime(json!({"useEmulation": false}), json!({FORCE: "false"}));
        let response = admit(&client, &url, &runtime_review("UPDATE", missing, enabled("false"))).await;
        assert_eq!(response["allowed"], false);

        // 8. DELETE of an enabled VMRuntime with object null: denied unless forced.
        let response = admit(&client, &url, &runtime_review("DELETE", Value::Null, enabled("false"))).await;
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        let response = admit(&client, &url, &runtime_review("DELETE", Value::Null, enabled("true"))).await;
        assert_eq!(response["allowed"], true);

        // 9. Status subresource: allowed, no patch.
        let mut status_update = runtime_review("UPDATE", disabled("false"), enabled("false"));
        status_update["request"]["subResource"] = json!("status");
        for endpoint in ["/validate", "/mutate"] {
            let response = admit(&client, &webhook.url(endpoint), &status_update).await;
            assert_eq!(response["allowed"], true, "{endpoint}");
            assert!(response.get("patch").is_none(), "{endpoint}");
        }

        // 14. Case 6 as v1beta1: the response is v1beta1 with the same decision.
        let mut beta = runtime_review("UPDATE", disabled("false"), enabled("false"));
        beta["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let response = admit(&client, &url, &beta).await;
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
    }
}

#[tokio::test]
async fn disable_without_vms_allowed() {
    let folder = state(&[RUNTIME_ENABLED]);
    let webhook = Webhook::start(folder.path(), &[]);
    let client = client(&webhook.ca_file, Tls::V12);
    let object = runtime(json!({"enabled": false}), json!({FORCE: "false"}));
    let old = runtime(json!({"enabled": true}), json!({FORCE: "false"}));
    let response = admit(&client, &webhook.url("/validate"), &runtime_review("UPDATE", object, old)).await;
    assert_eq!(response["allowed"], true);
}

/// VM creation reviews of the three guarded kinds.
fn vm_reviews() -> Vec<Value> {
    [
        ("vm.cluster.gke.io", "VirtualMachine"),
        ("kubevirt.io", "VirtualMachine"),
        ("kubevirt.io", "VirtualMachineInstance"),
    ]
    .into_iter()
    .map(|(group, kind)| {
        let object = json!({"apiVersion": format!("{group}/v1"), "kind": kind,
                "metadata": {"name": "vm-a", "namespace": "default"}, "spec": {}});
        review(group, kind, "CREATE", object, Value::Null)
    })
    .collect()
}

#[tokio::test]
async fn vm_gate_cases() {
    const OLD: &str = "2026-12-01T00:00:00Z";
    const NEW: &str = "2026-12-02T00:00:00Z";
    // (case, cluster state documents, allowed, texts the message contains)
    let cases: Vec<(&str, Vec<String>, bool, Vec<&str>)> = vec![
        (
            "disabled",
            vec![RUNTIME_DISABLED.to_owned(), check("a", NEW, Some(true), None)],
            false,
            vec!["disabled", "kubectl patch vmruntime vmruntime"],
        ),
        ("no check", vec![RUNTIME_ENABLED.to_owned()], false, vec!["no preflight check has run"]),
        (
            "running",
            vec![RUNTIME_ENABLED.to_owned(), check("a", OLD, Some(true), None), check("b", NEW, None, None)],
            false,
            vec!["b is still running", "retry"],
        ),
        (
            "latest failed",
            vec![
                RUNTIME_ENABLED.to_owned(),
                check("a", OLD, Some(true), None),
                check("b", NEW, Some(false), Some("worker-1")),
            ],
            false,
            vec!["b failed", "worker-1 (KVM: /dev/kvm not found)"],
        ),
        (
            "latest passed",
            vec![
                RUNTIME_ENABLED.to_owned(),
                check("a", OLD, Some(false), Some("worker-1")),
                check("b", NEW, Some(true), None),
            ],
            true,
            vec![],
        ),
        (
            "tie greater name",
            vec![
                RUNTIME_ENABLED.to_owned(),
                check("b", NEW, Some(true), None),
                check("a", NEW, Some(false), Some("worker-1")),
            ],
            true,
            vec![],
        ),
        (
            "tie greater name failed",
            vec![
                RUNTIME_ENABLED.to_owned(),
                check("a", NEW, Some(true), None),
                check("b", NEW, Some(false), Some("worker-9")),
            ],
            false,
            vec!["worker-9"],
        ),
    ];

    for (case, documents, allowed, texts) in cases {
        let documents: Vec<&str> = documents.iter().map(String::as_str).collect();
        let folder = state(&documents);
        let webhook = Webhook::start(folder.path(), &[]);
        let client = client(&webhook.ca_file, Tls::V13);
        for review in vm_reviews() {
            let kind = review["request"]["kind"].clone();
            let response = admit(&client, &webhook.url("/validate"), &review).await;
            assert_eq!(response["allowed"], allowed, "{case} {kind}: {response}");
            let message = response["status"]["message"].as_str().unwrap_or_default();
            for text in &texts {
                assert!(message.contains(text), "{case} {kind}: {text:?} missing from {message}");
            }
            if !allowed {
                assert_eq!(response["status"]["code"], 403, "{case}");
            }

            // 11. Dry run: the same response.
            let mut dry_run = review.clone();
            dry_run["request"]["dryRun"] = json!(true);
            dry_run["request"]["uid"] = review["request"]["uid"].clone();
            let dry_response = admit(&client, &webhook.url("/validate"), &dry_run).await;
            assert_eq!(dry_response, response, "{case} {kind}: dry run differs");
        }
    }
}

#[tokio::test]
async fn odd_requests_answered() {
    let webhook = Webhook::start(example_state(), &[]);
    let client = client(&webhook.ca_file, Tls::V12);
    let url = webhook.url("/validate");

    // 11. A VM with spec null: a well-formed response.
    let mut null_spec = vm_reviews().remove(0);
    null_spec["request"]["object"]["spec"] = Value::Null;
    let response = admit(&client, &url, &null_spec).await;
    assert_eq!(response["allowed"], true);

    // 12. CONNECT of pods/exec: allowed.
    let mut connect =
        review("", "PodExecOptions", "CONNECT", json!({"kind": "PodExecOptions", "apiVersion": "v1"}), Value::Null);
    connect["request"]["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
    connect["request"]["subResource"] = json!("exec");
    connect["request"]["name"] = json!("web");
    connect["request"]["namespace"] = json!("default");
    let response = admit(&client, &url, &connect).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn broken_requests_rejected() {
    let webhook = Webhook::start(example_state(), &[]);
    let client = client(&webhook.ca_file, Tls::V13);
    let url = webhook.url("/validate");
    let json = "application/json";

    // 13. (case, body, Content-Type, HTTP status, text in the reason)
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        ("empty body", Vec::new(), json, 400, "empty"),
        ("null", b"null".to_vec(), json, 400, "not a JSON object"),
        (
            "no request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            json,
            400,
            "no request",
        ),
        ("not JSON", b"{oops".to_vec(), json, 400, "not valid JSON"),
        ("9 MiB", vec![b' '; 9 * 1024 * 1024], json, 413, "--max-body-bytes"),
        ("text/plain", b"{}".to_vec(), "text/plain", 415, "application/json"),
    ];
    for (case, body, content_type, status, text) in cases {
        let (got_status, reason) = post(&client, &url, body, content_type).await;
        assert_eq!(got_status, status, "{case}: {reason}");
        assert!(reason.contains(text), "{case}: {text:?} missing from {reason:?}");
        assert_eq!(reason.trim_end().lines().count(), 1, "{case}: reason is one line");
    }

    // The server still answers after the broken requests.
    let response = admit(&client, &url, &vm_reviews().remove(0)).await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn http2_and_http1_both_served() {
    let webhook = Webhook::start(example_state(), &[]);
    let h2 = client(&webhook.ca_file, Tls::V13);
    let response = h2
        .post(webhook.url("/validate"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&vm_reviews()[0]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);

    let http1 = client_with_alpn(&webhook.ca_file, Tls::V12, &[b"http/1.1"]);
    let response = http1
        .post(webhook.url("/validate"))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&vm_reviews()[0]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn health_and_readiness() {
    let webhook = Webhook::start(example_state(), &[]);
    for path in ["/healthz", "/readyz"] {
        let plain = client(&webhook.ca_file, Tls::V13);
        let response = plain.get(format!("http://{}{path}", webhook.health)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn decision_logged_without_object() {
    let webhook = Webhook::start(example_state(), &[]);
    let client = client(&webhook.ca_file, Tls::V13);
    let review = vm_reviews().remove(0);
    admit(&client, &webhook.url("/validate"), &review).await;
    let uid = review["request"]["uid"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let line = loop {
        let found = webhook.logs.lock().unwrap().iter().find(|line| line.contains(&uid)).cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no log line for {uid}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["message"], "Admission decision");
    assert_eq!(event["allowed"], true);
    assert_eq!(event["kind"], "VirtualMachine");
    assert_eq!(event["operation"], "CREATE");
    assert_eq!(event["name"], "vm-a");
    assert!(event.get("latency_us").is_some());
    assert!(!line.contains("virtualMachineDiskName"), "log contains the object: {line}");
    assert!(!line.contains("\"spec\""), "log contains the object: {line}");
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut webhook = Webhook::start(example_state(), &[]);
    let status = std::process::Command::new("kill").args(["-TERM", &webhook.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = webhook.wait(std::time::Duration::from_secs(10)).expect("webhook exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
}

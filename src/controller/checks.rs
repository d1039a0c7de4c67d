//! Reconciler of VMRuntimePreflightChecks: starts a check, waits for the eligible nodes, records
//! the result, updates the VMRuntime status and keeps the newest checks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use thiserror::Error;
use tracing::{info, warn};

use super::Context;
use crate::preflight::{self, aggregate};
use crate::resources::{SYSTEM_NAMESPACE, VMRuntimePreflightCheck};

/// Number of checks kept; older ones are deleted.
pub const KEEP_CHECKS: usize = 10;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("cannot update preflight check {name}: {source}")]
    Update { name: String, source: kube::Error },
}

/// Creates the reconciler; its store of checks is shared with the VMRuntime loop.
pub fn controller(context: &Context) -> Controller<VMRuntimePreflightCheck> {
    let api = Api::<VMRuntimePreflightCheck>::namespaced(context.client.clone(), SYSTEM_NAMESPACE);
    Controller::new(api, watcher::Config::default())
}

pub async fn run(context: Arc<Context>, controller: Controller<VMRuntimePreflightCheck>) {
    let store = controller.store();
    let reconcile_context = (context, store);
    controller
        .run(
            |check, shared| async move { reconcile(check, &shared.0, &shared.1).await },
            |_, error, _| {
                warn!(%error, "Reconciling a preflight check failed; retrying in 5 s");
                Action::requeue(Duration::from_secs(5))
            },
            Arc::new(reconcile_context),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "Preflight check reconciler error");
            }
        })
        .await;
}

pub type CheckStore = kube::runtime::reflector::Store<VMRuntimePreflightCheck>;

async fn reconcile(
    check: Arc<VMRuntimePreflightCheck>,
    context: &Context,
    store: &CheckStore,
) -> Result<Action, ReconcileError> {
    let name = check.name_any();
    let status = check.status.clone().unwrap_or_default();
    let api = Api::<VMRuntimePreflightCheck>::namespaced(context.client.clone(), SYSTEM_NAMESPACE);

    if status.pass.is_some() {
        super::runtime::sync_status(context, store).await;
        collect_garbage(&api, store).await;
        return Ok(Action::await_change());
    }

    if status.start_time.is_none() {
        let mut eligible: Vec<String> = context
            .nodes
            .state()
            .iter()
            .filter(|node| preflight::is_eligible(node.metadata.labels.as_ref()))
            .map(|node| node.name_any())
            .collect();
        eligible.sort();
        let patch = json!({"status": {"startTime": Time(Timestamp::now()), "eligibleNodes": eligible}});
        patch_status(&api, &name, &patch).await?;
        info!(check = %name, nodes = eligible.len(), "Started preflight check");
        publish(
            context,
            &check,
            EventType::Normal,
            "Started",
            format!("waiting for {} eligible node(s): {}", eligible.len(), eligible.join(", ")),
        )
        .await;
        super::runtime::sync_status(context, store).await;
        return Ok(Action::requeue(context.settings.node_timeout));
    }

    match aggregate::evaluate(&status, Timestamp::now(), context.settings.node_timeout) {
        aggregate::Evaluation::Waiting { reported, eligible, remaining } => {
            info!(check = %name, reported, eligible, "Waiting for node results");
            Ok(Action::requeue(remaining + Duration::from_millis(100)))
        }
        aggregate::Evaluation::Complete(completion) => {
            let patch = json!({"status": {
                "pass": completion.pass,
                "completionTime": Time(Timestamp::now()),
                "checks": completion.checks,
                "failures": completion.failures,
            }});
            patch_status(&api, &name, &patch).await?;
            if completion.pass {
                info!(check = %name, "Preflight check passed");
                publish(context, &check, EventType::Normal, "Passed", "every eligible node passed".to_owned()).await;
            } else {
                let failed: Vec<&str> = completion.failures.keys().map(String::as_str).collect();
                info!(check = %name, failed_nodes = ?failed, "Preflight check failed");
                let note = if failed.is_empty() {
                    "no eligible node: every node has the kubevm.io/VM-SkipSchedule label".to_owned()
                } else {
                    format!("failed on node(s): {}", failed.join(", "))
                };
                publish(context, &check, EventType::Warning, "Failed", note).await;
            }
            Ok(Action::await_change())
        }
    }
}

async fn patch_status(
    api: &Api<VMRuntimePreflightCheck>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), ReconcileError> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|source| ReconcileError::Update { name: name.to_owned(), source })
}

async fn publish(context: &Context, check: &VMRuntimePreflightCheck, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "PreflightCheck".to_owned(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &check.object_ref(&())).await {
        warn!(%error, check = %check.name_any(), reason, "Publishing an event failed");
    }
}

/// Deletes all but the newest [`KEEP_CHECKS`] checks.
async fn collect_garbage(api: &Api<VMRuntimePreflightCheck>, store: &CheckStore) {
    let mut checks: Vec<Arc<VMRuntimePreflightCheck>> =
        store.state().into_iter().filter(|check| check.metadata.deletion_timestamp.is_none()).collect();
    if checks.len() <= KEEP_CHECKS {
        return;
    }
    checks.sort_by_key(|check| sort_key(check));
    let excess = checks.len() - KEEP_CHECKS;
    for check in &checks[..excess] {
        let name = check.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => info!(check = %name, "Deleted an old preflight check"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => warn!(%error, check = %name, "Deleting an old preflight check failed"),
        }
    }
}

/// Orders checks from oldest to newest: creation time, then name.
pub fn sort_key(check: &VMRuntimePreflightCheck) -> (Option<Time>, String) {
    (check.metadata.creation_timestamp.clone(), check.name_any())
}

/// Returns the newest check in `store`, which decides whether VMs may be created.
pub fn latest(store: &CheckStore) -> Option<Arc<VMRuntimePreflightCheck>> {
    store
        .state()
        .into_iter()
        .filter(|check| check.metadata.deletion_timestamp.is_none())
        .max_by_key(|check| sort_key(check))
}

#[cfg(test)]
mod tests {
    //! Each reconcile step against kube's client on a scripted mock API: every request is checked
    //! and given a response in order, and a request the step should not make fails the test.

    use std::collections::BTreeMap;

    use http::{Method, Request, Response};
    use k8s_openapi::api::core::v1::Node;
    use kube::Client;
    use kube::client::Body;
    use kube::runtime::events::{Recorder, Reporter};
    use kube::runtime::reflector;
    use serde_json::Value;
    use tower_test::mock::{self, Handle, SendResponse};

    use super::*;
    use crate::controller::Settings;
    use crate::resources::preflight_check::{
        CheckResult, NodeResult, PreflightCheckStatus, VMRuntimePreflightCheckSpec,
    };

    type MockHandle = Handle<Request<Body>, Response<Body>>;

    const CHECK_PATH: &str = "/apis/vm.cluster.gke.io/v1/namespaces/vm-system/vmruntimepreflightchecks/c1";

    fn mk_node(name: &str, skip: bool) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.to_owned());
        if skip {
            node.metadata.labels = Some(BTreeMap::from([(preflight::SKIP_LABEL.to_owned(), String::new())]));
        }
        node
    }

    fn mk_check(status: Option<PreflightCheckStatus>) -> VMRuntimePreflightCheck {
        let mut check = VMRuntimePreflightCheck::new("c1", VMRuntimePreflightCheckSpec {});
        check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
        check.metadata.uid = Some("uid-c1".to_owned());
        check.status = status;
        check
    }

    fn context(client: Client, nodes: Vec<Node>) -> Context {
        let (reader, mut writer) = reflector::store();
        for node in nodes {
            writer.apply_watcher_event(&watcher::Event::Apply(node));
        }
        let reporter = Reporter { controller: "test".to_owned(), instance: None };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            nodes: reader,
            settings: Settings {
                node_timeout: Duration::from_secs(120),
                identity: "test".to_owned(),
                lease_duration: Duration::from_secs(15),
            },
            last_check_created: std::sync::Mutex::new(None),
        }
    }

    fn check_store(checks: Vec<VMRuntimePreflightCheck>) -> CheckStore {
        let (reader, mut writer) = reflector::store();
        for check in checks {
            writer.apply_watcher_event(&watcher::Event::Apply(check));
        }
        reader
    }

    /// Waits for the next request, checks its method and path, and returns its JSON body.
    async fn expect(handle: &mut MockHandle, method: Method, path: &str) -> (Value, SendResponse<Response<Body>>) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), method, "method of {}", request.uri());
        assert_eq!(request.uri().path(), path);
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (body, send)
    }

    fn json_response(status: u16, body: &Value) -> Response<Body> {
        Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
    }

    fn not_found() -> Response<Body> {
        json_response(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        )
    }

    /// Responds to an events.k8s.io Event creation by echoing it, and returns its reason and type.
    async fn expect_event(handle: &mut MockHandle) -> (String, String) {
        let (body, send) = expect(handle, Method::POST, "/apis/events.k8s.io/v1/namespaces/vm-system/events").await;
        send.send_response(json_response(201, &body));
        (body["reason"].as_str().unwrap().to_owned(), body["type"].as_str().unwrap().to_owned())
    }

    fn node_result(passed: bool) -> NodeResult {
        NodeResult {
            passed,
            results: vec![CheckResult { check_name: "KVM".to_owned(), passed, message: String::new() }],
        }
    }

    #[tokio::test]
    async fn start_records_eligible_nodes() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let context = context(
            Client::new(service, "default"),
            vec![mk_node("b", false), mk_node("a", false), mk_node("skipped", true)],
        );
        let check = Arc::new(mk_check(None));
        let store = check_store(vec![mk_check(None)]);

        let scenario = tokio::spawn(async move {
            let (body, send) = expect(&mut handle, Method::PATCH, &format!("{CHECK_PATH}/status")).await;
            assert_eq!(body["status"]["eligibleNodes"], json!(["a", "b"]));
            assert!(body["status"]["startTime"].is_string(), "{body}");
            assert!(body["status"].get("pass").is_none(), "{body}");
            send.send_response(json_response(200, &serde_json::to_value(mk_check(None)).unwrap()));
            assert_eq!(expect_event(&mut handle).await, ("Started".to_owned(), "Normal".to_owned()));
            let (_, send) = expect(&mut handle, Method::GET, "/apis/vm.cluster.gke.io/v1/vmruntimes/vmruntime").await;
            send.send_response(not_found());
        });
        let action = reconcile(check, &context, &store).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(120)));
        scenario.await.unwrap();
    }

    #[tokio::test]
    async fn complete_writes_result_and_failures() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let context = context(Client::new(service, "default"), vec![]);
        let status = PreflightCheckStatus {
            start_time: Some(Time(Timestamp::now())),
            eligible_nodes: vec!["a".to_owned(), "b".to_owned()],
            checks: BTreeMap::from([("a".to_owned(), node_result(true)), ("b".to_owned(), node_result(false))]),
            ..Default::default()
        };
        let check = Arc::new(mk_check(Some(status)));
        let store = check_store(vec![]);

        let scenario = tokio::spawn(async move {
            let (body, send) = expect(&mut handle, Method::PATCH, &format!("{CHECK_PATH}/status")).await;
            assert_eq!(body["status"]["pass"], false);
            assert!(body["status"]["completionTime"].is_string());
            assert_eq!(body["status"]["failures"].as_object().unwrap().keys().collect::<Vec<_>>(), ["b"]);
            assert_eq!(body["status"]["checks"]["a"]["passed"], true);
            send.send_response(json_response(200, &serde_json::to_value(mk_check(None)).unwrap()));
            assert_eq!(expect_event(&mut handle).await, ("Failed".to_owned(), "Warning".to_owned()));
        });
        let action = reconcile(check, &context, &store).await.unwrap();
        assert_eq!(action, Action::await_change());
        scenario.await.unwrap();
    }

    #[tokio::test]
    async fn waiting_check_requeues_without_writes() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let context = context(Client::new(service, "default"), vec![]);
        let status = PreflightCheckStatus {
            start_time: Some(Time(Timestamp::now())),
            eligible_nodes: vec!["a".to_owned(), "b".to_owned()],
            checks: BTreeMap::from([("a".to_owned(), node_result(true))]),
            ..Default::default()
        };
        let action = reconcile(Arc::new(mk_check(Some(status))), &context, &check_store(vec![])).await.unwrap();
        assert_ne!(action, Action::await_change());
        // No request was made: the mock has none waiting.
        assert!(tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await.is_err());
    }

    #[tokio::test]
    async fn completed_check_updates_runtime_status() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let context = context(Client::new(service, "default"), vec![]);
        let status = PreflightCheckStatus {
            pass: Some(true),
            start_time: Some(Time(Timestamp::now())),
            eligible_nodes: vec!["a".to_owned()],
            checks: BTreeMap::from([("a".to_owned(), node_result(true))]),
            ..Default::default()
        };
        let check = mk_check(Some(status));
        let store = check_store(vec![check.clone()]);

        let scenario = tokio::spawn(async move {
            let runtime = json!({
                "apiVersion": "vm.cluster.gke.io/v1", "kind": "VMRuntime",
                "metadata": {"name": "vmruntime", "generation": 2}, "spec": {"enabled": true}
            });
            let (_, send) = expect(&mut handle, Method::GET, "/apis/vm.cluster.gke.io/v1/vmruntimes/vmruntime").await;
            send.send_response(json_response(200, &runtime));
            let (body, send) =
                expect(&mut handle, Method::PATCH, "/apis/vm.cluster.gke.io/v1/vmruntimes/vmruntime/status").await;
            assert_eq!(body["status"]["ready"], true, "{body}");
            assert_eq!(body["status"]["preflightCheckSummary"]["preflightCheckName"], "c1");
            assert_eq!(body["status"]["preflightCheckSummary"]["featureStatuses"]["KVM"]["passed"], true);
            assert_eq!(body["status"]["observedGeneration"], 2);
            send.send_response(json_response(200, &runtime));
        });
        let action = reconcile(Arc::new(check), &context, &store).await.unwrap();
        assert_eq!(action, Action::await_change());
        scenario.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_collection_deletes_oldest() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let api = Api::<VMRuntimePreflightCheck>::namespaced(Client::new(service, "default"), SYSTEM_NAMESPACE);
        let checks: Vec<VMRuntimePreflightCheck> = (0..12)
            .map(|index| {
                let mut check =
                    VMRuntimePreflightCheck::new(&format!("check-{index:02}"), VMRuntimePreflightCheckSpec {});
                check.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
                let created: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
                check.metadata.creation_timestamp = Some(Time(created + Duration::from_secs(index)));
                check
            })
            .collect();
        let store = check_store(checks);

        let scenario = tokio::spawn(async move {
            for name in ["check-00", "check-01"] {
                let path = format!("/apis/vm.cluster.gke.io/v1/namespaces/vm-system/vmruntimepreflightchecks/{name}");
                let (_, send) = expect(&mut handle, Method::DELETE, &path).await;
                send.send_response(json_response(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ));
            }
            assert!(
                tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await.is_err(),
                "extra request"
            );
        });
        collect_garbage(&api, &store).await;
        scenario.await.unwrap();
    }
}

//! Events about the cluster-scoped VMRuntime.
//!
//! An `events.k8s.io/v1` Event about a cluster-scoped object has to live in some namespace. API
//! servers up to at least 1.20 accept only `kube-system` there, and newer ones accept `default`
//! as well, so these Events go to `kube-system`. kube's `Recorder` writes them to `default`, which
//! older API servers reject with "does not match event.namespace".

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;

use super::{Context, REPORTING_CONTROLLER};

/// Namespace of the Events about cluster-scoped objects.
pub const NAMESPACE: &str = "kube-system";

/// Builds an Event about the cluster-scoped object `regarding`, reported by this replica.
pub fn build(
    regarding: ObjectReference,
    identity: &str,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> Event {
    let now = Timestamp::now();
    let object_name = regarding.name.clone().unwrap_or_else(|| REPORTING_CONTROLLER.to_owned());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(match type_ {
            EventType::Normal => "Normal".to_owned(),
            EventType::Warning => "Warning".to_owned(),
        }),
        reason: Some(reason.to_owned()),
        action: Some(action.to_owned()),
        note: Some(note),
        regarding: Some(ObjectReference { namespace: None, ..regarding }),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(identity.to_owned()),
        ..Event::default()
    }
}

/// Creates `event` in [`NAMESPACE`].
pub async fn publish(context: &Context, event: &Event) -> kube::Result<()> {
    let api = Api::<Event>::namespaced(context.client.clone(), NAMESPACE);
    api.create(&PostParams::default(), event).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_regards_object_without_namespace() {
        let regarding = ObjectReference {
            api_version: Some("vm.cluster.gke.io/v1".to_owned()),
            kind: Some("VMRuntime".to_owned()),
            name: Some("vmruntime".to_owned()),
            namespace: Some(String::new()),
            uid: Some("uid-1".to_owned()),
            ..ObjectReference::default()
        };
        let event = build(regarding, "replica-1", EventType::Normal, "Disabled", "VMRuntime", "note".to_owned());
        assert_eq!(event.metadata.namespace.as_deref(), Some(NAMESPACE));
        assert!(event.metadata.name.as_deref().unwrap().starts_with("vmruntime."));
        let regarding = event.regarding.unwrap();
        assert_eq!(regarding.namespace, None);
        assert_eq!(regarding.uid.as_deref(), Some("uid-1"));
        assert_eq!(event.reporting_controller.as_deref(), Some(REPORTING_CONTROLLER));
        assert_eq!(event.reporting_instance.as_deref(), Some("replica-1"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert!(event.event_time.is_some());
    }
}

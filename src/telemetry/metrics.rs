//! Prometheus metrics of the webhook, served in the text format on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cluster::{ClusterView, VmKind};

/// Labels of the request counter. Every value is one of a fixed set, so the number of series
/// stays bounded whatever kinds clients send, and counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    /// VMRuntime, VirtualMachine or VirtualMachineInstance; `other` for any other kind.
    pub kind: &'static str,
    pub operation: &'static str,
    /// allowed, patched, denied, malformed, or an HTTP status for a request that is not a review.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// Maps a request kind onto the fixed set of kind labels.
fn kind_label(kind: &str) -> &'static str {
    match kind {
        "" => "",
        "VMRuntime" => "VMRuntime",
        "VirtualMachine" => "VirtualMachine",
        "VirtualMachineInstance" => "VirtualMachineInstance",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric of the webhook.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub cached_objects: Family<KindLabels, Gauge>,
    pub certificate_reloads: Counter,
    pub certificate_reload_failures: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vmruntime_gate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by endpoint, kind, operation and result",
            requests.clone(),
        );
        // Buckets from 50 µs to about 1.6 s.
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register("admission_latency_seconds", "Time to decide an admission request", latency.clone());
        let cached_objects = Family::<KindLabels, Gauge>::default();
        registry.register("cached_objects", "Objects in the cluster view by kind", cached_objects.clone());
        let certificate_reloads = Counter::default();
        registry.register(
            "certificate_reloads",
            "Serving certificates loaded after start-up",
            certificate_reloads.clone(),
        );
        let certificate_reload_failures = Counter::default();
        registry.register(
            "certificate_reload_failures",
            "Changed certificate files that failed to load",
            certificate_reload_failures.clone(),
        );
        Metrics { registry, requests, latency, cached_objects, certificate_reloads, certificate_reload_failures }
    }

    /// Records one admission request.
    pub fn observe(
        &self,
        endpoint: &'static str,
        kind: &str,
        operation: &'static str,
        result: &'static str,
        seconds: f64,
    ) {
        let labels = RequestLabels { endpoint, kind: kind_label(kind), operation, result };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&EndpointLabels { endpoint }).observe(seconds);
    }

    /// Renders the metrics in the Prometheus text format, with the object counts of `view`.
    pub fn render(&self, view: &ClusterView) -> String {
        for kind in VmKind::ALL {
            let count = view.live_vms().filter(|vm| vm.kind == kind).count();
            self.cached_objects.get_or_create(&KindLabels { kind: kind.to_string() }).set(count as i64);
        }
        let checks = KindLabels { kind: "VMRuntimePreflightCheck.vm.cluster.gke.io".to_owned() };
        self.cached_objects.get_or_create(&checks).set(view.check_count() as i64);
        let runtime = KindLabels { kind: "VMRuntime.vm.cluster.gke.io".to_owned() };
        self.cached_objects.get_or_create(&runtime).set(i64::from(view.runtime().is_some()));

        let mut text = String::new();
        // fmt::Write for String never returns an error, so the result carries nothing.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_requests() {
        let metrics = Metrics::new();
        metrics.observe("validate", "VirtualMachine", "CREATE", "denied", 0.001);
        let text = metrics.render(&ClusterView::new());
        assert!(
            text.contains(
                "vmruntime_gate_admission_requests_total{endpoint=\"validate\",kind=\"VirtualMachine\",operation=\"CREATE\",result=\"denied\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("vmruntime_gate_admission_latency_seconds_count{endpoint=\"validate\"} 1"), "{text}");
        assert!(text.contains("vmruntime_gate_cached_objects{kind=\"VMRuntime.vm.cluster.gke.io\"} 0"), "{text}");
    }

    #[test]
    fn unknown_kinds_share_one_label() {
        let metrics = Metrics::new();
        metrics.observe("validate", "Pod", "CREATE", "allowed", 0.001);
        metrics.observe("validate", "Deployment", "CREATE", "allowed", 0.001);
        let text = metrics.render(&ClusterView::new());
        assert!(
            text.contains("admission_requests_total{endpoint=\"validate\",kind=\"other\",operation=\"CREATE\",result=\"allowed\"} 2"),
            "{text}"
        );
    }
}

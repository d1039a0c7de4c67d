//! Plain-HTTP health endpoints: `/healthz` returns 200 while the process runs, `/readyz` once the
//! cluster view is loaded, and `/metrics` in the Prometheus text format.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;

use super::SharedView;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
struct HealthState {
    view: SharedView,
    metrics: Arc<Metrics>,
}

pub fn router(view: SharedView, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState { view, metrics })
}

async fn metrics_text(State(state): State<HealthState>) -> impl IntoResponse {
    let text = {
        let view = state.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.metrics.render(&view)
    };
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, &'static str) {
    let loaded = state.view.read().map(|view| view.is_loaded()).unwrap_or(false);
    if loaded { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "cluster state not loaded yet\n") }
}

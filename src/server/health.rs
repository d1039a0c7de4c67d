//! Plain-HTTP health endpoints: `/healthz` returns 200 while the process runs, `/readyz` once the
//! cluster view is loaded.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::SharedView;

pub fn router(view: SharedView) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(view)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(view): State<SharedView>) -> (StatusCode, &'static str) {
    let loaded = view.read().map(|view| view.is_loaded()).unwrap_or(false);
    if loaded { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "cluster state not loaded yet\n") }
}

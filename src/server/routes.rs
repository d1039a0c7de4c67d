//! HTTP handlers of `POST /mutate` and `POST /validate`.
//!
//! A body that is not an AdmissionReview gets HTTP 400, a body over the limit 413, and a
//! Content-Type other than JSON 415, each with a one-line reason. Every decodable review gets
//! HTTP 200 with an AdmissionReview response, and one log line.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Router, body::Bytes};
use tracing::{info, warn};

use super::SharedView;
use crate::admission::{self, Endpoint, Settings};
use crate::telemetry::metrics::Metrics;

/// State shared by the admission handlers.
#[derive(Clone)]
pub struct AdmissionState {
    pub view: SharedView,
    pub settings: Settings,
    pub max_body_bytes: usize,
    pub metrics: std::sync::Arc<Metrics>,
}

pub fn router(state: AdmissionState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn mutate(
    state: State<AdmissionState>,
    content_type: ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(Endpoint::Mutate, state, content_type, body)
}

async fn validate(
    state: State<AdmissionState>,
    content_type: ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(Endpoint::Validate, state, content_type, body)
}

/// The Content-Type header of a request, read without copying the other headers.
struct ContentType(Option<HeaderValue>);

impl ContentType {
    fn is_json(&self) -> bool {
        let Some(value) = self.0.as_ref().and_then(|value| value.to_str().ok()) else {
            return false;
        };
        let media_type = value.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case("application/json")
    }

    fn describe(&self) -> Cow<'_, str> {
        match &self.0 {
            Some(value) => String::from_utf8_lossy(value.as_bytes()),
            None => Cow::Borrowed("none"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ContentType {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ContentType(parts.headers.get(header::CONTENT_TYPE).cloned()))
    }
}

fn handle(
    endpoint: Endpoint,
    State(state): State<AdmissionState>,
    content_type: ContentType,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let endpoint_name = endpoint.as_str();

    if !content_type.is_json() {
        let content_type = content_type.describe();
        let reason = format!("unsupported Content-Type {content_type:?}; send the AdmissionReview as application/json");
        warn!(endpoint = endpoint_name, %reason, "Rejected request");
        state.metrics.observe(endpoint_name, "", "", "415", started.elapsed().as_secs_f64());
        return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let reason = format!(
                "request body is larger than {} bytes; raise --max-body-bytes if such reviews are expected",
                state.max_body_bytes
            );
            warn!(endpoint = endpoint_name, %reason, "Rejected request");
            state.metrics.observe(endpoint_name, "", "", "413", started.elapsed().as_secs_f64());
            return plain(StatusCode::PAYLOAD_TOO_LARGE, reason);
        }
        Err(rejection) => {
            let reason = format!("cannot read request body: {}", rejection.body_text());
            warn!(endpoint = endpoint_name, %reason, "Rejected request");
            return plain(rejection.status(), reason);
        }
    };

    let outcome = {
        // A poisoned lock still holds a consistent view: writers replace whole entries.
        let view = state.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        admission::review(endpoint, &body, &view, state.settings)
    };
    match outcome {
        Ok(outcome) => {
            let elapsed = started.elapsed();
            state.metrics.observe(
                endpoint_name,
                &outcome.kind,
                outcome.operation,
                outcome.result,
                elapsed.as_secs_f64(),
            );
            info!(
                endpoint = endpoint_name,
                uid = %outcome.uid,
                kind = %outcome.kind,
                namespace = %outcome.namespace,
                name = %outcome.name,
                operation = outcome.operation,
                dry_run = outcome.dry_run,
                allowed = outcome.allowed,
                result = outcome.result,
                reason = %outcome.message(),
                latency_us = elapsed.as_micros() as u64,
                "Admission decision"
            );
            ([(header::CONTENT_TYPE, "application/json")], outcome.to_json()).into_response()
        }
        Err(error) => {
            warn!(endpoint = endpoint_name, %error, "Rejected request");
            state.metrics.observe(endpoint_name, "", "", "400", started.elapsed().as_secs_f64());
            plain(StatusCode::BAD_REQUEST, error.to_string())
        }
    }
}

fn plain(status: StatusCode, reason: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{reason}\n")).into_response()
}

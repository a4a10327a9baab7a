//! The public demo: the page at `/demo` with its assets (compiled in), and the endpoint that
//! starts a demo session without a key, limited per client address and capped in open sessions.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use super::auth::too_many_requests;
use super::error::Problem;
use super::rate::RateLimiters;
use crate::demo;
use crate::service::demo::DemoLimits;
use crate::service::dto::SessionCreated;
use crate::service::{Service, ServiceError};

/// What the demo endpoint needs beside the service.
#[derive(Clone)]
pub struct DemoGate {
    pub limits: DemoLimits,
    pub limiters: Arc<RateLimiters>,
}

/// The demo's routes: the page, its assets and the session start.
pub fn routes(gate: DemoGate) -> Router<Service> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/demo.js", get(script))
        .route("/demo/demo.css", get(stylesheet))
        .route("/v1/demo/sessions", post(start_session))
        .layer(Extension(gate))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", demo::PAGE_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", demo::PAGE_JS)
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", demo::PAGE_CSS)
}

/// Starts a demo session for a new anonymous user: no key needed; the response's `token` drives
/// the session. Limited per client address (429 with `Retry-After`) and capped in open sessions
/// (503 with `Retry-After`).
#[utoipa::path(post, path = "/v1/demo/sessions", tag = "demo",
    responses((status = 201, body = SessionCreated), (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn start_session(
    State(service): State<Service>,
    Extension(gate): Extension<DemoGate>,
    request: Request,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(wait) = gate.limiters.check_demo_start(client) {
        metrics::counter!("elicit_rate_limited_total", "role" => "demo").increment(1);
        return too_many_requests(wait);
    }
    match service.start_demo_session(&gate.limits).await {
        Ok(created) => (StatusCode::CREATED, axum::Json(created)).into_response(),
        Err(e @ ServiceError::AtCapacity(_)) => {
            let mut response = Problem::from(e).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

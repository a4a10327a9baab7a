//! Probes and the answers of last resort (no route, a panic).

use std::any::Any;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::http::error::Problem;
use crate::service::Service;

/// Ready when not draining and the database answers within a second.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "ready"), (status = 503, body = Problem)))]
pub async fn readyz(State(service): State<Service>) -> Response {
    if service.is_draining() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "Draining",
            "the server is shutting down",
        )
        .into_response();
    }
    match tokio::time::timeout(std::time::Duration::from_secs(1), service.store().ping()).await {
        Ok(Ok(())) => "ready".into_response(),
        _ => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Not ready",
            "the database is unreachable",
        )
        .into_response(),
    }
}

pub async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such route",
    )
}

pub fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    Problem::internal().into_response()
}

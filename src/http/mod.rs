//! The HTTP API: routes, thin handlers translating between the wire and [`crate::service`], and
//! the middleware stack.

pub mod error;
mod extract;
mod handlers;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::service::Service;

/// Body-size limits per route class.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Default for every route.
    pub body_bytes: usize,
    /// Bulk item uploads (10⁵ items in one call).
    pub items_body_bytes: usize,
    /// Scoring (up to 10⁴ candidates).
    pub score_body_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            items_body_bytes: 256 << 20,
            score_body_bytes: 32 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The application router.
pub fn router(service: Service, limits: Limits) -> Router {
    let items = Router::new()
        .route(
            "/v1/models/{model}/items",
            put(handlers::upsert_items).get(handlers::list_items),
        )
        .layer(DefaultBodyLimit::max(limits.items_body_bytes));
    let score = Router::new()
        .route("/v1/score", post(handlers::score))
        .layer(DefaultBodyLimit::max(limits.score_body_bytes));
    let api = Router::new()
        .route(
            "/v1/models",
            post(handlers::create_model).get(handlers::list_models),
        )
        .route("/v1/models/{model}", get(handlers::get_model))
        .route(
            "/v1/models/{model}/items/{item}",
            delete(handlers::delete_item),
        )
        .route("/v1/sessions", post(handlers::create_session))
        .route("/v1/sessions/{id}", get(handlers::get_session))
        .route("/v1/sessions/{id}/question", get(handlers::get_question))
        .route("/v1/sessions/{id}/answers", post(handlers::post_answer))
        .route("/v1/sessions/{id}/finish", post(handlers::finish_session))
        .route("/v1/users/{user_id}/profile", get(handlers::get_profile))
        .route("/v1/users/{user_id}", delete(handlers::delete_user))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .merge(items)
        .merge(score)
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(handlers::readyz))
        .fallback(handlers::not_found)
        .with_state(service);
    api.layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CatchPanicLayer::custom(handlers::panic_response))
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limits.request_timeout)),
    )
}

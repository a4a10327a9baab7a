//! The HTTP API: routes, thin handlers translating between the wire and [`crate::service`], and
//! the middleware stack.

mod auth;
pub mod connections;
mod demo;
pub mod error;
mod extract;
pub mod metrics;
pub mod openapi;
pub mod rate;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::routing::get;
use axum::{Router, middleware};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use self::auth::Access;
use self::error::Problem;
use self::routes::{audit, keys, models, ops, scoring, sessions, users};
use crate::service::Service;

/// Size, time and concurrency limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Default body limit for every route.
    pub body_bytes: usize,
    /// Bulk item uploads (10⁵ items in one call).
    pub items_body_bytes: usize,
    /// Scoring (up to 10⁴ candidates).
    pub score_body_bytes: usize,
    pub request_timeout: Duration,
    /// Requests in flight at once; more are refused at once with 503 and `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Rate limits of callers without their own (429 with `Retry-After` beyond them).
    pub rates: rate::RateDefaults,
    /// Browser origins allowed to call the API (CORS); none by default.
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// The public demo (`/demo`, `POST /v1/demo/sessions`); none: not served.
    pub demo: Option<crate::service::demo::DemoLimits>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            items_body_bytes: 256 << 20,
            score_body_bytes: 32 << 20,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            rates: rate::RateDefaults::default(),
            demo: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Routes of one access class, guarded by [`auth::require`].
fn guarded(
    service: &Service,
    limiters: &Arc<rate::RateLimiters>,
    access: Access,
    routes: Router<Service>,
) -> Router<Service> {
    let (service, limiters) = (service.clone(), limiters.clone());
    routes.route_layer(middleware::from_fn(move |request, next| {
        auth::require(service.clone(), limiters.clone(), access, request, next)
    }))
}

/// The application router.
pub fn router(service: Service, limits: Limits) -> Router {
    let admin = models::routes(limits.items_body_bytes)
        .merge(keys::routes())
        .merge(audit::routes())
        .merge(users::admin_routes());
    let frontend = sessions::frontend_routes();
    let session = sessions::session_routes();
    let scorer = users::scorer_routes().merge(scoring::routes(limits.score_body_bytes));
    let limiters = Arc::new(rate::RateLimiters::new(limits.rates));
    let public = match limits.demo {
        Some(demo_limits) => demo::routes(demo::DemoGate {
            limits: demo_limits,
            limiters: limiters.clone(),
        }),
        None => Router::new(),
    };
    let api = Router::new()
        .merge(public)
        .merge(guarded(&service, &limiters, Access::Admin, admin))
        .merge(guarded(&service, &limiters, Access::Frontend, frontend))
        .merge(guarded(&service, &limiters, Access::Session, session))
        .merge(guarded(&service, &limiters, Access::Scorer, scorer))
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(ops::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ::metrics::counter!("elicit_overload_rejections_total").increment(1);
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "Overloaded",
                        "too many requests in flight; retry shortly",
                    )
                }))
                .load_shed()
                .concurrency_limit(limits.max_concurrent_requests),
        );
    // Probes and metrics stay outside the concurrency limit, so they answer under overload.
    let ops = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::openapi))
        .route_layer(middleware::from_fn(metrics::track));

    let router = Router::new()
        .merge(api)
        .merge(ops)
        .merge(openapi::swagger_ui())
        .with_state(service);
    // Outermost after the common layers, so that a preflight is answered before authentication.
    let router = if limits.cors_allowed_origins.is_empty() {
        router
    } else {
        router.layer(cors(limits.cors_allowed_origins))
    };
    router
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &axum::http::Request<_>| {
                            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                        })
                        // 5xx causes are logged once, where they are turned into problems.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                // No referrer leaves, no type is sniffed, nothing is framed. The API sends no CORS
                // headers, so browsers on other origins cannot read it.
                .layer(always(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                .layer(always(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .layer(always(header::REFERRER_POLICY, "no-referrer"))
                .layer(always(header::X_FRAME_OPTIONS, "DENY"))
                .layer(CatchPanicLayer::custom(ops::panic_response))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, limits.request_timeout)),
        )
}

/// The Content-Security-Policy of every response, pages and API alike. The only pages (`/docs`)
/// load their scripts from files served here, so no inline script is allowed; Swagger UI sets
/// inline styles and data: images. No page may be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// CORS for the configured browser origins only: the API's methods, the headers a frontend sends
/// (`Authorization`, `Content-Type`, `Idempotency-Key`, `If-Match`) and those it reads back.
fn cors(origins: Vec<HeaderValue>) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([
            header::ETAG,
            header::RETRY_AFTER,
            header::HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Sets `name: value` on every response.
fn always(name: header::HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
}
